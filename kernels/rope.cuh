// Rotary position embedding in HF's rotate-half layout, in place: for pair i < D/2,
// (x_i, x_{i+D/2}) rotated by pos * inv_freq[i] (forward) or its negative (backward).
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace anvil::kernels {

// x (n, heads, head_dim) f32; pos (n) int32; inv_freq (head_dim / 2) f32, on the device.
// `inverse`: rotate by the negative angle (the backward pass).
void rope_apply(float* x, const std::int32_t* pos, const float* inv_freq, std::int64_t n,
                std::int64_t heads, std::int64_t head_dim, bool inverse, cudaStream_t stream);

}  // namespace anvil::kernels
