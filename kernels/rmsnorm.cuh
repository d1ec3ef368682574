// RMSNorm over rows: out = x / sqrt(mean(x^2) + eps) * w, and its backward.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace anvil::kernels {

// x, out (n, c) f32; w (c) f32 (norm weights stay f32, as the loader gives them); rstd (n) saved for backward.
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w,
                     std::int64_t n, std::int64_t c, float eps, cudaStream_t stream);
// dx (n, c) = d/dx + beta * dx. Weight gradients are not made (the base is frozen).
void rmsnorm_backward(float* dx, const float* dout, const float* x, const float* w,
                      const float* rstd, std::int64_t n, std::int64_t c, float beta,
                      cudaStream_t stream);

}  // namespace anvil::kernels
