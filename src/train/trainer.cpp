#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <memory>
#include <vector>

#include <sys/resource.h>

#include "backend/backend.h"
#include "train/devices.h"
#include "comm/watchdog.h"
#include "core/error.h"
#include "core/log.h"
#include "data/sampler.h"
#include "data/tokenizer.h"
#include "model/llama.h"
#include "model/lora.h"
#include "model/tp_shard.h"
#include "io/files.h"
#include "checkpoint/model_identity.h"
#include "export/peft.h"
#include "train/checkpoint.h"
#include "train/data_prepare.h"
#include "train/flops.h"
#include "train/metrics.h"
#include "train/plan.h"
#include "train/preemption.h"
#include "train/schedule.h"

namespace anvil::train {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Rows of a SequenceSet gathered into one contiguous micro-batch, (B, T) each.
struct BatchBuffers {
  std::vector<std::int32_t> ids, targets, positions, segments;
  BatchBuffers(std::int64_t rows, std::int64_t seq) {
    const auto n = static_cast<std::size_t>(rows * seq);
    ids.resize(n);
    targets.resize(n);
    positions.resize(n);
    segments.resize(n);
  }
  model::TokenBatch gather(const data::SequenceSet& set, const std::int64_t* rows, std::int64_t count,
                           std::int64_t row_offset) {
    const std::int64_t T = set.seq_len;
    for (std::int64_t i = 0; i < count; ++i)
      set.expand_row(rows[i], ids.data() + i * T, targets.data() + i * T, positions.data() + i * T,
                     segments.data() + i * T);
    model::TokenBatch b;
    b.batch = count;
    b.seq = T;
    b.ids = ids.data();
    b.targets = targets.data();
    b.positions = positions.data();
    b.segments = segments.data();
    b.row_offset = row_offset;
    return b;
  }
};

// Mean token loss over the whole set (no dropout), and the token count. Micro-batch i goes
// to data-parallel replica i mod dp; the sums meet in one all-reduce.
std::pair<double, std::int64_t> evaluate(model::LlamaModel& model, const data::SequenceSet& set,
                                         std::int64_t micro_batch, BatchBuffers& buf,
                                         const comm::ProcessGrid& grid) {
  double sums[2] = {0.0, 0.0};  // loss, tokens
  std::vector<std::int64_t> rows;
  for (std::int64_t start = 0, i = 0; start < set.count; start += micro_batch, ++i) {
    if (i % grid.dp_size() != grid.dp_rank()) continue;
    const std::int64_t count = std::min(micro_batch, set.count - start);
    rows.clear();
    for (std::int64_t k = 0; k < count; ++k) {
      rows.push_back(start + k);
      sums[1] += static_cast<double>(set.trained_tokens(start + k));
    }
    sums[0] += model.eval_loss(buf.gather(set, rows.data(), count, 0));
  }
  grid.dp().allreduce_sum(sums, 2);
  const auto tokens = static_cast<std::int64_t>(sums[1]);
  return {tokens > 0 ? sums[0] / sums[1] : 0.0, tokens};
}

// ANVIL_FAULT_INJECT=RANK:STEP[:save] makes world rank RANK fail on purpose, for the tests
// that a failing rank ends the whole job and that a crash never costs the last complete
// checkpoint: without ":save" it throws in the middle of step STEP (after its first
// micro-batch, while the other ranks go on into the step's collectives); with ":save" it
// kills itself (SIGKILL) in the middle of writing step STEP's checkpoint.
struct Fault {
  std::int64_t step = 0;  // 0: none
  bool during_save = false;
};

Fault fault_from_env(int world_rank) {
  const char* v = std::getenv("ANVIL_FAULT_INJECT");
  if (!v || !*v) return {};
  int rank = -1;
  long long step = -1;
  char where[8] = {0};
  const int n = std::sscanf(v, "%d:%lld:%7s", &rank, &step, where);
  ANVIL_CHECK_INPUT((n == 2 || (n == 3 && std::string(where) == "save")) && step > 0,
                    "ANVIL_FAULT_INJECT: expected RANK:STEP or RANK:STEP:save, got '", v, "'");
  if (rank != world_rank) return {};
  return {step, n == 3};
}

// The adapter parameters (the model's) and the AdamW moments in backend memory, and host
// copies of all three for checkpoints: on the CPU backend the host copies are the buffers
// themselves; on a device they are mirrors, synced by upload()/download() around a load or
// a save (never inside a step).
class AdapterState {
 public:
  AdapterState(backend::Backend& be, float* params, std::int64_t n)
      : be_(be), params_(params), n_(n), bytes_(sizeof(float) * static_cast<std::size_t>(n)) {
    adam_m_ = static_cast<float*>(be_.memory_alloc(bytes_ * 2));  // zeroed: m then v
    if (be_.on_device()) host_.resize(static_cast<std::size_t>(3 * n));
  }
  ~AdapterState() { be_.memory_free(adam_m_); }
  AdapterState(const AdapterState&) = delete;
  AdapterState& operator=(const AdapterState&) = delete;

