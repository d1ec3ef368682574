// Llama 4's steps on the device: the kernels behind the CUDA backend's Backend::llama4_*
// ops, each the CPU backend's host loop (backend/llama4_ops.h) with the same order of
// arithmetic, so that the results are the same bits except where a device intrinsic rounds
// differently (expf in the router's sigmoid, log1pf in the temperature; see llama4.cu).
// NEVER RUN ON A GPU: tested under the CPU emulation tier (tests/emu) only.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

#include "moe.cuh"

namespace anvil::kernels {

// out (rows, D) with each head's channel 2i at i and 2i+1 at D/2 + i; join undoes it.
void llama4_pairs_split(float* out, const float* in, std::int64_t rows, std::int64_t head_dim,
                        cudaStream_t stream);
void llama4_pairs_join(float* out, const float* in, std::int64_t rows, std::int64_t head_dim,
                       cudaStream_t stream);
// x (n, width) row t *= 1 + attn_scale · log1pf(floorf((pos[t] + 1) / floor_scale)).
void llama4_temperature(float* x, const std::int32_t* pos, std::int64_t n, std::int64_t width,
                        float floor_scale, float attn_scale, cudaStream_t stream);
// weight (n, k) = sigmoid(logits[t, expert[t, j]]).
void llama4_route_scores(const float* logits, const MoeRouteBuffers& r, std::int64_t n, int experts, int k,
                         cudaStream_t stream);
// xs[row[t, j]] (c) *= weight[t, j].
void llama4_scale_rows(float* xs, const MoeRouteBuffers& r, std::int64_t n, int k, std::int64_t c,
                       cudaStream_t stream);
// dscore (n, k) = d_xs[row] · x[t] (a double sum in column order), then d_xs[row] *= weight.
void llama4_scale_backward(float* dscore, float* d_xs, const float* x, const MoeRouteBuffers& r,
                           std::int64_t n, int k, std::int64_t c, cudaStream_t stream);
// d_logits (n, E): dscore · s (1 − s) at the chosen experts, 0 elsewhere.
void llama4_router_backward(float* d_logits, const float* dscore, const MoeRouteBuffers& r, std::int64_t n,
                            int experts, int k, cudaStream_t stream);

}  // namespace anvil::kernels
