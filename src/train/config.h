// TrainConfig: the validated, typed training config. YAML stops at this header: the loader
// turns a config file (plus --set overrides) into this plain struct, and everything
// downstream (runtime, data, trainer) reads typed fields such as cfg.train.lr.
//
// Every key, its type, default, allowed values and one-line doc live in one table
// (config_schema.cpp); that table drives parsing, defaults, validation, config_to_yaml
// and the check that configs/README.md documents every key. A TrainConfig{} is zeroed,
// not defaulted: config_defaults() gives the schema defaults.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend_support.h"
#include "comm/comm.h"
#include "data/chat_template.h"
#include "core/log.h"
#include "quant/quant_state.h"

namespace anvil::train {

// Storage of the frozen base weights. auto: bf16 on CUDA, f32 on CPU.
enum class WeightDtype { weight_auto, weight_f32, weight_bf16 };
// How a JSONL record becomes tokens. auto: decided by the keys of the first record.
enum class DataFormat { format_auto, format_text, format_prompt_completion, format_chat };
// What happens to a sample longer than data.seq_len.
enum class DataOverflow { overflow_truncate, overflow_split, overflow_drop };
// Bad records: counted, reported and skipped, or the first one ends the run.
enum class DataOnError { on_error_skip, on_error_fail };
enum class LrSchedule { lr_constant, lr_linear, lr_cosine };
using BackendKind = backend::BackendKind;  // backend/backend_support.h
using CommKind = comm::CommKind;           // comm/comm.h
using TrainOn = data::TrainOn;             // data/chat_template.h
// Quantization of the frozen base's linear weights at load (QLoRA): none, NF4, FP8 e4m3.
using QuantMode = quant::QuantKind;        // quant/quant_state.h

// The config spelling of each enum value, indexed by the value ("bf16", "cosine", ...).
const std::vector<std::string>& enum_names(WeightDtype);
const std::vector<std::string>& enum_names(QuantMode);
const std::vector<std::string>& enum_names(DataFormat);
const std::vector<std::string>& enum_names(DataOverflow);
const std::vector<std::string>& enum_names(DataOnError);
const std::vector<std::string>& enum_names(TrainOn);
const std::vector<std::string>& enum_names(LrSchedule);
const std::vector<std::string>& enum_names(BackendKind);
const std::vector<std::string>& enum_names(CommKind);
const std::vector<std::string>& enum_names(LogLevel);

template <typename E>
const std::string& enum_name(E value) {
  return enum_names(value).at(static_cast<std::size_t>(value));
}

// The meaning of each field is documented once, in the schema table and configs/README.md.
struct ModelSection {
  std::string path;  // Hugging Face model directory
  WeightDtype dtype{};
  QuantMode quant{};
  std::vector<std::string> quant_skip;
  bool operator==(const ModelSection&) const = default;
};

struct LoraSection {
  int rank{};
  double alpha{};
  double dropout{};
  bool rslora{};                     // scale alpha/sqrt(rank) instead of alpha/rank
  std::vector<std::string> targets;  // HF module names: q_proj ... down_proj
  bool operator==(const LoraSection&) const = default;
};

// One training file and its weight (uses of each record per epoch).
struct DataSource {
  std::string path;  // JSONL
  double weight = 1.0;
  bool operator==(const DataSource&) const = default;
};

struct DataSection {
  std::vector<DataSource> train;
  std::optional<std::string> eval;  // JSONL path
  double eval_fraction{};
  DataFormat format{};
  int seq_len{};
  bool packing{};
  DataOverflow overflow{};
  bool shuffle{};
  bool add_eos{};
  TrainOn train_on{};
  std::optional<std::string> chat_template;  // a data::chat_template_names() name or a .jinja file; null: the model's
  DataOnError on_error{};
  std::optional<std::string> cache_dir;  // null = OUTPUT_DIR/cache
  bool operator==(const DataSection&) const = default;
};

struct TrainSection {
  std::int64_t steps{};  // 0: run `epochs` epochs
  int epochs{};
  int global_batch{};  // sequences per optimizer step, all data-parallel ranks together
  int micro_batch{};   // sequences per forward pass on one rank
  double lr{};
  LrSchedule lr_schedule{};
  std::int64_t warmup_steps{};
  double min_lr_ratio{};
  double adam_beta1{};
  double adam_beta2{};
  double adam_eps{};
  double weight_decay{};
  double grad_clip{};  // 0: off
  std::int64_t seed{};
  bool activation_checkpointing{};
  std::int64_t eval_every{};  // 0: never
  bool skip_nonfinite{};
  double loss_spike_factor{};  // 0: off
  std::int64_t loss_spike_window{};
  bool skip_loss_spikes{};
  bool operator==(const TrainSection&) const = default;
};

struct ParallelSection {
  int tp{};
  int ep{};  // expert-parallel ranks (MoE only): each holds num_experts / ep routed experts
  int dp{};  // 0: auto (world size / (tp × ep))
  BackendKind backend{};
  CommKind comm{};
  int collective_timeout_s{};  // 0: no watchdog
  int setup_timeout_s{};       // the watchdog over the Runtime's set-up; 0: none
  bool operator==(const ParallelSection&) const = default;
};

struct CheckpointSection {
  std::int64_t every{};  // 0: never
  int keep{};            // 0: keep all
  std::string resume;    // "auto", "never" or a checkpoint path
  bool operator==(const CheckpointSection&) const = default;
};

struct LogSection {
  std::int64_t every{};
  LogLevel level{};
  double peak_tflops{};  // 0: the GPU's datasheet figure; no MFU on CPU
  bool operator==(const LogSection&) const = default;
};

struct TrainConfig {
  std::string output_dir;  // metrics, checkpoints and logs go under it
  ModelSection model;
  LoraSection lora;
  DataSection data;
  TrainSection train;
  ParallelSection parallel;
  CheckpointSection checkpoint;
  LogSection log;
  bool operator==(const TrainConfig&) const = default;
};

// What the loader knows about the run beyond the file.
struct ConfigContext {
  // Ranks in the job. 0: not known (anvil validate without --world-size); then the world
  // is taken to be tp × dp, with dp: auto counting as 1.
  int world_size = 0;
  // Check that the model directory, data files and resume path exist, and the rules that
  // need the model's shape (tp must divide the attention heads, ...). Off for configs
  // checked away from their data (unit tests, a resolved config read back).
  bool check_files = true;
};

// Loads, applies overrides ("train.lr=1e-4", the value read as YAML) and validates. Every
// problem is collected first; then one user Error lists them all, one per line, e.g.
//   config.yaml:12: train.lr: expected a number, got 'fast'
//   --set lora.rnak=8: lora.rnak: unknown key (did you mean 'lora.rank'?)
TrainConfig config_load(const std::string& path, const std::vector<std::string>& overrides = {},
                        const ConfigContext& ctx = {});
// The same for YAML text; `label` stands for the file name in messages.
TrainConfig config_load_from_string(const std::string& yaml_text, const std::string& label,
                                    const std::vector<std::string>& overrides = {},
                                    const ConfigContext& ctx = {});

// The schema defaults; required keys (output_dir, model.path, data.train) are empty.
TrainConfig config_defaults();

// Every key, defaults filled, as YAML that config_load_from_string reads back unchanged.
std::string config_to_yaml(const TrainConfig& cfg);

// The parallel layout for `world_size` ranks (0: inferred as in ConfigContext). Each throws
// a user Error naming the key when the layout is impossible.
int config_world_size(const TrainConfig& cfg, int world_size);
int config_data_parallel(const TrainConfig& cfg, int world_size);
// Micro-batches per rank per optimizer step: global_batch / (micro_batch × dp).
int config_grad_accumulation(const TrainConfig& cfg, int world_size);

// model.quant and model.quant_skip as the weight loader takes them.
quant::QuantPolicy quant_policy_from_config(const TrainConfig& cfg);

}  // namespace anvil::train