  float* adam_m() { return adam_m_; }
  float* adam_v() { return adam_m_ + n_; }
  // Where checkpoints read and write the three buffers.
  AdapterBuffers host() {
    if (!be_.on_device()) return {params_, adam_m(), adam_v()};
    return {host_.data(), host_.data() + n_, host_.data() + 2 * n_};
  }
  void upload() {
    if (!be_.on_device()) return;
    const AdapterBuffers h = host();
    be_.copy_from_host(params_, h.params, bytes_);
    be_.copy_from_host(adam_m(), h.adam_m, 2 * bytes_);
  }
  void download() {
    if (!be_.on_device()) return;
    const AdapterBuffers h = host();
    be_.copy_to_host(h.params, params_, bytes_);
    be_.copy_to_host(h.adam_m, adam_m(), 2 * bytes_);
  }

 private:
  backend::Backend& be_;
  float* params_;
  std::int64_t n_;
  std::size_t bytes_;
  float* adam_m_ = nullptr;  // (2n): m, then v
  std::vector<float> host_;  // (3n) mirrors on a device: params, m, v
};

// The whole adapter in the full layout on world rank 0: the TP ranks' slices gathered and
// put back in place (every rank calls it; only rank 0's result is filled).
std::vector<float> gather_adapter(const model::LlamaModel& model, const model::LoraLayout& full,
                                  const comm::ProcessGrid& grid) {
  const model::LoraLayout& local = model.lora_layout();
  const std::int64_t n = local.size();
  std::vector<float> mine(static_cast<std::size_t>(n));
  model.backend().copy_to_host(mine.data(), model.lora_params(), sizeof(float) * mine.size());
  std::vector<float> gathered(static_cast<std::size_t>(n * grid.tp_size()));
  grid.tp().allgather(mine.data(), gathered.data(), n, DType::dtype_f32);
  std::vector<float> out;
  if (grid.world_rank() != 0) return out;
  out.resize(static_cast<std::size_t>(full.size()));
  for (int t = 0; t < grid.tp_size(); ++t) {
    const model::TpShard shard = model::tp_shard(model.spec(), t, grid.tp_size());
    model::lora_shard_insert(model.spec(), shard, full, local, gathered.data() + t * n, out.data());
  }
  return out;
}

// This process's peak resident set so far (getrusage: the kernel's high-water mark).
double peak_rss_mib() {
  struct rusage u {};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // Linux: KiB
}

// train.loss_spike_factor: a step's loss above factor x the mean of the last `window`
// losses is a spike (once the window holds at least half of them). Every rank sees the
// same reduced loss, so all agree. A skipped spike stays out of the window; more than
// window / 2 spikes in a row are a new level, not spikes: the window restarts there.
class LossSpikes {
 public:
  LossSpikes(double factor, std::int64_t window) : factor_(factor), window_(static_cast<std::size_t>(window)) {}

