// Llama 4's routed-expert adapters in PEFT's target_parameters form (PEFT >= 0.17; written
// and checked against 0.21.2). transformers fuses the experts into two 3-D parameters per
// sparse layer, gate_up_proj (E, C, 2fe) and down_proj (E, fe, C), both x·W. PEFT adapts a
// 3-D parameter (E, d1, d2) as one LoRA of rank R per expert, delta[e] = B_e A_e (d1, d2)
// (it reads the parameter as (experts, out, in): Llama4TextExperts has no is_transposed),
// stored flat:
//   lora_A (R·E, d2): rows e·R .. e·R + R - 1 are expert e's A
//   lora_B (d1, R·E): column k·E + e is column k of expert e's B
// anvil's nn.Linear-form adapters, transposed into that:
//   gate_up: delta[e] = [(B_g A_g)^T, (B_u A_u)^T] = [A_g^T, A_u^T] · blockdiag(B_g^T, B_u^T),
//     R = 2r with alpha 2·alpha (rank_pattern, alpha_pattern): the scale stays alpha / r
//   down: delta[e] = (B_d A_d)^T = A_d^T · B_d^T, R = r
// exactly anvil's separate gate, up and down adapters. Names:
// base_model.model.model.layers.L.feed_forward.experts[.base_layer].lora_{A,B}.weight, the
// first targeted parameter innermost (base_layer) when both are adapted.
#pragma once

#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/lora.h"

namespace anvil::exporting {

struct FusedLora {
  std::string name;
  Shape shape;
  std::vector<float> values;
};

// The fused tensors of every sparse layer's expert adapters in `layout` (empty: none),
// and the adapter_config.json keys they need (target_parameters, rank_pattern, alpha_pattern).
std::vector<FusedLora> peft_llama4_experts(const model::ModelSpec& spec, const model::LoraLayout& layout,
                                           const float* params);
std::vector<std::string> peft_llama4_target_parameters(const model::LoraLayout& layout);

}  // namespace anvil::exporting
