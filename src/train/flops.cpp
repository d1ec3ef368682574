#include "train/flops.h"

namespace anvil::train {

StepFlops train_flops_per_token(const model::ModelSpec& spec, const model::LoraSpec& lora, std::int64_t seq_len,
                                bool activation_checkpointing) {
  const double L = static_cast<double>(spec.num_hidden_layers);
  const double ck = activation_checkpointing ? 1.0 : 0.0;
  // Summed over layers, what one token multiplies: linear weights and the (in + out) widths
  // of adapted layers. A sparse layer counts its router and top_k experts (active
  // parameters), a dense layer its MLP.
  double weights = 0, lora_width = 0;
  for (std::int64_t l = 0; l < spec.num_hidden_layers; ++l) {
    const bool sparse = spec.layer_is_moe(l);
    for (int p = 0; p < model::kProjCount; ++p) {
      const auto proj = static_cast<model::Proj>(p);
      const bool used = model::proj_is_expert(proj) ? sparse : proj < model::Proj::proj_gate || spec.layer_has_mlp(l);
      if (!used) continue;
      const auto shape = model::proj_shape_at(spec, l, proj);  // (out, in)
      const double times = model::proj_is_expert(proj) ? static_cast<double>(spec.moe.top_k) : 1.0;
      weights += times * static_cast<double>(shape[0] * shape[1]);
      if (lora.targets[static_cast<std::size_t>(p)]) lora_width += times * static_cast<double>(shape[0] + shape[1]);
    }
    if (sparse) weights += static_cast<double>(spec.moe.num_experts * spec.hidden_size);  // the router
  }
  StepFlops f;
  f.linear = (4.0 + 2.0 * ck) * weights;
  f.lm_head = 4.0 * static_cast<double>(spec.hidden_size) * static_cast<double>(spec.vocab_size);
  f.attention = (12.0 + 4.0 * ck) * L * static_cast<double>(seq_len) *
                static_cast<double>(spec.num_attention_heads * spec.head_dim);
  f.lora = (6.0 + 2.0 * ck) * static_cast<double>(lora.rank) * lora_width;
  return f;
}

}  // namespace anvil::train
