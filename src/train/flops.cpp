#include "train/flops.h"

namespace anvil::train {

StepFlops train_flops_per_token(const model::ModelSpec& spec, const model::LoraSpec& lora, std::int64_t seq_len,
                                bool activation_checkpointing) {
  const double L = static_cast<double>(spec.num_hidden_layers);
  const double ck = activation_checkpointing ? 1.0 : 0.0;
  double weights = 0, lora_width = 0;  // per layer: linear weights, sum of (in + out) of adapted layers
  for (int p = 0; p < model::kProjCount; ++p) {
    const auto shape = model::proj_shape(spec, static_cast<model::Proj>(p));  // (out, in)
    weights += static_cast<double>(shape[0] * shape[1]);
    if (lora.targets[static_cast<std::size_t>(p)]) lora_width += static_cast<double>(shape[0] + shape[1]);
  }
  StepFlops f;
  f.linear = (4.0 + 2.0 * ck) * L * weights;
  f.lm_head = 4.0 * static_cast<double>(spec.hidden_size) * static_cast<double>(spec.vocab_size);
  f.attention = (12.0 + 4.0 * ck) * L * static_cast<double>(seq_len) *
                static_cast<double>(spec.num_attention_heads * spec.head_dim);
  f.lora = (6.0 + 2.0 * ck) * L * static_cast<double>(lora.rank) * lora_width;
  return f;
}

}  // namespace anvil::train
