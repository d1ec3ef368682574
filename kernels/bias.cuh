// Bias of a linear layer, added after the cuBLASLt product (a separate pass keeps the
// product's `beta` accumulation and the bias independent of each other).
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace anvil::kernels {

// y (m, n) += bias (n), row-major.
void bias_add(float* y, const float* bias, std::int64_t m, std::int64_t n, cudaStream_t stream);

}  // namespace anvil::kernels
