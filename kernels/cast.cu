#include "cast.cuh"

#include <cuda_bf16.h>

#include "cuda_check.cuh"
#include "launch.cuh"

namespace anvil::kernels {

namespace {
constexpr int kThreads = 256;

// Grid-stride loops: any n, one launch shape.
__global__ void cast_f32_to_bf16_kernel(__nv_bfloat16* dst, const float* src, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x)
    dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void cast_bf16_to_f32_kernel(float* dst, const __nv_bfloat16* src, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x)
    dst[i] = __bfloat162float(src[i]);
}

int grid_for(std::int64_t n) {
  const std::int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 65536 ? (blocks > 0 ? blocks : 1) : 65536);
}
}  // namespace

void cast_f32_to_bf16(std::uint16_t* dst, const float* src, std::int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  launch(cast_f32_to_bf16_kernel, grid_for(n), kThreads, 0, stream,
         reinterpret_cast<__nv_bfloat16*>(dst), src, n);
}

void cast_bf16_to_f32(float* dst, const std::uint16_t* src, std::int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  launch(cast_bf16_to_f32_kernel, grid_for(n), kThreads, 0, stream, dst,
         reinterpret_cast<const __nv_bfloat16*>(src), n);
}

}  // namespace anvil::kernels
