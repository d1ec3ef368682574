#include "cross_entropy.cuh"

#include <climits>
#include <cmath>

#include "cuda_check.cuh"
#include "launch.cuh"

namespace anvil::kernels {

namespace {

// Row kernels: one CTA per row. A vocabulary row is long (up to 128k+) and there are only
// a block of rows (tens), so a wide CTA keeps enough loads in flight per SM.
constexpr int kRowThreads = 512;
// The gradient kernel: a 2-D grid, columns by rows, so that few rows still fill the GPU.
constexpr int kGradThreads = 256;
constexpr std::int64_t kMaxGradColBlocks = 4096;
constexpr std::int64_t kMaxGridY = 65535;

static_assert(kRowThreads % 32 == 0 && kRowThreads <= 1024, "whole warps, at most 32");

struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumOp {
  __device__ double operator()(double a, double b) const { return a + b; }
};

// Block reduction in a fixed tree (shuffle-down within each warp, then warp 0 over the
// warps' results), so the result depends only on the inputs and the block size. The
// result is valid in thread 0 only. Every thread of the block must call it, once per
// kernel (the shared array is not reused).
template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T identity) {
  ANVIL_SHARED(T, warp_part, 32);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, off));
  if (lane == 0) warp_part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int n_warps = blockDim.x >> 5;
    v = lane < n_warps ? warp_part[lane] : identity;
    for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, off));
  }
  return v;
}

__global__ void row_max_kernel(float* row_max, const float* logits,
                               const std::int32_t* targets, std::int64_t V) {
  const std::int64_t row = blockIdx.x;
  // The whole block takes this branch together, before any barrier.
  if (targets[row] == kIgnoreIndex) {
    if (threadIdx.x == 0) row_max[row] = 0.0f;
    return;
  }
  const float* l = logits + row * V;
  float m = -INFINITY;
  for (std::int64_t j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, l[j]);
  m = block_reduce(m, MaxOp{}, -INFINITY);
  if (threadIdx.x == 0) row_max[row] = m;
}

__global__ void row_sums_kernel(double* sums, const float* logits, const float* row_max,
                                const std::int32_t* targets, std::int64_t rows, std::int64_t V,
                                std::int64_t first, std::int64_t vocab,
                                std::int32_t* bad_target) {
  const std::int64_t row = blockIdx.x;
  const std::int32_t target = targets[row];
  if (target == kIgnoreIndex) {
    if (threadIdx.x == 0) {
      sums[row] = 0.0;
      sums[rows + row] = 0.0;
    }
    return;
  }
  const float* l = logits + row * V;
  const float m = row_max[row];
  // As the CPU backend: each term exp in fp32 (in (0, 1]), the sum in double.
  double s = 0.0;
  for (std::int64_t j = threadIdx.x; j < V; j += blockDim.x) s += static_cast<double>(expf(l[j] - m));
  s = block_reduce(s, SumOp{}, 0.0);
  if (threadIdx.x == 0) {
    sums[row] = s;
    // Every bad row writes the same value, so concurrent writes need no ordering. A bad
    // target never indexes the shard out of bounds: it falls outside [0, V) below.
    if (target < 0 || target >= vocab) *bad_target = 1;
    const std::int64_t t = target - first;
    sums[rows + row] = t >= 0 && t < V ? static_cast<double>(l[t]) : 0.0;
  }
}

// One thread walks the rows in order, adding each row's loss straight into the running
// total as the CPU backend does, so both sum in the same order.
__global__ void loss_kernel(double* loss_acc, const float* row_max, const double* sums,
                            const std::int32_t* targets, std::int64_t rows) {
  double total = *loss_acc;
  for (std::int64_t i = 0; i < rows; ++i)
    if (targets[i] != kIgnoreIndex)
      total += static_cast<double>(row_max[i]) + log(sums[i]) - sums[rows + i];
  *loss_acc = total;
}

