// SwiGLU: h = silu(gate) * up elementwise, and its backward.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace anvil::kernels {

void swiglu_forward(float* h, const float* gate, const float* up, std::int64_t n,
                    cudaStream_t stream);
// dgate, dup overwritten; may not alias gate/up.
void swiglu_backward(float* dgate, float* dup, const float* dh, const float* gate,
                     const float* up, std::int64_t n, cudaStream_t stream);

}  // namespace anvil::kernels
