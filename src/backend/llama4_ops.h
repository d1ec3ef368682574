// Llama 4's text-model steps that anvil's other models lack (model/model_spec.h,
// Llama4Spec), as host loops over host memory: the CPU backend's Backend::llama4_* ops call
// them, and the CUDA kernels (kernels/llama4.cu) are tested against them, as moe_route.h's
// loops are for the MoE routing.
//
// Attention (iRoPE): HF rotates adjacent channel pairs (2i, 2i+1) of each head; the
// backend's RoPE rotates the pair (i, i + D/2). Splitting each head's pairs into halves
// (pairs_split) makes one the other, and q·k is unchanged when q and k are permuted alike,
// so the attention needs no inverse; only the gradients go back (pairs_join).
//
// MoE: a token's routed input is x · sigmoid(logit_e) for each of its top-k experts e and
// their outputs are summed with weight 1 (moe_scatter's sum, in choice order):
//   y = Σ_j expert_j(s_j x),  s_j = sigmoid(logit_j)
//   dL/ds_j = dL/d(s_j x) · x,  dL/dlogit_j = dL/ds_j · s_j (1 − s_j)
#pragma once

#include <cstdint>

#include "backend/moe_route.h"

namespace anvil::backend {

// out (rows, D) with each head's channel 2i at i and 2i+1 at D/2 + i; join undoes it.
void llama4_pairs_split(float* out, const float* in, std::int64_t rows, std::int64_t head_dim);
void llama4_pairs_join(float* out, const float* in, std::int64_t rows, std::int64_t head_dim);

// x (n, width) row t *= 1 + attn_scale · log1p(floor((pos_t + 1) / floor_scale)), in fp32
// as HF computes it: the NoPE layers' temperature on q (forward), and on dL/dq (backward).
void llama4_temperature(float* x, const std::int32_t* positions, std::int64_t n, std::int64_t width,
                        float floor_scale, float attn_scale);

// After moe_route (its softmax picks the same top-k as the logits): the weights become the
// sigmoid of each chosen expert's logit, (n, k).
void llama4_route_scores(const float* logits, const MoeRoute& r, std::int64_t n, std::int64_t experts,
                         std::int64_t k);
// xs (n·k, c) rows in expert order *= their token's score for that expert.
void llama4_scale_rows(float* xs, const MoeRoute& r, std::int64_t n, std::int64_t k, std::int64_t c);
// From d_xs (n·k, c), the gradient of the scaled rows, and x (n, c) the unscaled input:
// dscore (n, k) = d_xs[row] · x[t] (a double sum in column order), then d_xs[row] *= score
// (the input's share).
void llama4_scale_backward(float* dscore, float* d_xs, const float* x, const MoeRoute& r, std::int64_t n,
                           std::int64_t k, std::int64_t c);
// d_logits (n, E): dscore · s (1 − s) at the chosen experts, 0 elsewhere.
void llama4_router_backward(float* d_logits, const float* dscore, const MoeRoute& r, std::int64_t n,
                            std::int64_t experts, std::int64_t k);

}  // namespace anvil::backend
