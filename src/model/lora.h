// LoRA adapters on a Llama model: W x + scale · B A x for the chosen projections, with A
// (r, in) Kaiming-uniform and B (out, r) zero at the start, scale alpha/r (alpha/sqrt(r)
// with rsLoRA). All adapter weights live in one flat fp32 buffer, so gradients, AdamW state
// and the data-parallel all-reduce are flat buffers of the same layout.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/model_spec.h"

namespace anvil::model {

// The linear layers of a block, in HF module order: the seven of a dense Llama block, then
// the three of each routed expert of a mixture-of-experts block (which has no dense MLP).
enum class Proj {
  proj_q, proj_k, proj_v, proj_o, proj_gate, proj_up, proj_down,
  proj_expert_gate, proj_expert_up, proj_expert_down
};
inline constexpr int kProjCount = 10;
inline constexpr int kDenseProjCount = 7;  // q .. down: the projections of a dense block
// "q_proj", ... "down_proj", "experts.gate_proj", "experts.up_proj", "experts.down_proj":
// anvil's names (config keys, checkpoint datasets), the same for every model family.
const char* proj_name(Proj p);
bool proj_is_expert(Proj p);
// "self_attn" or "mlp" (experts included): the prefix of anvil's checkpoint dataset names.
const char* proj_module(Proj p);
// The HF module path of projection p of block `layer` (of routed expert `expert`):
// "model.layers.3.self_attn.q_proj", "model.layers.3.mlp.experts.5.gate_proj" (Qwen3-MoE),
// "model.layers.3.block_sparse_moe.experts.5.w1" (Mixtral). + ".weight" / ".bias" names its
// tensors; PEFT prefixes "base_model.model.".
std::string proj_module_path(const ModelSpec& spec, std::int64_t layer, Proj p, std::int64_t expert = -1);
std::optional<Proj> proj_from_name(const std::string& name);
// The expert projection an HF leaf module name stands for in `spec`'s sparse layers
// ("gate_proj" or Mixtral's "w1" -> proj_expert_gate, ...); nullopt for a dense model.
std::optional<Proj> expert_proj_from_leaf(const ModelSpec& spec, const std::string& leaf);
// A routed expert's weight as proj_module_path spells it + ".weight"
// ("model.layers.3.mlp.experts.5.gate_proj.weight", Mixtral's "...experts.5.w1.weight"):
// its layer, expert and projection; nullopt for any other name.
struct ExpertWeight {
  std::int64_t layer = 0, expert = 0;
  Proj proj{};
};
std::optional<ExpertWeight> expert_weight_from_name(const ModelSpec& spec, const std::string& name);
// (out, in) of the projection's weight.
std::array<std::int64_t, 2> proj_shape(const ModelSpec& spec, Proj p);
// The same in block `layer`: Llama 4's shared expert (gate/up/down of a sparse layer) has
// the experts' width, its dense layers intermediate_size_mlp.
std::array<std::int64_t, 2> proj_shape_at(const ModelSpec& spec, std::int64_t layer, Proj p);

struct LoraSpec {
  int rank = 0;
  double alpha = 0;
  double dropout = 0;
  bool rslora = false;
  std::array<bool, kProjCount> targets{};  // by Proj
  float scale() const;
  bool targets_any() const;
};

// Throws a user error naming `key` for an unknown target name. "experts" names the three
// projections of every routed expert; "shared_expert" Llama 4's shared expert, which is
// gate_proj/up_proj/down_proj of its sparse layers (so those names adapt it too, as PEFT's
// suffix match of target_modules does).
std::array<bool, kProjCount> lora_targets_from_names(const std::vector<std::string>& names,
                                                     const std::string& key);

// Where one adapter's A and B sit in the flat buffer.
struct LoraSlot {
  std::int64_t layer = 0;
  Proj proj{};
  std::int64_t in = 0, out = 0;
  std::int64_t a_offset = 0;  // (r, in)
  std::int64_t b_offset = 0;  // (out, r)
  std::int64_t expert = -1;   // a routed expert's projection: which expert
  std::string module;         // the HF module path (proj_module_path)
};

// The flat layout: for each layer, for each targeted projection the layer has, in Proj
// order (and each expert in turn), A then B. A sparse layer has the expert projections
// instead of gate/up/down.
class LoraLayout {
 public:
  LoraLayout() = default;
  LoraLayout(const ModelSpec& spec, const LoraSpec& lora);
  const LoraSpec& spec() const { return lora_; }
  std::int64_t size() const { return size_; }  // floats in the flat buffer
  const std::vector<LoraSlot>& slots() const { return slots_; }
  // nullptr when the projection has no adapter.
  const LoraSlot* find(std::int64_t layer, Proj p, std::int64_t expert = -1) const;
  // PEFT's tensor names: base_model.model.{module}.lora_{A,B}.weight
  static std::string peft_name(const LoraSlot& s, char which);

 private:
  LoraSpec lora_;
  std::vector<LoraSlot> slots_;
  std::vector<std::int64_t> index_;  // layer * kProjCount + proj -> (first expert's) slot or -1
  std::int64_t size_ = 0;
};

// A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform_ with a = sqrt(5), as PEFT does) from a
// counter-based generator keyed by (seed, layer, proj); B = 0.
void lora_init(const LoraLayout& layout, std::uint64_t seed, float* params);

}  // namespace anvil::model
