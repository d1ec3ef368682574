// Element-wise dtype casts between fp32 masters and bf16 storage.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace anvil::kernels {

// dst[i] = bf16(src[i]), round to nearest even (as anvil::f32_to_bf16 on the CPU).
void cast_f32_to_bf16(std::uint16_t* dst, const float* src, std::int64_t n, cudaStream_t stream);
// dst[i] = float(src[i]), exact.
void cast_bf16_to_f32(float* dst, const std::uint16_t* src, std::int64_t n, cudaStream_t stream);

}  // namespace anvil::kernels
