// Floating-point operations of one LoRA training step: the numerator of MFU in
// metrics.jsonl and of the planner's step time (anvil validate --world N --gpu ...).
//
// Counted per token, as Megatron-LM and PaLM count them (2 FLOPs a multiply-add, the full
// T x T attention score matrix, no credit for causal skipping):
//   frozen linear layers   forward 2 N, backward 2 N (input gradients only: no weight
//                          gradients for frozen weights), recompute +2 N with activation
//                          checkpointing; N = the linear weights of the blocks
//   LM head                forward 2 C V, backward 2 C V (never recomputed)
//   attention              QK^T and PV: forward 4 L T Hq D, backward twice that,
//                          recompute +4 L T Hq D
//   LoRA                   per adapted layer: forward 2 r (in + out), backward 4 r (in +
//                          out) (input and weight gradients), recompute +2 r (in + out)
// Norms, RoPE, softmax and the optimizer are left out (under 1% for these models).
#pragma once

#include <cstdint>

#include "model/lora.h"
#include "model/model_spec.h"

namespace anvil::train {

struct StepFlops {
  double linear = 0, lm_head = 0, attention = 0, lora = 0;
  double total() const { return linear + lm_head + attention + lora; }
};

// Per token of a sequence of `seq_len` tokens, for the whole model (all TP ranks together).
StepFlops train_flops_per_token(const model::ModelSpec& spec, const model::LoraSpec& lora, std::int64_t seq_len,
                                bool activation_checkpointing);

}  // namespace anvil::train
