#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cmath>
#include <filesystem>

#include "comm/watchdog.h"
#include "core/error.h"
#include "core/log.h"
#include "data/tokenizer.h"
#include "io/files.h"
#include "checkpoint/model_identity.h"
#include "export/peft.h"
#include "model/llama_weights.h"
#include "model/moe_dispatch.h"
#include "model/tp_shard.h"
#include "train/flops.h"
#include "train/metrics_reduce.h"
#include "train/plan.h"
#include "train/preemption.h"

namespace anvil::train {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

std::unique_ptr<runtime::Runtime> runtime_from_config(const TrainConfig& cfg,
                                                      std::unique_ptr<comm::MpiSession> session) {
  runtime::RuntimeSpec spec;
  spec.tp = cfg.parallel.tp;  // validated by config_load against the world and the model
  spec.ep = cfg.parallel.ep;
  spec.backend = cfg.parallel.backend;
  spec.comm = cfg.parallel.comm;
  // The Runtime's set-up is collective (the grid's splits, every rank's device view, NCCL's
  // init): a node that stalls there (a wrong network interface, a hung driver) must end
  // the job, not hold every GPU until the time limit.
  const comm::WatchdogArmed watchdog(cfg.parallel.setup_timeout_s, "parallel.setup_timeout_s");
  if (session && fault_injection_from_env(session->world_rank()).stall_setup) std::raise(SIGSTOP);
  return std::make_unique<runtime::Runtime>(std::move(session), spec);
}

// ---- set-up ----------------------------------------------------------------------------

Trainer::Trainer(const TrainConfig& cfg, runtime::Runtime& rt, const TrainOptions& options)
    : cfg_(cfg), rt_(rt), options_(options), writer_(rt.world_rank() == 0) {
  const double t_setup = now_s();
  if (writer_) std::filesystem::create_directories(cfg_.output_dir);
  // Checkpoints are written by every rank (MPI-IO) and read back by every rank on resume.
  runtime::launch_check_shared_dir(rt_.host_grid().world(), cfg_.output_dir);
  log_info("backend: ", rt_.description());
  // Where every rank runs (host, CPUs, NUMA node, GPU), one line each, in rank order.
  for (const std::string& line : rt_.binding_report()) log_info("bind: ", line);
  data_load();
  model_build();
  step_plan();
  checkpoint_setup();
  checkpoint_resume();
  log_info("setup took ", format_duration(now_s() - t_setup), "; training ", total_steps_, " steps of ",
           cfg_.train.global_batch, " sequences");
}

Trainer::~Trainer() = default;

// The model's shape, then the tokenizer and the token cache (built or reused).
void Trainer::data_load() {
  spec_ = model::model_spec_from_dir(cfg_.model.path);
  model::model_spec_check_supported(spec_, cfg_.model.path + "/config.json");
  const data::Tokenizer tokenizer = data::Tokenizer::load(cfg_.model.path);
  ANVIL_CHECK_INPUT(static_cast<std::int64_t>(tokenizer.vocab_size()) <= spec_.vocab_size, cfg_.model.path,
                    ": the tokenizer has ", tokenizer.vocab_size(), " tokens but the model only ", spec_.vocab_size,
                    " embeddings");
  data_ = data_prepare(cfg_, tokenizer, rt_.world());
}

// This rank's slice of the frozen model (the Runtime's TP group says which), its adapter
// and the AdamW state.
void Trainer::model_build() {
  const model::TpGroup& tp = rt_.tp_group(spec_);
  const model::LoraSpec lora = lora_spec_from_config(cfg_);
  full_layout_ = model::LoraLayout(spec_, lora);
  model::LoraLayout local(model::tp_local_spec(spec_, tp.shard), lora);  // this rank's experts only under ep
  model::ModelLimits limits;
  limits.micro_batch = cfg_.train.micro_batch;
  limits.seq_len = cfg_.data.seq_len;
  limits.activation_checkpointing = cfg_.train.activation_checkpointing;
  const DType storage = cfg_.model.dtype == WeightDtype::weight_bf16 ? DType::dtype_bf16 : DType::dtype_f32;
  const auto seed = static_cast<std::uint64_t>(cfg_.train.seed);
  const quant::QuantPolicy quant = quant_policy_from_config(cfg_);
  model_ = std::make_unique<model::LlamaModel>(
      spec_, model::base_weights_load(spec_, cfg_.model.path, storage, tp.shard, quant), std::move(local), limits,
      rt_.backend(), seed, tp);
  adapter_ = std::make_unique<AdapterState>(*model_, full_layout_, seed);
  // transformers adds coef · aux to each forward's loss; the step's objective is the mean
  // over its micro-batches (global_batch / micro_batch of them, over every replica).
  if (spec_.is_moe() && spec_.moe.aux_loss)
    model_->set_aux_loss_weight(static_cast<float>(spec_.moe.aux_loss_coef * static_cast<double>(cfg_.train.micro_batch) /
                                                   static_cast<double>(cfg_.train.global_batch)));
  const std::int64_t n_local = model_->lora_layout().size();
  log_info("model: ", model::model_parameter_count(spec_), " frozen parameters (", dtype_name(storage),
           quant.kind != quant::QuantKind::quant_none ? str_cat(", linear weights ", quant::quant_kind_name(quant.kind))
                                                      : std::string(),
           "), ",
           full_layout_.size(), " LoRA parameters",
           rt_.tp_size() > 1 || rt_.ep_size() > 1 ? str_cat(" (", n_local, " on each rank)") : "", ", arena ",
           model_->arena_bytes() >> 20, " MiB per rank");
}

// Steps, schedule, this replica's rows of each global batch, the loss guard and MFU.
void Trainer::step_plan() {
  const data::SequenceSet& train_set = data_.cache.train;
  const std::int64_t global_batch = cfg_.train.global_batch;
  const std::int64_t micro = cfg_.train.micro_batch;
  total_steps_ = cfg_.train.steps > 0 ? cfg_.train.steps
                                      : (cfg_.train.epochs * train_set.count + global_batch - 1) / global_batch;
  sched_ = ScheduleParams{cfg_.train.lr_schedule, cfg_.train.lr, cfg_.train.warmup_steps, total_steps_,
                          cfg_.train.min_lr_ratio};
  sampler_ = std::make_unique<data::Sampler>(train_set.count, static_cast<std::uint64_t>(cfg_.train.seed),
                                             cfg_.data.shuffle);
  // This replica's rows of each global batch: a contiguous block, in micro-batches.
  const std::int64_t dp = rt_.dp_size();
  per_replica_ = global_batch / dp;
  ANVIL_CHECK(per_replica_ * dp == global_batch && per_replica_ % micro == 0, "global batch ", global_batch,
              " does not split into micro-batches of ", micro, " over dp ", dp);
  first_row_ = rt_.dp_rank() * per_replica_;
  batch_ = std::make_unique<BatchBuffers>(micro, cfg_.data.seq_len);
  guard_ = std::make_unique<LossGuard>(LossGuardParams{cfg_.train.skip_nonfinite, cfg_.train.loss_spike_factor,
                                                       cfg_.train.loss_spike_window, cfg_.train.skip_loss_spikes});
  fault_ = fault_injection_from_env(rt_.world_rank());
  // MFU: the step's model FLOPs (train/flops.h) over the peak of every rank's device.
  flops_per_step_ = train_flops_per_token(spec_, full_layout_.spec(), cfg_.data.seq_len,
                                          cfg_.train.activation_checkpointing)
                        .total() *
                    static_cast<double>(global_batch * cfg_.data.seq_len);
  peak_flops_ = cfg_.log.peak_tflops * 1e12 * rt_.world_size();
}

// ---- the step --------------------------------------------------------------------------

StepMetrics Trainer::train_step(std::int64_t step) {
  const double t_step = now_s();
  const double comm_at_start = comm::comm_busy_seconds();
  const data::SequenceSet& train_set = data_.cache.train;
  const std::int64_t micro = cfg_.train.micro_batch;
  sampler_->next(cfg_.train.global_batch, rows_);
  StepMetrics m;
  m.step = step;
  for (std::int64_t r : rows_) m.tokens += train_set.trained_tokens(r);
  double data_s = now_s() - t_step;

  // Micro-batches: forward + backward each, gradients accumulated. The loss is one mean over
  // every trained token of the step; every rank draws the same global batch, so each knows
  // the token count without asking.
  const float grad_scale = m.tokens > 0 ? 1.0f / static_cast<float>(m.tokens) : 0.0f;
  model_->zero_grads();
  double loss_sum = 0;
  MoeStepStats moe;
  for (std::int64_t start = first_row_; start < first_row_ + per_replica_; start += micro) {
    const double t_data = now_s();
    const model::TokenBatch batch = batch_->gather(train_set, rows_.data() + start, micro, start);
    data_s += now_s() - t_data;
    loss_sum += model_->train_micro_batch(batch, grad_scale, static_cast<std::uint64_t>(step));
    if (spec_.is_moe()) moe.add(*model_);
    fault_.maybe_fail_in_step(step);
  }
  if (spec_.is_moe()) moe_step_metrics(moe, m);

  // The gradient of the global step: TP partial sums first, then one flat all-reduce over
  // the data-parallel replicas (each holds the same slice of the adapter). The loss sum
  // (a host scalar) goes over the same DP communicator.
  model_->reduce_tp_grads();
  if (rt_.ep_size() > 1)  // the routed experts' over the ranks holding them, the rest over all
    model_->reduce_ep_grads(rt_.dp(), rt_.edp());
  else
    rt_.dp().allreduce_sum(model_->lora_grads(), model_->lora_size());
  rt_.dp().allreduce_sum(&loss_sum, 1);
  m.loss = m.tokens > 0 ? loss_sum / static_cast<double>(m.tokens) : 0.0;
  m.grad_norm = std::sqrt(model_->grad_sum_squares());

  // Non-finite or spiking steps make no update; the others clip and take an AdamW step at
  // the schedule's learning rate.
  m.lr = schedule_lr(sched_, step);
  const LossVerdict verdict = guard_->check(m.loss, m.grad_norm, step, writer_);
  m.spike = verdict.spike;
  m.skipped = verdict.skip;
  if (m.skipped) ++result_.skipped_steps;
  if (!m.skipped) {
    const TrainSection& t = cfg_.train;
    adapter_->adamw_step(m.grad_norm, AdamwParams{m.lr, t.adam_beta1, t.adam_beta2, t.adam_eps, t.weight_decay,
                                                  t.grad_clip, step - result_.skipped_steps});
  }

  const double step_s = now_s() - t_step;
  step_record(m, step_s, comm::comm_busy_seconds() - comm_at_start, data_s);
  return m;
}

void Trainer::MoeStepStats::add(const model::LlamaModel& model) {
  aux_sum += model.last_aux_loss();
  const std::vector<std::int64_t> l = model.last_expert_load();
  if (load.empty()) load.assign(l.size(), 0);
  for (std::size_t i = 0; i < l.size(); ++i) load[i] += l[i];
}

// The step's mean aux loss and each sparse layer's expert load, summed over the DP replicas
// (the TP ranks of a replica route the same tokens alike).
void Trainer::moe_step_metrics(MoeStepStats& s, StepMetrics& m) {
  rt_.dp().allreduce_sum(&s.aux_sum, 1);
  rt_.dp().allreduce(s.load.data(), static_cast<std::int64_t>(s.load.size()), DType::dtype_i64,
                     comm::ReduceOp::reduce_sum);
  if (spec_.moe.aux_loss)
    m.aux_loss = s.aux_sum * static_cast<double>(cfg_.train.micro_batch) / static_cast<double>(cfg_.train.global_batch);
  const auto E = static_cast<std::size_t>(spec_.moe.num_experts);
  for (std::size_t l = 0; l + E <= s.load.size(); l += E) {
    const auto [lo, hi] = std::minmax_element(s.load.begin() + static_cast<std::ptrdiff_t>(l),
                                              s.load.begin() + static_cast<std::ptrdiff_t>(l + E));
    m.expert_load.push_back({*lo, *hi});
  }
}

// Throughput, MFU and the worst rank's shares into `m`; metrics.jsonl and the progress line.
void Trainer::step_record(StepMetrics& m, double step_s, double comm_s, double data_s) {
  m.skipped_total = result_.skipped_steps;
  m.elapsed_s = now_s() - t0_;
  m.tokens_per_s = static_cast<double>(cfg_.train.global_batch * cfg_.data.seq_len) / step_s;
  if (peak_flops_ > 0) m.mfu = flops_per_step_ / step_s / peak_flops_;
  step_metrics_reduce_worst(rt_.world(), m, comm_s, data_s, step_s);
  if (writer_) {
    metrics_->write_step(m);
    progress_->update(m);
  }
}

void Trainer::eval_run(std::int64_t step) {
  if (!data_.cache.eval) return;
  auto [loss, tokens] = evaluate(*model_, *data_.cache.eval, cfg_.train.micro_batch, *batch_, rt_.dp(),
                                 rt_.ep_size() > 1);
  if (writer_) {
    metrics_->write_eval(step, loss, tokens, now_s() - t0_);
    progress_->note(str_cat("eval step ", step, ": eval loss ", loss));
  }
  if (!result_.first_eval_loss) result_.first_eval_loss = loss;
  result_.last_eval_loss = loss;
}

// ---- the run ---------------------------------------------------------------------------

TrainResult Trainer::run() {
  if (writer_) {
    metrics_.emplace(cfg_.output_dir + "/metrics.jsonl", result_.resumed_from ? state_.step : -1);
    progress_.emplace(total_steps_, cfg_.log.every);
  }
  // Armed for the loop only: data preparation and weight loading before it may keep ranks
  // waiting on each other far longer than a step's collectives.
  const comm::WatchdogArmed watchdog(cfg_.parallel.collective_timeout_s, "parallel.collective_timeout_s");
  t0_ = now_s();
  const std::int64_t eval_every = cfg_.train.eval_every;
  if (eval_every > 0 && !result_.resumed_from) eval_run(0);

  const std::int64_t stop_after = options_.stop_after;
  const std::int64_t last_step = stop_after > 0 ? std::min(stop_after, total_steps_) : total_steps_;
  for (std::int64_t step = state_.step + 1; step <= last_step; ++step) {
    const StepMetrics m = train_step(step);
    result_.last_loss = m.loss;
    result_.steps = step;
    state_.tokens_seen += m.tokens;
    if (eval_every > 0 && (step % eval_every == 0 || step == total_steps_)) eval_run(step);
    const bool periodic =
        cfg_.checkpoint.every > 0 && (step % cfg_.checkpoint.every == 0 || step == total_steps_);
    // A SIGUSR1/SIGTERM on any rank stops every rank here, after a checkpoint of this step
    // (train/preemption.h); at the last step the run simply completes.
    result_.preempted = step < last_step && preemption_agreed(rt_.world());
    if (periodic || step == stop_after || result_.preempted) checkpoint_write(step);
    if (result_.preempted) break;
  }
  if (writer_) progress_->finish();
  return finish();
}

// After the loop: a preempted or --stop-after run leaves its checkpoint to continue from;
// a complete one writes the adapter and the end line of metrics.jsonl.
TrainResult Trainer::finish() {
  if (result_.preempted) {
    preemption_note_stopped();
    log_info("preempted after step ", result_.steps, " of ", total_steps_, "; ", result_.last_checkpoint,
             " continues it (exit ", exit_preempted, ")");
    return result_;
  }
  if (options_.stop_after > 0 && options_.stop_after < total_steps_) {
    log_info("stopped after step ", options_.stop_after, " of ", total_steps_, " (--stop-after); ",
             result_.last_checkpoint, " continues it");
    return result_;
  }
  adapter_write();
  const std::vector<double> peaks = peak_rss_per_rank(rt_.world());
  if (writer_) metrics_->write_end(result_.steps, peaks);
  rt_.world().barrier();  // the adapter is complete when any rank returns
  log_info("trained ", result_.steps, " steps in ", format_duration(now_s() - t0_), "; adapter written to ",
           result_.adapter_dir);
  return result_;
}

// ---- checkpoints (train/checkpoint.h) ---------------------------------------------------

void Trainer::checkpoint_setup() {
  ckpt_.cfg = &cfg_;
  ckpt_.config_yaml = config_to_yaml(cfg_);
  ckpt_.model_config_json = io::read_text_file(cfg_.model.path + "/config.json");
  ckpt_.base_path = std::filesystem::absolute(cfg_.model.path).lexically_normal().string();
  ckpt_.base_hash = checkpoint::model_identity_hash(cfg_.model.path);
  ckpt_.data_key = data_.key;
  ckpt_.spec = &spec_;
  ckpt_.full = &full_layout_;
  ckpt_.local = &model_->lora_layout();
  ckpt_.shard = model_->tp().shard;
  ckpt_.grid = &rt_.host_grid();
  if (fault_.during_save) ckpt_.kill_during_save = fault_.step;
  if (cfg_.checkpoint.keep == 1 && writer_)
    log_warn("checkpoint.keep: 1 leaves a single checkpoint: a crash while the next one is written still "
             "leaves it, but a damaged file has no fallback");
}

void Trainer::checkpoint_resume() {
  if (std::optional<ResumedFrom> r = train::checkpoint_resume(ckpt_, adapter_->host())) {
    result_.resumed_from = r->path;
    state_ = r->state;
    adapter_->upload();
    sampler_->restore(state_.sampler);
    result_.skipped_steps = state_.skipped_steps;
    log_info("resumed from ", *result_.resumed_from, " after step ", state_.step, " (", state_.tokens_seen,
             " tokens seen)");
    if (state_.step >= total_steps_)
      log_info("the run is complete (", state_.step, " of ", total_steps_, " steps); writing its adapter again");
  }
  ANVIL_CHECK_INPUT(options_.stop_after <= 0 || options_.stop_after > state_.step, "--stop-after ",
                    options_.stop_after, ": the run is already past that step (", state_.step, ")");
}

void Trainer::checkpoint_write(std::int64_t step) {
  state_.step = step;
  state_.skipped_steps = result_.skipped_steps;
  state_.sampler = sampler_->state();
  adapter_->download();
  result_.last_checkpoint = checkpoint_save(ckpt_, state_, adapter_->host());
  if (writer_) checkpoint_prune(cfg_, result_.resumed_from.value_or(""));
  log_info("checkpoint ", result_.last_checkpoint);
}

// The PEFT adapter of the whole model, gathered over TP and EP and written by world rank 0.
void Trainer::adapter_write() {
  result_.adapter_dir = cfg_.output_dir + "/adapter";
  const std::vector<float> whole = adapter_->gather_full(rt_.tp(), rt_.ep());
  if (writer_)
    exporting::peft_save(result_.adapter_dir, full_layout_, whole.data(),
                         std::filesystem::absolute(cfg_.model.path).string());
}

}  // namespace anvil::train
