#include "bias.cuh"

#include "cuda_check.cuh"
#include "launch.cuh"

namespace anvil::kernels {

namespace {

constexpr int kThreads = 256;

// Grid-stride over the m*n outputs: any shape, one launch.
__global__ void bias_add_kernel(float* y, const float* bias, std::int64_t m, std::int64_t n) {
  const std::int64_t total = m * n;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total;
       i += std::int64_t(gridDim.x) * blockDim.x)
    y[i] += bias[i % n];
}

}  // namespace

void bias_add(float* y, const float* bias, std::int64_t m, std::int64_t n, cudaStream_t stream) {
  ANVIL_CHECK(m >= 0 && n >= 0, "bias_add over (", m, ", ", n, ")");
  if (m == 0 || n == 0) return;
  const std::int64_t blocks = (m * n + kThreads - 1) / kThreads;
  const auto grid = static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
  launch(bias_add_kernel, grid, kThreads, 0, stream, y, bias, m, n);
}

}  // namespace anvil::kernels
