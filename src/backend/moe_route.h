// The router of a mixture-of-experts layer (Qwen3-MoE, Mixtral) and the bookkeeping that
// makes the expert computation dropless and deterministic: every token's top-k choices are
// sorted by expert (counting sort, stable in (token, choice) order), so each expert runs
// one GEMM over a contiguous block of rows, and the combine adds a token's k expert
// outputs back in choice order.
//
//   probs = softmax(logits)           top-k of probs, ties to the lower expert index
//   weight_j = p_j / Σ_top p  (norm_topk_prob)  or  p_j
//   aux (transformers' load_balancing_loss_func, no mask, over every sparse layer's rows R):
//     aux = E · Σ_e (count_e / R) · (Σ_rows p_e / R)
//
// The functions here are host loops over host memory: the CPU backend's MoE ops
// (Backend::moe_*) call them, and the CUDA kernels (kernels/moe.cu) are tested against them.
#pragma once

#include <cstdint>

namespace anvil::backend {

// One sparse layer's routing of n tokens, in backend memory. Every pointer is n·k long
// unless stated.
struct MoeRoute {
  float* probs = nullptr;          // (n, E) router softmax
  std::int32_t* expert = nullptr;  // (n, k) chosen experts, best first
  float* weight = nullptr;         // (n, k) combine weights
  std::int32_t* row = nullptr;     // (n, k) each choice's row in the expert-sorted order
  std::int32_t* token = nullptr;   // (n·k) the token of each sorted row
  std::int64_t* offsets = nullptr;  // (E + 1) first sorted row of each expert
};

// Routes n tokens from their router logits (n, E).
void moe_route(const float* logits, std::int64_t n, std::int64_t experts, std::int64_t k, bool norm_topk,
               const MoeRoute& r);

// d_logits (n, E) from dweight (n, k), the gradient of the combine weights, plus, when
// aux_grad (E) is not null, dL/dprobs[:, e] += aux_grad[e] for every row (the
// load-balancing loss's gradient, the same for every row of every sparse layer).
void moe_router_backward(float* d_logits, const float* dweight, const MoeRoute& r, std::int64_t n,
                         std::int64_t experts, std::int64_t k, bool norm_topk, const double* aux_grad);

// The load-balancing loss's statistics, accumulated over sparse layers: count[e] += choices
// of expert e, prob_sum[e] += Σ_rows probs[:, e] (both E long).
void moe_aux_accumulate(double* count, double* prob_sum, const MoeRoute& r, std::int64_t n,
                        std::int64_t experts, std::int64_t k);

// The row moves around the experts' GEMMs (n tokens, k choices, width c):
// xs (n·k, c) = x[token of each sorted row]
void moe_gather(float* xs, const float* x, const MoeRoute& r, std::int64_t n, std::int64_t k, std::int64_t c);
// y (n, c) = Σ_j weight[t, j] · ye[row[t, j]], in choice order
void moe_combine(float* y, const float* ye, const MoeRoute& r, std::int64_t n, std::int64_t k, std::int64_t c);
// The combine's backward from dy (n, c): dweight (n, k) = dy · ye[row] and
// d_ye[row[t, j]] = weight[t, j] · dy[t]
void moe_combine_backward(float* dweight, float* d_ye, const float* dy, const float* ye, const MoeRoute& r,
                          std::int64_t n, std::int64_t k, std::int64_t c);
// dx (n, c) = Σ_j dxs[row[t, j]], in choice order (the gather's backward)
void moe_scatter(float* dx, const float* dxs, const MoeRoute& r, std::int64_t n, std::int64_t k, std::int64_t c);

}  // namespace anvil::backend
