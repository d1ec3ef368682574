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

// The seven linear layers of a Llama block, in HF module order.
enum class Proj { proj_q, proj_k, proj_v, proj_o, proj_gate, proj_up, proj_down };
inline constexpr int kProjCount = 7;
// "q_proj", ... "down_proj"
const char* proj_name(Proj p);
// "self_attn" or "mlp"
const char* proj_module(Proj p);
// The HF module path of projection p of block `layer`: "model.layers.3.self_attn.q_proj"
// (+ ".weight" / ".bias" names its tensors; PEFT prefixes "base_model.model.").
std::string proj_module_path(std::int64_t layer, Proj p);
std::optional<Proj> proj_from_name(const std::string& name);
// (out, in) of the projection's weight.
std::array<std::int64_t, 2> proj_shape(const ModelSpec& spec, Proj p);

struct LoraSpec {
  int rank = 0;
  double alpha = 0;
  double dropout = 0;
  bool rslora = false;
  std::array<bool, kProjCount> targets{};  // by Proj
  float scale() const;
  bool targets_any() const;
};

// Throws a user error naming `key` for an unknown target name.
std::array<bool, kProjCount> lora_targets_from_names(const std::vector<std::string>& names,
                                                     const std::string& key);

// Where one adapter's A and B sit in the flat buffer.
struct LoraSlot {
  std::int64_t layer = 0;
  Proj proj{};
  std::int64_t in = 0, out = 0;
  std::int64_t a_offset = 0;  // (r, in)
  std::int64_t b_offset = 0;  // (out, r)
};

// The flat layout: for each layer, for each targeted projection in Proj order, A then B.
class LoraLayout {
 public:
  LoraLayout() = default;
  LoraLayout(const ModelSpec& spec, const LoraSpec& lora);
  const LoraSpec& spec() const { return lora_; }
  std::int64_t size() const { return size_; }  // floats in the flat buffer
  const std::vector<LoraSlot>& slots() const { return slots_; }
  // nullptr when the projection has no adapter.
  const LoraSlot* find(std::int64_t layer, Proj p) const;
  // PEFT's tensor names: base_model.model.model.layers.{i}.{module}.{proj}.lora_{A,B}.weight
  static std::string peft_name(const LoraSlot& s, char which);

 private:
  LoraSpec lora_;
  std::vector<LoraSlot> slots_;
  std::vector<std::int64_t> index_;  // layer * kProjCount + proj -> slot or -1
  std::int64_t size_ = 0;
};

// A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform_ with a = sqrt(5), as PEFT does) from a
// counter-based generator keyed by (seed, layer, proj); B = 0.
void lora_init(const LoraLayout& layout, std::uint64_t seed, float* params);

}  // namespace anvil::model
