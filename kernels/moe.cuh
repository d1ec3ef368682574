// Mixture-of-experts routing and row moves on the device: the kernels behind the CUDA
// backend's Backend::moe_* ops, each the CPU backend's host loop (backend/moe_route.h) with
// the same order of arithmetic, so that the results are the same bits except where a
// device intrinsic rounds differently (expf in the router softmax; see moe.cu).
// NEVER RUN ON A GPU: tested under the CPU emulation tier (tests/emu) only.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace anvil::kernels {

// The largest expert count the sort takes (one thread per expert in one block).
inline constexpr int kMoeMaxExperts = 1024;

// One sparse layer's routing of n tokens with top-k (backend::MoeRoute, in device memory).
struct MoeRouteBuffers {
  float* probs = nullptr;           // (n, E) router softmax
  std::int32_t* expert = nullptr;   // (n, k) chosen experts, best first
  float* weight = nullptr;          // (n, k) combine weights
  std::int32_t* row = nullptr;      // (n, k) each choice's row in expert order
  std::int32_t* token = nullptr;    // (n·k) the token of each sorted row
  std::int64_t* offsets = nullptr;  // (E + 1) first sorted row of each expert
};

// Softmax, top-k (ties to the lower index), combine weights (renormalised over the top k
// when norm_topk), then the stable counting sort of the n·k choices by expert.
void moe_route(const float* logits, std::int64_t n, int experts, int k, bool norm_topk,
               const MoeRouteBuffers& r, cudaStream_t stream);
// xs (n·k, c) = x[token of each sorted row]
void moe_gather(float* xs, const float* x, const MoeRouteBuffers& r, std::int64_t n, int k,
                std::int64_t c, cudaStream_t stream);
// y (n, c) = Σ_j weight[t, j] · ye[row[t, j]], in choice order
void moe_combine(float* y, const float* ye, const MoeRouteBuffers& r, std::int64_t n, int k,
                 std::int64_t c, cudaStream_t stream);
// dweight (n, k) = dy · ye[row] (a double sum in column order); d_ye[row[t, j]] = weight[t, j] · dy[t]
void moe_combine_backward(float* dweight, float* d_ye, const float* dy, const float* ye,
                          const MoeRouteBuffers& r, std::int64_t n, int k, std::int64_t c,
                          cudaStream_t stream);
// dx (n, c) = Σ_j dxs[row[t, j]], in choice order
void moe_scatter(float* dx, const float* dxs, const MoeRouteBuffers& r, std::int64_t n, int k,
                 std::int64_t c, cudaStream_t stream);
// d_logits (n, E) from dweight (n, k) through the renormalisation and the softmax, plus the
// load-balancing loss's aux_grad (E, device memory; null: none) on every row's probs.
void moe_router_backward(float* d_logits, const float* dweight, const MoeRouteBuffers& r,
                         std::int64_t n, int experts, int k, bool norm_topk,
                         const double* aux_grad, cudaStream_t stream);
// count (E) += choices of each expert, prob_sum (E) += Σ_rows probs[:, e].
void moe_aux_accumulate(double* count, double* prob_sum, const MoeRouteBuffers& r,
                        std::int64_t n, int experts, int k, cudaStream_t stream);
// y (n) += x (n): the combined experts' output into the residual stream.
void moe_residual_add(float* y, const float* x, std::int64_t n, cudaStream_t stream);

}  // namespace anvil::kernels
