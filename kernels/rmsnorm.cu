// RMSNorm (see rmsnorm.cuh): a warp per row, fp32 math, as the CPU backend computes it
// (HF LlamaRMSNorm). A row is read twice (its sum, then the output); the second read is
// served by L1/L2 for the widths of these models.
#include "rmsnorm.cuh"

#include "cuda_check.cuh"
#include "launch.cuh"

namespace anvil::kernels {

namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / 32;

__device__ inline float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__global__ void rmsnorm_forward_kernel(float* out, float* rstd, const float* x,
                                       const float* w, std::int64_t n, std::int64_t c,
                                       float eps) {
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= n) return;  // a whole warp leaves together: the shuffles below stay full
  const float* xr = x + row * c;
  float ss = 0.0f;
  for (std::int64_t j = lane; j < c; j += 32) ss = fmaf(xr[j], xr[j], ss);
  ss = warp_sum(ss);
  const float r = 1.0f / sqrtf(ss / static_cast<float>(c) + eps);
  if (lane == 0) rstd[row] = r;
  float* outr = out + row * c;
  for (std::int64_t j = lane; j < c; j += 32) outr[j] = w[j] * (xr[j] * r);
}

// dx_j = r w_j dy_j - (r^3 / c) x_j sum_k dy_k w_k x_k  (+ beta dx_j); the CPU's formula.
__global__ void rmsnorm_backward_kernel(float* dx, const float* dout, const float* x,
                                        const float* w, const float* rstd,
                                        std::int64_t n, std::int64_t c, float beta) {
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= n) return;
  const float* xr = x + row * c;
  const float* gr = dout + row * c;
  float dot = 0.0f;
  for (std::int64_t j = lane; j < c; j += 32) dot = fmaf(gr[j] * w[j], xr[j], dot);
  dot = warp_sum(dot);
  const float r = rstd[row];
  const float coef = r * r * r * dot / static_cast<float>(c);
  float* dxr = dx + row * c;
  for (std::int64_t j = lane; j < c; j += 32) {
    const float g = r * w[j] * gr[j] - coef * xr[j];
    dxr[j] = beta == 0.0f ? g : g + beta * dxr[j];  // beta 0 never reads dx (may be garbage)
  }
}

unsigned blocks_for(std::int64_t n) {
  return static_cast<unsigned>((n + kRowsPerBlock - 1) / kRowsPerBlock);
}

}  // namespace

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w,
                     std::int64_t n, std::int64_t c, float eps, cudaStream_t stream) {
  ANVIL_CHECK(n >= 0 && c > 0, "rmsnorm shape n = ", n, ", c = ", c);
  if (n == 0) return;
  ANVIL_CHECK(out && rstd && x && w, "rmsnorm_forward: null buffer");
  launch(rmsnorm_forward_kernel, blocks_for(n), kThreads, 0, stream, out, rstd, x, w, n, c, eps);
}

void rmsnorm_backward(float* dx, const float* dout, const float* x, const float* w,
                      const float* rstd, std::int64_t n, std::int64_t c, float beta,
                      cudaStream_t stream) {
  ANVIL_CHECK(n >= 0 && c > 0, "rmsnorm shape n = ", n, ", c = ", c);
  if (n == 0) return;
  ANVIL_CHECK(dx && dout && x && w && rstd, "rmsnorm_backward: null buffer");
  launch(rmsnorm_backward_kernel, blocks_for(n), kThreads, 0, stream, dx, dout, x, w, rstd, n, c,
         beta);
}

}  // namespace anvil::kernels
