// What an anvil checkpoint file holds (format 1), shared by the trainer, which writes and
// resumes it (train/checkpoint.h), and by export and inspect, which read it:
//
//   anvil_format                 int64   1
//   meta/config                  text    the resolved training config (YAML)
//   meta/model_config            text    the base model's config.json, as read
//   meta/base_model_path         text    the base model directory (absolute)
//   meta/base_model_hash         text    model_identity_hash of that directory
//   meta/lora                    text    {"r", "alpha", "dropout", "rslora", "targets"} (JSON)
//   state/step, state/tokens_seen, state/skipped_steps, state/seed,
//   state/sampler_epoch, state/sampler_cursor                       int64
//   adapter/<PEFT name>          f32     (r, in) lora_A / (out, r) lora_B, full logical shape
//   adam_m/<PEFT name>, adam_v/<PEFT name>   f32   AdamW moments, same shapes
// PEFT names: base_model.model.model.layers.{i}.{self_attn|mlp}.{proj}.lora_{A|B}.weight
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/lora.h"
#include "model/model_spec.h"

namespace anvil::model {

inline constexpr std::int64_t kCheckpointFormat = 1;

// "adapter/base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" and the like;
// group is "adapter", "adam_m" or "adam_v", which 'A' or 'B'.
std::string checkpoint_matrix_name(const std::string& group, const LoraSlot& slot, char which);

// The LoRA hyper-parameters as meta/lora's JSON, and back (a user error naming `what`).
std::string lora_spec_to_json(const LoraSpec& spec);
LoraSpec lora_spec_from_json(const std::string& text, const std::string& what);

// XXH64 of the base model's config.json, its index (model.safetensors.index.json, if
// sharded), each weight file's header and 64 KiB from each end of its data, as 16 hex
// digits: a checkpoint resumes or exports only against the base model it was trained on,
// and a fine-tuned variant with the same config and index is another model.
std::string model_identity_hash(const std::string& model_dir);

// What export and inspect read from a checkpoint, in one process (MPI must be initialised;
// the file is opened over MPI_COMM_SELF). Every matrix read is checked against its
// checksum; a missing or corrupt dataset is a user error naming the file and dataset.
struct CheckpointAdapter {
  std::int64_t step = 0;
  std::string config_yaml;
  std::string model_config_json;  // as in the file; `spec` is parsed from it
  ModelSpec spec;
  std::string base_model_path;
  std::string base_model_hash;
  LoraSpec lora;
  std::vector<float> params;  // in the layout LoraLayout(spec, lora)
};
CheckpointAdapter checkpoint_read_adapter(const std::string& path);

}  // namespace anvil::model