  bool check(double loss, std::int64_t step, bool log) {
    if (factor_ <= 0) return false;
    bool spike = false;
    if (losses_.size() >= std::max<std::size_t>(2, window_ / 2)) {
      const double mean = sum_ / static_cast<double>(losses_.size());
      spike = loss > factor_ * mean;
      if (spike && ++in_a_row_ > std::max<std::size_t>(1, window_ / 2)) {
        // Not a spike but a new level (harder data, a changed schedule): skipping on would
        // stop training for good. The window starts again from here.
        if (log)
          log_warn("step ", step, ": the loss has stayed above train.loss_spike_factor x its running mean for ",
                   in_a_row_, " steps; taking ", loss, " as its new level");
        losses_.clear();
        sum_ = 0;
        spike = false;
      } else if (spike && log) {
        log_warn("step ", step, ": loss spike: ", loss, " is above train.loss_spike_factor ", factor_, " x ", mean,
                 " (the mean of the last ", losses_.size(), " steps)");
      }
    }
    if (!spike) in_a_row_ = 0;
    if (!spike || !skip_) push(loss);
    return spike;
  }
  void set_skip(bool skip) { skip_ = skip; }

 private:
  void push(double loss) {
    losses_.push_back(loss);
    sum_ += loss;
    if (losses_.size() > window_) {
      sum_ -= losses_.front();
      losses_.pop_front();
    }
  }
  double factor_;
  std::size_t window_;
  bool skip_ = false;
  std::deque<double> losses_;
  double sum_ = 0;
  std::size_t in_a_row_ = 0;  // consecutive flagged steps
};


}  // namespace

