// What an anvil checkpoint file holds: the one place its dataset names are spelled. The
// trainer writes and resumes it (train/checkpoint.h), export and inspect read it, all
// through checkpoint/checkpoint_file.h.
//
// Format 2 (written):
//   anvil_format                 int64   2
//   meta/config                  text    the resolved training config (YAML)
//   meta/model_config            text    the base model's config.json, as read
//   meta/base_model_path         text    the base model directory (absolute)
//   meta/base_model_hash         text    model_identity_hash of that directory
//   meta/data_key                text    the token cache's key (data/token_cache.h)
//   meta/lora                    text    {"r", "alpha", "dropout", "rslora", "targets"} (JSON)
//   state/step, state/tokens_seen, state/skipped_steps, state/seed,
//   state/sampler_epoch, state/sampler_cursor                       int64
//   {adapter|adam_m|adam_v}/{self_attn|mlp}.{proj}.lora_A   f32 (layers, r, in)
//   {adapter|adam_m|adam_v}/{self_attn|mlp}.{proj}.lora_B   f32 (layers, out, r)
// One dataset per (group, projection, kind): 42 for an all-projection LoRA of any depth.
// Slab [l] is layer l's matrix, whole (full logical shape, whatever the TP grid), and has
// its own checksum: the `slab_sum64` attribute holds one per layer (io::slab_sum, which TP
// ranks add up from their blocks). Every scalar and text has its XXH64 (`xxh64`).
//
// Format 1 (still read; checkpoint_v1.h): the same meta and state, and one 2-D dataset per
// matrix, {group}/base_model.model.model.layers.{l}.{module}.{proj}.lora_{A|B}.weight.
#pragma once

#include <cstdint>
#include <string>

#include "model/lora.h"

namespace anvil::checkpoint {

inline constexpr std::int64_t kFormat = 2;    // written
inline constexpr std::int64_t kFormatV1 = 1;  // still read

inline constexpr const char* kFormatName = "anvil_format";
inline constexpr const char* kMetaConfig = "meta/config";
inline constexpr const char* kMetaModelConfig = "meta/model_config";
inline constexpr const char* kMetaBasePath = "meta/base_model_path";
inline constexpr const char* kMetaBaseHash = "meta/base_model_hash";
inline constexpr const char* kMetaDataKey = "meta/data_key";
inline constexpr const char* kMetaLora = "meta/lora";

// The three buffers a checkpoint holds, each in the LoRA layout: the adapter and the two
// AdamW moments.
enum class Group { group_adapter, group_adam_m, group_adam_v };
inline constexpr int kGroupCount = 3;
const char* group_name(Group g);  // "adapter", "adam_m", "adam_v"

// "adapter/self_attn.q_proj.lora_A": the (layers, rows, cols) stack of format 2.
std::string stack_name(Group g, model::Proj p, char which);
// Llama 4's shared experts (gate/up/down of its sparse layers, narrower than its dense MLPs)
// are a stack of their own: "<group>/mlp.shared_expert.gate_proj.lora_A".
std::string stack_name(Group g, model::Proj p, char which, bool shared_expert);

// What the run was, and where it stands (every dataset outside the three groups).
struct Meta {
  std::string config_yaml;        // the resolved config
  std::string model_config_json;  // the base model's config.json
  std::string base_model_path;    // absolute
  std::string base_model_hash;    // model_identity_hash
  std::string data_key;           // empty in a format 1 file written before it existed
  model::LoraSpec lora;
};
struct State {
  std::int64_t step = 0;  // optimizer steps done
  std::int64_t tokens_seen = 0;
  std::int64_t skipped_steps = 0;
  std::int64_t seed = 0;
  std::int64_t sampler_epoch = 0;
  std::int64_t sampler_cursor = 0;
};

// The LoRA hyper-parameters as meta/lora's JSON, and back (a user error naming `what`).
std::string lora_spec_to_json(const model::LoraSpec& spec);
model::LoraSpec lora_spec_from_json(const std::string& text, const std::string& what);

}  // namespace anvil::checkpoint
