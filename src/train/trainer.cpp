#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"
#include "core/log.h"
#include "data/dataset.h"
#include "data/sampler.h"
#include "data/tokenizer.h"
#include "model/llama.h"
#include "model/lora.h"
#include "train/metrics.h"
#include "train/schedule.h"

namespace anvil::train {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

data::DatasetOptions dataset_options(const TrainConfig& cfg) {
  data::DatasetOptions o;
  switch (cfg.data.format) {
    case DataFormat::format_auto: o.format = data::RecordFormat::record_auto; break;
    case DataFormat::format_text: o.format = data::RecordFormat::record_text; break;
    case DataFormat::format_prompt_completion:
      o.format = data::RecordFormat::record_prompt_completion;
      break;
    case DataFormat::format_chat:
      throw_user_error("data.format: chat records need chat templates, which are not supported yet; "
                       "use text or prompt_completion");
  }
  o.seq_len = cfg.data.seq_len;
  o.packing = cfg.data.packing;
  o.add_eos = cfg.data.add_eos;
  return o;
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
    for (std::int64_t i = 0; i < count; ++i) {
      const auto src = static_cast<std::size_t>(rows[i] * T);
      const auto dst = static_cast<std::size_t>(i * T);
      std::copy_n(set.ids.begin() + src, T, ids.begin() + dst);
      std::copy_n(set.targets.begin() + src, T, targets.begin() + dst);
      std::copy_n(set.positions.begin() + src, T, positions.begin() + dst);
      std::copy_n(set.segments.begin() + src, T, segments.begin() + dst);
    }
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

std::int64_t trained_tokens(const data::SequenceSet& set, std::int64_t row) {
  std::int64_t n = 0;
  for (std::int64_t t = 0; t < set.seq_len; ++t)
    n += set.targets[static_cast<std::size_t>(row * set.seq_len + t)] != -100;
  return n;
}

// Mean token loss over the whole set (no dropout), and the token count.
std::pair<double, std::int64_t> evaluate(model::LlamaModel& model, const data::SequenceSet& set,
                                         std::int64_t micro_batch, BatchBuffers& buf) {
  double sum = 0;
  std::int64_t tokens = 0;
  std::vector<std::int64_t> rows;
  for (std::int64_t start = 0; start < set.count; start += micro_batch) {
    const std::int64_t count = std::min(micro_batch, set.count - start);
    rows.clear();
    for (std::int64_t i = 0; i < count; ++i) {
      rows.push_back(start + i);
      tokens += trained_tokens(set, start + i);
    }
    sum += model.eval_loss(buf.gather(set, rows.data(), count, 0));
  }
  return {tokens > 0 ? sum / static_cast<double>(tokens) : 0.0, tokens};
}

model::LoraSpec lora_spec(const TrainConfig& cfg) {
  model::LoraSpec s;
  s.rank = cfg.lora.rank;
  s.alpha = cfg.lora.alpha;
  s.dropout = cfg.lora.dropout;
  s.rslora = cfg.lora.rslora;
  s.targets = model::lora_targets_from_names(cfg.lora.targets, "lora.targets");
  return s;
}

}  // namespace

TrainResult train_run(const TrainConfig& cfg) {
  const auto t_setup = Clock::now();
  const std::string& out_dir = cfg.output_dir;
  std::filesystem::create_directories(out_dir);

  // Model, tokenizer and data.
  const model::ModelSpec spec = model::model_spec_from_dir(cfg.model.path);
  model::model_spec_check_supported(spec, cfg.model.path + "/config.json");
  const data::Tokenizer tokenizer = data::Tokenizer::load(cfg.model.path);
  ANVIL_CHECK_INPUT(static_cast<std::int64_t>(tokenizer.vocab_size()) <= spec.vocab_size, cfg.model.path,
                    ": the tokenizer has ", tokenizer.vocab_size(), " tokens but the model only ",
                    spec.vocab_size, " embeddings");
  const data::DatasetOptions dopt = dataset_options(cfg);
  const data::SequenceSet train_set = data::dataset_load_jsonl(cfg.data.train, tokenizer, dopt);
  std::optional<data::SequenceSet> eval_set;
  if (cfg.data.eval) eval_set = data::dataset_load_jsonl(*cfg.data.eval, tokenizer, dopt);
  log_info("data: ", train_set.samples, " samples in ", train_set.count, " sequences of ",
           train_set.seq_len, " tokens, ", train_set.trained_tokens, " trained tokens (",
           static_cast<int>(100.0 * static_cast<double>(train_set.trained_tokens) /
                            static_cast<double>(train_set.count * train_set.seq_len) + 0.5),
           "% of slots)", train_set.truncated ? str_cat(", ", train_set.truncated, " truncated") : "");

  const DType storage = cfg.model.dtype == WeightDtype::weight_bf16 ? DType::dtype_bf16 : DType::dtype_f32;
  auto backend = backend::make_cpu_backend();
  const model::LoraLayout layout(spec, lora_spec(cfg));
  model::ModelLimits limits;
  limits.micro_batch = cfg.train.micro_batch;
  limits.seq_len = cfg.data.seq_len;
  limits.activation_checkpointing = cfg.train.activation_checkpointing;
  const auto seed = static_cast<std::uint64_t>(cfg.train.seed);
  model::LlamaModel model(spec, model::base_weights_load(spec, cfg.model.path, storage), layout,
                          limits, *backend, seed);
  model::lora_init(layout, seed, model.lora_params());
  log_info("model: ", model::model_parameter_count(spec), " frozen parameters (", dtype_name(storage),
           "), ", layout.size(), " LoRA parameters, arena ", model.arena_bytes() >> 20, " MiB");

  // Optimizer state and the step plan.
  std::vector<float> adam_m(static_cast<std::size_t>(layout.size()), 0.0f);
  std::vector<float> adam_v(static_cast<std::size_t>(layout.size()), 0.0f);
  const std::int64_t global_batch = cfg.train.global_batch;
  const std::int64_t micro = cfg.train.micro_batch;
  const std::int64_t total_steps =
      cfg.train.steps > 0 ? cfg.train.steps
                          : (cfg.train.epochs * train_set.count + global_batch - 1) / global_batch;
  ScheduleParams sched{cfg.train.lr_schedule, cfg.train.lr, cfg.train.warmup_steps, total_steps,
                       cfg.train.min_lr_ratio};
  data::Sampler sampler(train_set.count, seed, cfg.data.shuffle);
  if (cfg.checkpoint.every > 0)
    log_warn("checkpoint.every: checkpoints are not written yet; this run saves only the final adapter");

  MetricsWriter metrics(out_dir + "/metrics.jsonl");
  ProgressLine progress(total_steps, cfg.log.every);
  BatchBuffers buf(micro, cfg.data.seq_len);
  std::vector<std::int64_t> rows;
  TrainResult result;
  log_info("setup took ", format_duration(seconds_since(t_setup)), "; training ", total_steps,
           " steps of ", global_batch, " sequences");

  const auto t0 = Clock::now();
  auto run_eval = [&](std::int64_t step) {
    if (!eval_set) return;
    auto [loss, tokens] = evaluate(model, *eval_set, micro, buf);
    metrics.write_eval(step, loss, tokens, seconds_since(t0));
    progress.note(str_cat("eval step ", step, ": eval loss ", loss));
    if (!result.first_eval_loss) result.first_eval_loss = loss;
    result.last_eval_loss = loss;
  };
  if (cfg.train.eval_every > 0) run_eval(0);

  for (std::int64_t step = 1; step <= total_steps; ++step) {
    const auto t_step = Clock::now();
    sampler.next(global_batch, rows);
    std::int64_t tokens = 0;
    for (std::int64_t r : rows) tokens += trained_tokens(train_set, r);
    // The loss is one mean over every trained token of the step, not a mean of per-batch means.
    const float grad_scale = tokens > 0 ? 1.0f / static_cast<float>(tokens) : 0.0f;
    model.zero_grads();
    double loss_sum = 0;
    for (std::int64_t start = 0; start < global_batch; start += micro) {
      const std::int64_t count = std::min(micro, global_batch - start);
      loss_sum += model.train_micro_batch(buf.gather(train_set, rows.data() + start, count, start),
                                          grad_scale, static_cast<std::uint64_t>(step));
    }
    StepMetrics m;
    m.step = step;
    m.tokens = tokens;
    m.loss = tokens > 0 ? loss_sum / static_cast<double>(tokens) : 0.0;
    m.lr = schedule_lr(sched, step);
    m.grad_norm = std::sqrt(backend->sum_squares(model.lora_grads(), layout.size()));
    if (!std::isfinite(m.loss) || !std::isfinite(m.grad_norm)) {
      ANVIL_CHECK_INPUT(cfg.train.skip_nonfinite, "step ", step, ": the ",
                        std::isfinite(m.loss) ? "gradient norm" : "loss", " is not finite (loss ",
                        m.loss, ", grad norm ", m.grad_norm,
                        "); lower train.lr or set train.skip_nonfinite: true to skip such steps");
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
      backend->adamw_update(model.lora_params(), model.lora_grads(), adam_m.data(), adam_v.data(),
                            layout.size(), a);
    }
    m.skipped_total = result.skipped_steps;
    m.elapsed_s = seconds_since(t0);
    m.tokens_per_s = static_cast<double>(global_batch * cfg.data.seq_len) / seconds_since(t_step);
    metrics.write_step(m);
    progress.update(m);
    result.last_loss = m.loss;
    result.steps = step;
    if (cfg.train.eval_every > 0 && (step % cfg.train.eval_every == 0 || step == total_steps))
      run_eval(step);
  }
  progress.finish();

  result.adapter_dir = out_dir + "/adapter";
  model::lora_save_peft(result.adapter_dir, layout, model.lora_params(),
                        std::filesystem::absolute(cfg.model.path).string());
  log_info("trained ", result.steps, " steps in ", format_duration(seconds_since(t0)),
           "; adapter written to ", result.adapter_dir);
  return result;
}

}  // namespace anvil::train