TrainResult train_run(const TrainConfig& cfg, const comm::ProcessGrid& grid, const TrainOptions& options) {
  const auto t_setup = Clock::now();
  const std::string& out_dir = cfg.output_dir;
  const bool writer = grid.world_rank() == 0;
  if (writer) std::filesystem::create_directories(out_dir);

  // Model, tokenizer and data.
  const model::ModelSpec spec = model::model_spec_from_dir(cfg.model.path);
  model::model_spec_check_supported(spec, cfg.model.path + "/config.json");
  const int tp = grid.tp_size();
  // config_load has checked that parallel.tp splits this model (model::tp_shard_problems).
  ANVIL_CHECK(tp == cfg.parallel.tp, "parallel.tp is ", cfg.parallel.tp, " but the job's grid has tp ", tp);
  const data::Tokenizer tokenizer = data::Tokenizer::load(cfg.model.path);
  ANVIL_CHECK_INPUT(static_cast<std::int64_t>(tokenizer.vocab_size()) <= spec.vocab_size, cfg.model.path,
                    ": the tokenizer has ", tokenizer.vocab_size(), " tokens but the model only ",
                    spec.vocab_size, " embeddings");
  const PreparedData data = data_prepare(cfg, tokenizer, grid.world());
  const data::SequenceSet& train_set = data.cache.train;
  const std::optional<data::SequenceSet>& eval_set = data.cache.eval;

  const DType storage = cfg.model.dtype == WeightDtype::weight_bf16 ? DType::dtype_bf16 : DType::dtype_f32;
  RankDevices devices = rank_devices_create(cfg, grid, options.local_rank, options.local_size);
  backend::Backend* const backend = devices.backend.get();
  log_info("backend: ", devices.description);
  ANVIL_CHECK_INPUT(!backend->on_device() || spec.head_dim == 64 || spec.head_dim == 128, cfg.model.path,
                    "/config.json: head_dim is ", spec.head_dim,
                    "; the CUDA backend's attention kernels take head_dim 64 or 128 (use parallel.backend: cpu)");
  // This rank's slice of the model; ranks sharing replicated KV heads get their own group.
  model::TpGroup tp_group;
  tp_group.shard = model::tp_shard(spec, grid.tp_rank(), tp);
  tp_group.comm = devices.tp;
  std::unique_ptr<comm::Comm> kv_comm;
  if (tp_group.shard.kv_replicas > 1) {
    kv_comm = devices.tp->split(static_cast<int>(tp_group.shard.kv_head_first), grid.tp_rank(), "tp-kv");
    tp_group.kv_comm = kv_comm.get();
  }
  const model::LoraLayout full_layout(spec, lora_spec_from_config(cfg));
  const model::LoraLayout layout(model::tp_local_spec(spec, tp_group.shard), lora_spec_from_config(cfg));
  model::ModelLimits limits;
  limits.micro_batch = cfg.train.micro_batch;
  limits.seq_len = cfg.data.seq_len;
  limits.activation_checkpointing = cfg.train.activation_checkpointing;
  const auto seed = static_cast<std::uint64_t>(cfg.train.seed);
  model::LlamaModel model(spec, model::base_weights_load(spec, cfg.model.path, storage, tp_group.shard),
                          layout, limits, *backend, seed, tp_group);
  // The adapter and its AdamW state in backend memory, with host copies for checkpoints.
  AdapterState adapter(*backend, model.lora_params(), layout.size());
  {
    // The same initial adapter on any grid: drawn in the full layout, then sliced.
    std::vector<float> full(static_cast<std::size_t>(full_layout.size()));
    model::lora_init(full_layout, seed, full.data());
    model::lora_shard_extract(spec, tp_group.shard, full_layout, layout, full.data(), adapter.host().params);
    adapter.upload();
  }
  log_info("model: ", model::model_parameter_count(spec), " frozen parameters (", dtype_name(storage),
           "), ", full_layout.size(), " LoRA parameters", tp > 1 ? str_cat(" (", layout.size(), " on each TP rank)") : "",
           ", arena ", model.arena_bytes() >> 20, " MiB per rank");

  // The step plan.
  const std::int64_t global_batch = cfg.train.global_batch;
  const std::int64_t micro = cfg.train.micro_batch;
  const std::int64_t total_steps =
      cfg.train.steps > 0 ? cfg.train.steps
                          : (cfg.train.epochs * train_set.count + global_batch - 1) / global_batch;
  ScheduleParams sched{cfg.train.lr_schedule, cfg.train.lr, cfg.train.warmup_steps, total_steps,
                       cfg.train.min_lr_ratio};
  data::Sampler sampler(train_set.count, seed, cfg.data.shuffle);
  // Checkpoints: what every save and the resume need, and where to resume from.
  CheckpointContext ckpt;
  ckpt.cfg = &cfg;
  ckpt.config_yaml = config_to_yaml(cfg);
  ckpt.model_config_json = io::read_text_file(cfg.model.path + "/config.json");
  ckpt.base_path = std::filesystem::absolute(cfg.model.path).lexically_normal().string();
  ckpt.base_hash = checkpoint::model_identity_hash(cfg.model.path);
  ckpt.data_key = data.key;
  ckpt.spec = &spec;
  ckpt.full = &full_layout;
  ckpt.local = &layout;
  ckpt.shard = tp_group.shard;
  ckpt.grid = &grid;
  const AdapterBuffers buffers = adapter.host();
  TrainState state;
  TrainResult result;
  result.resumed_from = checkpoint_find_resume(cfg, grid);
  if (result.resumed_from) {
    state = checkpoint_load(ckpt, *result.resumed_from, buffers);
    adapter.upload();
    sampler.restore(state.sampler);
    result.skipped_steps = state.skipped_steps;
    log_info("resumed from ", *result.resumed_from, " after step ", state.step, " (", state.tokens_seen,
             " tokens seen)");
    if (state.step >= total_steps)
      log_info("the run is complete (", state.step, " of ", total_steps, " steps); writing its adapter again");
  }
  if (cfg.checkpoint.keep == 1 && writer)
    log_warn("checkpoint.keep: 1 leaves a single checkpoint: a crash while the next one is written still "
             "leaves it, but a damaged file has no fallback");
  ANVIL_CHECK_INPUT(options.stop_after <= 0 || options.stop_after > state.step, "--stop-after ",
                    options.stop_after, ": the run is already past that step (", state.step, ")");
  auto save = [&](std::int64_t step) {
    state.step = step;
    state.skipped_steps = result.skipped_steps;
    state.sampler = sampler.state();
    adapter.download();
    result.last_checkpoint = checkpoint_save(ckpt, state, buffers);
    if (writer) checkpoint_prune(cfg, result.resumed_from.value_or(""));
    log_info("checkpoint ", result.last_checkpoint);
  };

  std::optional<MetricsWriter> metrics;
  std::optional<ProgressLine> progress;
  if (writer) {
    metrics.emplace(out_dir + "/metrics.jsonl", result.resumed_from ? state.step : -1);
    progress.emplace(total_steps, cfg.log.every);
  }
  // This replica's rows of each global batch: a contiguous block, in micro-batches.
  const std::int64_t dp = grid.dp_size();
  const std::int64_t per_replica = global_batch / dp;
  ANVIL_CHECK(per_replica * dp == global_batch && per_replica % micro == 0,
              "global batch ", global_batch, " does not split into micro-batches of ", micro, " over dp ", dp);
  const std::int64_t first_row = grid.dp_rank() * per_replica;
  const Fault fault = fault_from_env(grid.world_rank());
  if (fault.during_save) ckpt.kill_during_save = fault.step;
  BatchBuffers buf(micro, cfg.data.seq_len);
  std::vector<std::int64_t> rows;
  LossSpikes spikes(cfg.train.loss_spike_factor, cfg.train.loss_spike_window);
  spikes.set_skip(cfg.train.skip_loss_spikes);
  // MFU: the step's model FLOPs (train/flops.h) over the peak of every rank's device.
  const double flops_per_step =
      train_flops_per_token(spec, full_layout.spec(), cfg.data.seq_len, cfg.train.activation_checkpointing).total() *
      static_cast<double>(global_batch * cfg.data.seq_len);
  const double peak_flops = cfg.log.peak_tflops * 1e12 * grid.world_size();
  log_info("setup took ", format_duration(seconds_since(t_setup)), "; training ", total_steps,
           " steps of ", global_batch, " sequences");

  // Armed after the set-up (data preparation may keep ranks waiting a long time), disarmed
  // however train_run ends.
  struct WatchdogGuard {
    explicit WatchdogGuard(int timeout_s) { comm::collective_watchdog(timeout_s); }
    ~WatchdogGuard() { comm::collective_watchdog(0); }
  } watchdog(cfg.parallel.collective_timeout_s);

  const auto t0 = Clock::now();
  auto run_eval = [&](std::int64_t step) {
    if (!eval_set) return;
    auto [loss, tokens] = evaluate(model, *eval_set, micro, buf, grid);
    if (writer) {
      metrics->write_eval(step, loss, tokens, seconds_since(t0));
      progress->note(str_cat("eval step ", step, ": eval loss ", loss));
    }
    if (!result.first_eval_loss) result.first_eval_loss = loss;
    result.last_eval_loss = loss;
  };
  if (cfg.train.eval_every > 0 && !result.resumed_from) run_eval(0);

  const std::int64_t last_step = options.stop_after > 0 ? std::min(options.stop_after, total_steps) : total_steps;
  for (std::int64_t step = state.step + 1; step <= last_step; ++step) {
    const auto t_step = Clock::now();
    const double comm_at_start = comm::comm_busy_seconds();
    sampler.next(global_batch, rows);
    std::int64_t tokens = 0;
    for (std::int64_t r : rows) tokens += train_set.trained_tokens(r);
    double data_s = seconds_since(t_step);
    // The loss is one mean over every trained token of the step, not a mean of per-batch means.
    // Every rank draws the same global batch, so each knows its token count without asking.
    const float grad_scale = tokens > 0 ? 1.0f / static_cast<float>(tokens) : 0.0f;
    model.zero_grads();
    double loss_sum = 0;
    for (std::int64_t start = first_row; start < first_row + per_replica; start += micro) {
      const auto t_data = Clock::now();
      const model::TokenBatch batch = buf.gather(train_set, rows.data() + start, micro, start);
      data_s += seconds_since(t_data);
      loss_sum += model.train_micro_batch(batch, grad_scale, static_cast<std::uint64_t>(step));
      if (!fault.during_save && fault.step == step) throw_user_error("ANVIL_FAULT_INJECT: failing in step ", step, " on purpose");
    }
    // The gradient of the global step: TP partial sums first, then one flat all-reduce
    // over the data-parallel replicas (each holds the same slice of the adapter).
    model.reduce_tp_grads();
    devices.dp->allreduce_sum(model.lora_grads(), layout.size());
    grid.dp().allreduce_sum(&loss_sum, 1);
    StepMetrics m;
    m.step = step;
    m.tokens = tokens;
    m.loss = tokens > 0 ? loss_sum / static_cast<double>(tokens) : 0.0;
    m.lr = schedule_lr(sched, step);
    m.grad_norm = std::sqrt(model.grad_sum_squares());
    if (!std::isfinite(m.loss) || !std::isfinite(m.grad_norm)) {
      ANVIL_CHECK_INPUT(cfg.train.skip_nonfinite, "step ", step, ": the ",
                        std::isfinite(m.loss) ? "gradient norm" : "loss", " is not finite (loss ",
                        m.loss, ", grad norm ", m.grad_norm,
                        "); lower train.lr or set train.skip_nonfinite: true to skip such steps");
      m.skipped = true;
      ++result.skipped_steps;
    } else if (m.spike = spikes.check(m.loss, step, writer); m.spike && cfg.train.skip_loss_spikes) {
      m.skipped = true;
      ++result.skipped_steps;
    } else {
      // Clip as torch.nn.utils.clip_grad_norm_ does.
      if (cfg.train.grad_clip > 0) {
        const double coef = cfg.train.grad_clip / (m.grad_norm + 1e-6);
        if (coef < 1.0) backend->scale(model.lora_grads(), static_cast<float>(coef), layout.size());
      }
      backend::AdamwArgs a;
      a.lr = static_cast<float>(m.lr);
      a.beta1 = static_cast<float>(cfg.train.adam_beta1);
      a.beta2 = static_cast<float>(cfg.train.adam_beta2);
      a.eps = static_cast<float>(cfg.train.adam_eps);
      a.weight_decay = static_cast<float>(cfg.train.weight_decay);
      a.step = step - result.skipped_steps;
      backend->adamw_update(model.lora_params(), model.lora_grads(), adapter.adam_m(), adapter.adam_v(),
                            layout.size(), a);
    }
    m.skipped_total = result.skipped_steps;
    const double step_s = seconds_since(t_step);
    m.elapsed_s = seconds_since(t0);
    m.tokens_per_s = static_cast<double>(global_batch * cfg.data.seq_len) / step_s;
    if (peak_flops > 0) m.mfu = flops_per_step / step_s / peak_flops;
    {
      // The worst rank's memory and time shares: one small all-reduce, after the step's
      // collectives were timed.
      double worst[3] = {peak_rss_mib(), (comm::comm_busy_seconds() - comm_at_start) / step_s, data_s / step_s};
      grid.world().allreduce(worst, 3, DType::dtype_f64, comm::ReduceOp::reduce_max);
      m.peak_rss_mib = worst[0];
      m.comm_share = worst[1];
      m.data_share = worst[2];
    }
    if (writer) {
      metrics->write_step(m);
      progress->update(m);
    }
    result.last_loss = m.loss;
    result.steps = step;
    state.tokens_seen += tokens;
    if (cfg.train.eval_every > 0 && (step % cfg.train.eval_every == 0 || step == total_steps))
      run_eval(step);
    const bool periodic = cfg.checkpoint.every > 0 && (step % cfg.checkpoint.every == 0 || step == total_steps);
    // A SIGUSR1/SIGTERM on any rank stops every rank here, after a checkpoint of this step
    // (train/preemption.h); at the last step the run simply completes.
    result.preempted = step < last_step && preemption_agreed(grid.world());
    if (periodic || step == options.stop_after || result.preempted) save(step);
    if (result.preempted) break;
  }
  if (writer) progress->finish();

  if (result.preempted) {
    preemption_note_stopped();
    log_info("preempted after step ", result.steps, " of ", total_steps, "; ", result.last_checkpoint,
             " continues it (exit ", exit_preempted, ")");
    return result;
  }
  if (last_step < total_steps) {
    log_info("stopped after step ", last_step, " of ", total_steps, " (--stop-after); ", result.last_checkpoint,
             " continues it");
    return result;
  }
  result.adapter_dir = out_dir + "/adapter";
  const std::vector<float> whole = gather_adapter(model, full_layout, grid);
  if (writer)
    exporting::peft_save(result.adapter_dir, full_layout, whole.data(),
                         std::filesystem::absolute(cfg.model.path).string());
  {
    const double mine = peak_rss_mib();
    std::vector<double> peaks(static_cast<std::size_t>(grid.world_size()));
    grid.world().allgather(&mine, peaks.data(), 1, DType::dtype_f64);
    if (writer) metrics->write_end(result.steps, peaks);
  }
  grid.world().barrier();  // the adapter is complete when any rank returns
  log_info("trained ", result.steps, " steps in ", format_duration(seconds_since(t0)),
           "; adapter written to ", result.adapter_dir);
  return result;
}

}  // namespace anvil::train
