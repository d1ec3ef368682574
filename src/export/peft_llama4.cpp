#include "export/peft_llama4.h"

#include <algorithm>

#include "core/error.h"

namespace anvil::exporting {

using model::Proj;

namespace {

bool has(const model::LoraLayout& layout, Proj p) {
  return std::any_of(layout.slots().begin(), layout.slots().end(), [&](const model::LoraSlot& s) { return s.proj == p; });
}

bool gate_up_adapted(const model::LoraLayout& layout) {
  return has(layout, Proj::proj_expert_gate) || has(layout, Proj::proj_expert_up);
}

}  // namespace

std::vector<std::string> peft_llama4_target_parameters(const model::LoraLayout& layout) {
  std::vector<std::string> out;
  if (gate_up_adapted(layout)) out.push_back("feed_forward.experts.gate_up_proj");
  if (has(layout, Proj::proj_expert_down)) out.push_back("feed_forward.experts.down_proj");
  return out;
}

std::vector<FusedLora> peft_llama4_experts(const model::ModelSpec& spec, const model::LoraLayout& layout,
                                           const float* params) {
  const std::int64_t r = layout.spec().rank, E = spec.moe.num_experts;
  const std::int64_t C = spec.hidden_size, Fe = spec.moe.intermediate_size;
  const bool gate_up = gate_up_adapted(layout), down = has(layout, Proj::proj_expert_down);
  std::vector<FusedLora> out;
  for (std::int64_t l = 0; l < spec.num_hidden_layers; ++l) {
    if (!spec.layer_is_moe(l)) continue;
    const std::string experts = str_cat("base_model.model.model.layers.", l, ".feed_forward.experts.");
    if (gate_up) {
      const std::string at = experts + (down ? "base_layer." : "");
      const std::int64_t R = 2 * r;
      FusedLora a{at + "lora_A.weight", Shape{R * E, 2 * Fe}, std::vector<float>(static_cast<std::size_t>(R * E * 2 * Fe))};
      FusedLora b{at + "lora_B.weight", Shape{C, R * E}, std::vector<float>(static_cast<std::size_t>(C * R * E))};
      for (std::int64_t e = 0; e < E; ++e)
        for (std::int64_t k = 0; k < 2; ++k) {  // gate, then up
          const model::LoraSlot* s = layout.find(l, k == 0 ? Proj::proj_expert_gate : Proj::proj_expert_up, e);
          if (!s) continue;  // its blocks stay 0
          for (std::int64_t j = 0; j < r; ++j) {
            const std::int64_t row = e * R + k * r + j;  // A_e row k·r + j: B^T in columns k·fe ..
            for (std::int64_t o = 0; o < Fe; ++o)
              a.values[static_cast<std::size_t>(row * 2 * Fe + k * Fe + o)] = params[s->b_offset + o * r + j];
            for (std::int64_t c = 0; c < C; ++c)  // B_e column k·r + j: A row j
              b.values[static_cast<std::size_t>(c * R * E + (k * r + j) * E + e)] = params[s->a_offset + j * C + c];
          }
        }
      out.push_back(std::move(a));
      out.push_back(std::move(b));
    }
    if (down) {
      FusedLora a{experts + "lora_A.weight", Shape{r * E, C}, std::vector<float>(static_cast<std::size_t>(r * E * C))};
      FusedLora b{experts + "lora_B.weight", Shape{Fe, r * E}, std::vector<float>(static_cast<std::size_t>(Fe * r * E))};
      for (std::int64_t e = 0; e < E; ++e) {
        const model::LoraSlot* s = layout.find(l, Proj::proj_expert_down, e);
        ANVIL_CHECK(s != nullptr, "expert ", e, " of layer ", l, " has no down_proj adapter");
        for (std::int64_t j = 0; j < r; ++j) {
          for (std::int64_t c = 0; c < C; ++c)  // A_e = B_down^T (r, C)
            a.values[static_cast<std::size_t>((e * r + j) * C + c)] = params[s->b_offset + c * r + j];
          for (std::int64_t i = 0; i < Fe; ++i)  // B_e = A_down^T (fe, r)
            b.values[static_cast<std::size_t>(i * r * E + j * E + e)] = params[s->a_offset + j * Fe + i];
        }
      }
      out.push_back(std::move(a));
      out.push_back(std::move(b));
    }
  }
  return out;
}

}  // namespace anvil::exporting