// In place: each element is read and written by the one thread that owns it (the target
// column's p_t comes from that thread's own read), so no element is read after another
// thread has overwritten it.
__global__ void grad_kernel(float* logits, const float* row_max, const double* sums,
                            const std::int32_t* targets, std::int64_t rows, std::int64_t V,
                            std::int64_t first, float grad_scale) {
  for (std::int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    float* l = logits + row * V;
    const std::int64_t j0 = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
    const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
    const std::int32_t target = targets[row];
    if (target == kIgnoreIndex) {
      for (std::int64_t j = j0; j < V; j += stride) l[j] = 0.0f;
      continue;
    }
    const float m = row_max[row];
    const auto inv_sum = static_cast<float>(1.0 / sums[row]);
    const std::int64_t t = target - first;
    for (std::int64_t j = j0; j < V; j += stride) {
      // __fmul_rn keeps p_t rounded before the subtraction (no fused multiply-add), as
      // the CPU backend computes it.
      const float p = __fmul_rn(expf(l[j] - m), inv_sum);
      l[j] = j == t ? (p - 1.0f) * grad_scale : p * grad_scale;
    }
  }
}

void check_rows(std::int64_t rows, std::int64_t V) {
  ANVIL_CHECK(rows >= 0 && rows <= INT_MAX, "cross-entropy rows ", rows, " outside [0, ", INT_MAX,
              "]");
  ANVIL_CHECK(V > 0, "cross-entropy needs a non-empty vocabulary block, got V = ", V);
}

}  // namespace

void cross_entropy_row_max(float* row_max, const float* logits, const std::int32_t* targets,
                           std::int64_t rows, std::int64_t V, cudaStream_t stream) {
  check_rows(rows, V);
  if (rows == 0) return;
  ANVIL_CHECK(row_max && logits && targets, "cross_entropy_row_max: null pointer");
  launch(row_max_kernel, static_cast<unsigned>(rows), kRowThreads, 0, stream, row_max, logits,
         targets, V);
}

void cross_entropy_row_sums(double* sums, const float* logits, const float* row_max,
                            const std::int32_t* targets, std::int64_t rows, std::int64_t V,
                            std::int64_t first, std::int64_t vocab, std::int32_t* bad_target,
                            cudaStream_t stream) {
  check_rows(rows, V);
  ANVIL_CHECK(first >= 0 && first + V <= vocab, "vocabulary shard [", first, ", ", first + V,
              ") outside [0, ", vocab, ")");
  if (rows == 0) return;
  ANVIL_CHECK(sums && logits && row_max && targets && bad_target,
              "cross_entropy_row_sums: null pointer");
  launch(row_sums_kernel, static_cast<unsigned>(rows), kRowThreads, 0, stream, sums, logits,
         row_max, targets, rows, V, first, vocab, bad_target);
}

void cross_entropy_loss_grad(float* logits, double* loss_acc, const float* row_max,
                             const double* sums, const std::int32_t* targets, std::int64_t rows,
                             std::int64_t V, std::int64_t first, float grad_scale, bool grad,
                             cudaStream_t stream) {
  check_rows(rows, V);
  ANVIL_CHECK(first >= 0, "vocabulary shard starts at ", first);
  if (rows == 0) return;
  ANVIL_CHECK(loss_acc && row_max && sums && targets && (!grad || logits),
              "cross_entropy_loss_grad: null pointer");
  // The loss reads only row_max and sums, never the logits, so it may run before the
  // gradient overwrites them.
  launch(loss_kernel, 1, 1, 0, stream, loss_acc, row_max, sums, targets, rows);
  if (!grad) return;
  const std::int64_t col_blocks = (V + kGradThreads - 1) / kGradThreads;
  const dim3 grid(static_cast<unsigned>(col_blocks < kMaxGradColBlocks ? col_blocks
                                                                       : kMaxGradColBlocks),
                  static_cast<unsigned>(rows < kMaxGridY ? rows : kMaxGridY));
  launch(grad_kernel, grid, kGradThreads, 0, stream, logits, row_max, sums, targets, rows, V, first,
         grad_scale);
}

}  // namespace anvil::kernels
