#include "optim.cuh"

#include <cmath>

#include "cuda_check.cuh"
#include "launch.cuh"

namespace anvil::kernels {

namespace {

constexpr int kThreads = 256;
// sum_squares: pass 1 uses at most this many blocks (one partial each); pass 2 is one
// block summing them. The block count depends only on n, so the tree, and therefore the
// rounding, is the same on every call.
constexpr std::int64_t kMaxPartials = 1024;
constexpr std::int64_t kItemsPerThread = 8;  // before a block is worth adding

int grid_for(std::int64_t n) {
  const std::int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 65536 ? (blocks > 0 ? blocks : 1) : 65536);
}

std::int64_t sum_squares_blocks(std::int64_t n) {
  const std::int64_t blocks = (n + kThreads * kItemsPerThread - 1) / (kThreads * kItemsPerThread);
  return blocks < 1 ? 1 : (blocks > kMaxPartials ? kMaxPartials : blocks);
}

// Fixed-tree block sum (shuffle-down within each warp, then warp 0 over the warps); the
// result is valid in thread 0. Every thread of the block calls it, once per kernel.
__device__ double block_sum(double v) {
  ANVIL_SHARED(double, warp_part, 32);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  if (lane == 0) warp_part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x >> 5) ? warp_part[lane] : 0.0;
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  }
  return v;
}
static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps, at most 32");

__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, std::int64_t n,
                             AdamwScalars s) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    float pi = p[i], mi = m[i], vi = v[i];
    adamw_apply(pi, g[i], mi, vi, s);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
  }
}

__global__ void sum_squares_partial_kernel(double* partial, const float* x, std::int64_t n) {
  double s = 0.0;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const auto xi = static_cast<double>(x[i]);
    s += xi * xi;
  }
  s = block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void sum_squares_final_kernel(double* out, const double* partial, std::int64_t count) {
  double s = 0.0;
  for (std::int64_t i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
  s = block_sum(s);
  if (threadIdx.x == 0) *out = s;
}

__global__ void scale_kernel(float* x, float s, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x)
    x[i] *= s;
}

}  // namespace

AdamwScalars adamw_scalars(const AdamwParams& a) {
  ANVIL_CHECK(a.step >= 1, "AdamW step is 1-based, got ", a.step);
  const double lr = a.lr, b1 = a.beta1, b2 = a.beta2;
  const auto t = static_cast<double>(a.step);
  AdamwScalars s;
  s.decay = static_cast<float>(1.0 - lr * static_cast<double>(a.weight_decay));
  s.c1 = static_cast<float>(1.0 - b1);
  s.c2 = static_cast<float>(1.0 - b2);
  s.step_size = static_cast<float>(lr / (1.0 - std::pow(b1, t)));
  s.bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(b2, t)));
  s.beta1 = a.beta1;
  s.beta2 = a.beta2;
  s.eps = a.eps;
  return s;
}

void adamw_update(float* p, const float* g, float* m, float* v, std::int64_t n,
                  const AdamwParams& a, cudaStream_t stream) {
  ANVIL_CHECK(n >= 0, "AdamW over ", n, " parameters");
  const AdamwScalars s = adamw_scalars(a);
  if (n == 0) return;
  ANVIL_CHECK(p && g && m && v, "adamw_update: null pointer");
  launch(adamw_kernel, grid_for(n), kThreads, 0, stream, p, g, m, v, n, s);
}

std::size_t sum_squares_workspace_bytes(std::int64_t n) {
  ANVIL_CHECK(n >= 0, "sum_squares over ", n, " values");
  return static_cast<std::size_t>(sum_squares_blocks(n)) * sizeof(double);
}

void sum_squares(double* out, const float* x, std::int64_t n, void* workspace,
                 cudaStream_t stream) {
  ANVIL_CHECK(n >= 0, "sum_squares over ", n, " values");
  ANVIL_CHECK(out, "sum_squares: null output");
  if (n == 0) {
    CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(double), stream));  // +0.0 is all zero bits
    return;
  }
  ANVIL_CHECK(x && workspace, "sum_squares: null pointer");
  const std::int64_t blocks = sum_squares_blocks(n);
  auto* partial = static_cast<double*>(workspace);
  launch(sum_squares_partial_kernel, static_cast<unsigned>(blocks), kThreads, 0, stream, partial, x,
         n);
  launch(sum_squares_final_kernel, 1, kThreads, 0, stream, out, partial, blocks);
}

void scale(float* x, float s, std::int64_t n, cudaStream_t stream) {
  ANVIL_CHECK(n >= 0, "scale over ", n, " values");
  if (n == 0) return;
  ANVIL_CHECK(x, "scale: null pointer");
  launch(scale_kernel, grid_for(n), kThreads, 0, stream, x, s, n);
}

}  // namespace anvil::kernels
