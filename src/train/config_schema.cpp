// The schema table. To add a key: add the field to TrainConfig (config.h), a row here,
// and a row to configs/README.md (test_config fails until the README has it).
#include "train/config_schema.h"

#include <algorithm>
#include <type_traits>

#include "core/error.h"

namespace anvil::train {

const std::vector<std::string>& enum_names(WeightDtype) {
  static const std::vector<std::string> names{"auto", "f32", "bf16"};
  return names;
}
const std::vector<std::string>& enum_names(QuantMode) {
  static const std::vector<std::string> names{"none", "nf4", "fp8"};
  return names;
}
quant::QuantPolicy quant_policy_from_config(const TrainConfig& cfg) {
  return {cfg.model.quant, cfg.model.quant_skip};
}

const std::vector<std::string>& enum_names(DataFormat) {
  static const std::vector<std::string> names{"auto", "text", "prompt_completion", "chat"};
  return names;
}
const std::vector<std::string>& enum_names(DataOverflow) {
  static const std::vector<std::string> names{"truncate", "split", "drop"};
  return names;
}
const std::vector<std::string>& enum_names(TrainOn) { return data::train_on_names(); }
const std::vector<std::string>& enum_names(DataOnError) {
  static const std::vector<std::string> names{"skip", "fail"};
  return names;
}
const std::vector<std::string>& enum_names(LrSchedule) {
  static const std::vector<std::string> names{"constant", "linear", "cosine"};
  return names;
}
const std::vector<std::string>& enum_names(BackendKind) {
  static const std::vector<std::string> names{"cpu", "cuda", "auto"};
  return names;
}
const std::vector<std::string>& enum_names(CommKind) {
  static const std::vector<std::string> names{"nccl", "mpi", "auto"};
  return names;
}
const std::vector<std::string>& enum_names(LogLevel) {
  static const std::vector<std::string> names{"debug", "info", "warn", "error"};
  return names;
}

const char* key_type_name(KeyType type) {
  switch (type) {
    case KeyType::key_int: return "int";
    case KeyType::key_float: return "float";
    case KeyType::key_bool: return "bool";
    case KeyType::key_string: return "string";
    case KeyType::key_path: return "path";
    case KeyType::key_choice: return "choice";
    case KeyType::key_list: return "list";
    case KeyType::key_int_or_auto: return "int or auto";
    case KeyType::key_sources: return "path or list";
  }
  return "?";
}

std::string_view ConfigKey::section() const {
  const auto dot = path.find('.');
  return dot == std::string::npos ? std::string_view{} : std::string_view(path).substr(0, dot);
}

std::string_view ConfigKey::leaf() const {
  const auto dot = path.find('.');
  return dot == std::string::npos ? std::string_view(path) : std::string_view(path).substr(dot + 1);
}

namespace {

// The loader has type-checked `v` against the row, so a mismatch here is a schema bug.
template <typename T>
void value_to_field(T& field, const ConfigValue& v) {
  if constexpr (std::is_same_v<T, bool>) {
    field = std::get<bool>(v);
  } else if constexpr (std::is_integral_v<T>) {
    field = static_cast<T>(std::get<std::int64_t>(v));
  } else if constexpr (std::is_floating_point_v<T>) {
    field = std::get<double>(v);
  } else if constexpr (std::is_enum_v<T>) {
    const auto& names = enum_names(T{});
    const auto it = std::find(names.begin(), names.end(), std::get<std::string>(v));
    ANVIL_CHECK(it != names.end(), "enum value ", std::get<std::string>(v));
    field = static_cast<T>(it - names.begin());
  } else if constexpr (std::is_same_v<T, std::optional<std::string>>) {
    if (std::holds_alternative<std::monostate>(v))
      field.reset();
    else
      field = std::get<std::string>(v);
  } else {
    field = std::get<T>(v);  // std::string, std::vector<std::string>
  }
}

template <typename T>
ConfigValue field_to_value(const T& field) {
  if constexpr (std::is_same_v<T, bool>) {
    return field;
  } else if constexpr (std::is_integral_v<T>) {
    return static_cast<std::int64_t>(field);
  } else if constexpr (std::is_floating_point_v<T>) {
    return static_cast<double>(field);
  } else if constexpr (std::is_enum_v<T>) {
    return enum_name(field);
  } else if constexpr (std::is_same_v<T, std::optional<std::string>>) {
    return field ? ConfigValue(*field) : ConfigValue();
  } else {
    return field;
  }
}

template <typename T>
FieldBinding binding_for(void (*set)(TrainConfig&, const ConfigValue&),
                         ConfigValue (*get)(const TrainConfig&)) {
  FieldBinding b{set, get, 0};
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>)
    b.int_max = static_cast<std::int64_t>(std::numeric_limits<T>::max());
  return b;
}

// cfg.*section.*member, e.g. cfg.train.lr.
template <auto section, auto member>
FieldBinding bind_member() {
  using T = std::remove_cvref_t<decltype(std::declval<TrainConfig&>().*section.*member)>;
  return binding_for<T>([](TrainConfig& c, const ConfigValue& v) { value_to_field(c.*section.*member, v); },
                        [](const TrainConfig& c) { return field_to_value(c.*section.*member); });
}

template <auto member>
FieldBinding bind_top() {
  using T = std::remove_cvref_t<decltype(std::declval<TrainConfig&>().*member)>;
  return binding_for<T>([](TrainConfig& c, const ConfigValue& v) { value_to_field(c.*member, v); },
                        [](const TrainConfig& c) { return field_to_value(c.*member); });
}

#define FIELD(section, member) bind_member<&TrainConfig::section, &decltype(TrainConfig::section)::member>()

constexpr double kInf = std::numeric_limits<double>::infinity();
NumberRange at_least(double lo) { return {lo, kInf, false, false}; }
NumberRange above(double lo) { return {lo, kInf, true, false}; }
NumberRange between(double lo, double hi) { return {lo, hi, false, false}; }
NumberRange from_below(double lo, double hi) { return {lo, hi, false, true}; }  // [lo, hi)

using enum KeyType;

ConfigKey row(std::string path, KeyType type, std::string default_yaml, FieldBinding field, std::string doc,
              NumberRange range = {}, std::vector<std::string> choices = {}) {
  return ConfigKey{std::move(path), type, std::move(default_yaml), range, std::move(choices),
                   std::move(doc),  field};
}

// The rows by section, in the order configs/README.md documents them.
std::vector<ConfigKey> schema_model_lora() {
  const std::vector<std::string> lora_modules{"q_proj",  "k_proj",    "v_proj",  "o_proj",
                                              "gate_proj", "up_proj", "down_proj", "experts", "shared_expert",
                                              "experts.gate_proj", "experts.up_proj", "experts.down_proj"};
  // model.quant_skip names dot-separated parts of a tensor's name: the dense projections, and
  // "experts" for every routed expert's.
  std::vector<std::string> quant_skip_names = quant::default_quant_skip();
  quant_skip_names.push_back("experts");
  quant_skip_names.insert(quant_skip_names.end(), lora_modules.begin(), lora_modules.begin() + 7);
  std::string quant_skip_default;
  for (const auto& n : quant::default_quant_skip()) quant_skip_default += (quant_skip_default.empty() ? "" : ", ") + n;
  return {
      row("output_dir", key_path, "", bind_top<&TrainConfig::output_dir>(),
          "run directory: metrics.jsonl, checkpoints and logs go under it (created if missing)"),

      // ---- model
      row("model.path", key_path, "", FIELD(model, path),
          "Hugging Face model directory (config.json, *.safetensors, tokenizer.json)"),
      row("model.dtype", key_choice, "auto", FIELD(model, dtype),
          "storage of the frozen base weights: bf16 halves their memory; auto = bf16 on CUDA, f32 on CPU", {},
          enum_names(WeightDtype{})),
      row("model.quant", key_choice, "none", FIELD(model, quant),
          "quantize the frozen base's linear weights at load (QLoRA): nf4 = 4-bit NormalFloat with double "
          "quantization (~0.53 bytes/param), fp8 = e4m3 with per-row scales (~1 byte/param); the adapter stays fp32",
          {}, enum_names(QuantMode{})),
      row("model.quant_skip", key_list, "[" + quant_skip_default + "]", FIELD(model, quant_skip),
          "linear layers kept unquantized under model.quant (norms, biases and the embedding always are)", {},
          quant_skip_names),

      // ---- lora
      row("lora.rank", key_int, "16", FIELD(lora, rank),
          "adapter rank r: higher = more capacity, more memory and compute", between(1, 65536)),
      row("lora.alpha", key_float, "32", FIELD(lora, alpha),
          "adapter scale numerator: the update is (alpha / rank) * B*A", above(0)),
      row("lora.dropout", key_float, "0.0", FIELD(lora, dropout),
          "dropout on the adapter input, in [0, 1): regularises small datasets", from_below(0, 1)),
      row("lora.rslora", key_bool, "false", FIELD(lora, rslora),
          "rank-stabilised scale alpha / sqrt(rank): keeps the update size steady at high rank"),
      row("lora.targets", key_list, "[q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]",
          FIELD(lora, targets),
          "linear layers that get an adapter: fewer = fewer trainable parameters, less capacity; on a "
          "mixture-of-experts model gate/up/down_proj adapt its dense MLP layers and 'experts' every routed "
          "expert's three (the router stays frozen)", {},
          lora_modules),
  };
}

std::vector<ConfigKey> schema_data() {
  return {
      row("data.train", key_sources, "", FIELD(data, train),
          "training set: a JSONL path, or a list of paths and {path, weight} (weight: uses of each record "
          "per epoch, e.g. 2 or 0.5)"),
      row("data.eval", key_path, "null", FIELD(data, eval),
          "evaluation set, JSONL; it or data.eval_fraction is needed when train.eval_every > 0"),
      row("data.eval_fraction", key_float, "0", FIELD(data, eval_fraction),
          "hold out this share of data.train's records (a seeded choice) as the evaluation set, in [0, 0.5]",
          between(0, 0.5)),
      row("data.format", key_choice, "auto", FIELD(data, format),
          "record layout: text {text}, prompt_completion {prompt, completion}, chat {messages}; "
          "auto = from each record's keys",
          {}, enum_names(DataFormat{})),
      row("data.seq_len", key_int, "2048", FIELD(data, seq_len),
          "tokens per training sequence: longer = more context, activation memory grows with it",
          between(2, 1 << 20)),
      row("data.packing", key_bool, "true", FIELD(data, packing),
          "pack several examples into each sequence (no padding waste); false = one example per sequence"),
      row("data.overflow", key_choice, "truncate", FIELD(data, overflow),
          "an example longer than seq_len: truncate (keep the start), split (into seq_len pieces), drop",
          {}, enum_names(DataOverflow{})),
      row("data.shuffle", key_bool, "true", FIELD(data, shuffle),
          "a new seeded order of the examples every epoch"),
      row("data.add_eos", key_bool, "true", FIELD(data, add_eos),
          "append the tokenizer's EOS token to every text and prompt/completion example"),
      row("data.train_on", key_choice, "assistant", FIELD(data, train_on),
          "which predictions train: assistant = completions and every assistant turn with its end-of-turn "
          "markup; all = every prediction (prompts, system and user turns too); last_assistant = only a "
          "conversation's last assistant turn",
          {}, enum_names(TrainOn{})),
      row("data.chat_template", key_string, "null", FIELD(data, chat_template),
          "chat template for chat records: llama3, chatml, mistral or a path to a .jinja file; null = the "
          "model's (chat_template.jinja, else tokenizer_config.json's chat_template)"),
      row("data.on_error", key_choice, "skip", FIELD(data, on_error),
          "bad records (invalid JSON/UTF-8, missing fields, empty): skip = count, report and skip; "
          "fail = stop at the first",
          {}, enum_names(DataOnError{})),
      row("data.cache_dir", key_string, "null", FIELD(data, cache_dir),
          "where the tokenized data is cached (anvil prepare); null = OUTPUT_DIR/cache"),
  };
}

std::vector<ConfigKey> schema_train() {
  return {
      row("train.steps", key_int, "0", FIELD(train, steps),
          "optimizer steps to run; 0 = run train.epochs passes over data.train", at_least(0)),
      row("train.epochs", key_int, "1", FIELD(train, epochs), "passes over data.train when train.steps is 0",
          at_least(1)),
      row("train.global_batch", key_int, "8", FIELD(train, global_batch),
          "sequences per optimizer step, over all data-parallel ranks together", at_least(1)),
      row("train.micro_batch", key_int, "1", FIELD(train, micro_batch),
          "sequences per forward/backward on one rank: higher = faster, more activation memory", at_least(1)),
      row("train.lr", key_float, "2e-4", FIELD(train, lr), "peak learning rate, reached after warmup",
          above(0)),
      row("train.lr_schedule", key_choice, "cosine", FIELD(train, lr_schedule),
          "decay after warmup: constant, or linear / cosine down to lr * min_lr_ratio", {},
          enum_names(LrSchedule{})),
      row("train.warmup_steps", key_int, "0", FIELD(train, warmup_steps),
          "steps of linear warmup from 0 to lr; at most train.steps", at_least(0)),
      row("train.min_lr_ratio", key_float, "0.0", FIELD(train, min_lr_ratio),
          "final lr / peak lr for the linear and cosine schedules", between(0, 1)),
      row("train.adam_beta1", key_float, "0.9", FIELD(train, adam_beta1), "AdamW first-moment decay",
          from_below(0, 1)),
      row("train.adam_beta2", key_float, "0.999", FIELD(train, adam_beta2),
          "AdamW second-moment decay: lower (0.95) reacts faster to loss spikes", from_below(0, 1)),
      row("train.adam_eps", key_float, "1e-8", FIELD(train, adam_eps), "AdamW denominator epsilon", above(0)),
      row("train.weight_decay", key_float, "0.0", FIELD(train, weight_decay),
          "decoupled (AdamW) weight decay on the adapter weights", at_least(0)),
      row("train.grad_clip", key_float, "1.0", FIELD(train, grad_clip),
          "clip the global gradient norm to this value; 0 = off", at_least(0)),
      row("train.seed", key_int, "42", FIELD(train, seed),
          "seeds adapter init, dropout masks and the data order", at_least(0)),
      row("train.activation_checkpointing", key_bool, "false", FIELD(train, activation_checkpointing),
          "recompute each layer's activations in backward: much less memory, about 30% more compute"),
      row("train.eval_every", key_int, "0", FIELD(train, eval_every),
          "evaluate on data.eval every N optimizer steps; 0 = never", at_least(0)),
      row("train.skip_nonfinite", key_bool, "false", FIELD(train, skip_nonfinite),
          "false: stop with an error naming the step on a non-finite loss or gradient; true: skip the step"),
      row("train.loss_spike_factor", key_float, "0", FIELD(train, loss_spike_factor),
          "warn when a step's loss exceeds this many times the mean of the last loss_spike_window steps; "
          "0 = off",
          at_least(0)),
      row("train.loss_spike_window", key_int, "50", FIELD(train, loss_spike_window),
          "steps in the running mean that loss_spike_factor compares with", between(2, 100000)),
      row("train.skip_loss_spikes", key_bool, "false", FIELD(train, skip_loss_spikes),
          "also skip the optimizer update of a step flagged by loss_spike_factor"),
  };
}

std::vector<ConfigKey> schema_parallel_checkpoint_log() {
  return {
      // ---- parallel
      row("parallel.tp", key_int, "1", FIELD(parallel, tp),
          "tensor-parallel ranks per model replica (consecutive ranks, one node): splits weights "
          "and activations, costs collectives in every layer; must divide the attention heads",
          between(1, 1024)),
      row("parallel.ep", key_int, "1", FIELD(parallel, ep),
          "expert-parallel ranks (mixture-of-experts models only): each holds num_experts / ep routed "
          "experts and tokens travel to them by all-to-all; attention stays data-parallel over them. "
          "Ranks go tp innermost, then ep, then dp; must divide num_experts",
          between(1, 1024)),
      row("parallel.dp", key_int_or_auto, "auto", FIELD(parallel, dp),
          "data-parallel replicas; auto = world size / (tp * ep); tp * ep * dp must equal the world size",
          between(1, 1 << 20)),
      row("parallel.backend", key_choice, "auto", FIELD(parallel, backend),
          "where the math runs: cpu, cuda, or auto = cuda when this build has CUDA and a GPU is visible", {},
          enum_names(BackendKind{})),
      row("parallel.comm", key_choice, "auto", FIELD(parallel, comm),
          "collectives: nccl (one GPU per rank), mpi (CPUs, or GPUs shared by several ranks, staged "
          "through host memory), auto = nccl on cuda unless ranks share a GPU, mpi on cpu",
          {}, enum_names(CommKind{})),
      row("parallel.collective_timeout_s", key_int, "600", FIELD(parallel, collective_timeout_s),
          "a collective unfinished after this many seconds (a rank stopped or hung) ends the job; 0 = wait forever",
          at_least(0)),
      row("parallel.setup_timeout_s", key_int, "300", FIELD(parallel, setup_timeout_s),
          "the same for the set-up of the process grid and communicators (NCCL's init included); 0 = wait forever",
          at_least(0)),

      // ---- checkpoint
      row("checkpoint.every", key_int, "500", FIELD(checkpoint, every),
          "save a checkpoint every N optimizer steps; 0 = never", at_least(0)),
      row("checkpoint.keep", key_int, "3", FIELD(checkpoint, keep),
          "how many recent checkpoints to keep on disk; 0 = all", at_least(0)),
      row("checkpoint.resume", key_string, "auto", FIELD(checkpoint, resume),
          "auto = continue from the latest checkpoint in output_dir if any; never = start fresh; "
          "or the path of a checkpoint file"),

      // ---- log
      row("log.every", key_int, "10", FIELD(log, every), "print and record metrics every N optimizer steps",
          at_least(1)),
      row("log.level", key_choice, "info", FIELD(log, level), "console verbosity: debug, info, warn or error",
          {}, enum_names(LogLevel{})),
      row("log.peak_tflops", key_float, "0", FIELD(log, peak_tflops),
          "peak dense TFLOP/s of one rank's device, the denominator of MFU in metrics.jsonl; 0 = the "
          "GPU's bf16 datasheet figure, no MFU on CPU",
          at_least(0)),
  };
}

std::vector<ConfigKey> make_schema() {
  std::vector<ConfigKey> all;
  for (auto* section : {schema_model_lora, schema_data, schema_train, schema_parallel_checkpoint_log})
    for (ConfigKey& key : section()) all.push_back(std::move(key));
  return all;
}

#undef FIELD

}  // namespace

const std::vector<ConfigKey>& config_schema() {
  static const std::vector<ConfigKey> schema = make_schema();
  return schema;
}

const ConfigKey* config_schema_find(std::string_view path) {
  for (const ConfigKey& key : config_schema())
    if (key.path == path) return &key;
  return nullptr;
}

const std::vector<std::string>& config_sections() {
  static const std::vector<std::string> sections{"model",    "lora",       "data", "train",
                                                 "parallel", "checkpoint", "log"};
  return sections;
}

}  // namespace anvil::train
