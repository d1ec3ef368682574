// Llama 4's kernels (see llama4.cuh). NEVER RUN ON A GPU: written for sm_90a and run only
// under the CPU emulation tier (tests/emu), against the CPU backend's host loops
// (backend/llama4_ops.h).
//
// As in moe.cu, each kernel gives one thread the work of one iteration of the host loop's
// outer level (an element, a choice, a token) and keeps the host loop's inner order, so
// the results are bit for bit the CPU backend's: products that the host rounds before
// adding are written __fmul_rn/__dmul_rn + __fadd_rn/__dadd_rn, which nvcc may not fuse
// into an FMA. Two device functions may round differently from glibc's on a GPU: expf in
// the router's sigmoid and log1pf in the temperature (CUDA's are within 2 ulp, glibc's
// within 1), so a score or a temperature may differ by an ulp or two there. The emulation
// tier calls the host's expf and log1pf and so matches bit for bit.
#include "llama4.cuh"

#include "cuda_check.cuh"
#include "launch.cuh"

namespace anvil::kernels {

namespace {

using i64 = std::int64_t;

constexpr int kThreads = 256;

// Grid-stride loops: any count, one launch shape.
int grid_for(i64 n) {
  const i64 blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 65536 ? blocks : 65536);
}

__device__ inline i64 thread_index() { return blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x; }
__device__ inline i64 thread_stride() { return static_cast<i64>(gridDim.x) * blockDim.x; }

// ---- attention: one thread per output element ---------------------------------------------

__global__ void llama4_pairs_split_kernel(float* out, const float* in, i64 rows, i64 D) {
  const i64 half = D / 2;
  for (i64 idx = thread_index(); idx < rows * D; idx += thread_stride()) {
    const i64 r = idx / D, c = idx % D;  // out[r, c] from channel 2c (first half) or 2(c - half) + 1
    out[idx] = c < half ? in[r * D + 2 * c] : in[r * D + 2 * (c - half) + 1];
  }
}

__global__ void llama4_pairs_join_kernel(float* out, const float* in, i64 rows, i64 D) {
  const i64 half = D / 2;
  for (i64 idx = thread_index(); idx < rows * D; idx += thread_stride()) {
    const i64 r = idx / D, c = idx % D;  // out[r, 2i + p] = in[r, p·half + i]
    out[idx] = in[r * D + (c % 2) * half + c / 2];
  }
}

// The scale of row t is made by each of its elements' threads alike (a few flops).
__global__ void llama4_temperature_kernel(float* x, const std::int32_t* pos, i64 n, i64 width,
                                          float floor_scale, float attn_scale) {
  for (i64 idx = thread_index(); idx < n * width; idx += thread_stride()) {
    const float steps = floorf(__fdiv_rn(__fadd_rn(static_cast<float>(pos[idx / width]), 1.0f), floor_scale));
    const float s = __fadd_rn(__fmul_rn(log1pf(steps), attn_scale), 1.0f);
    x[idx] = __fmul_rn(x[idx], s);
  }
}

// ---- the sigmoid-scored experts -----------------------------------------------------------

__global__ void llama4_route_scores_kernel(const float* logits, const std::int32_t* expert, float* weight,
                                           i64 n, int E, int k) {
  for (i64 i = thread_index(); i < n * k; i += thread_stride()) {
    const float z = logits[(i / k) * E + expert[i]];
    weight[i] = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-z)));
  }
}

// Every sorted row is one choice's (row is a permutation of the n·k rows): each element is
// scaled exactly once.
__global__ void llama4_scale_rows_kernel(float* xs, const std::int32_t* row, const float* weight, i64 n, int k,
                                         i64 c) {
  for (i64 idx = thread_index(); idx < n * k * c; idx += thread_stride()) {
    const i64 i = idx / c, j = idx % c;
    float* v = xs + static_cast<i64>(row[i]) * c + j;
    *v = __fmul_rn(*v, weight[i]);
  }
}

// One thread per choice: its row's dot product with the token's input in double, in column
// order (as the host's), then the row scaled by the score. A row is one choice's alone.
__global__ void llama4_scale_backward_kernel(float* dscore, float* d_xs, const float* x, const std::int32_t* row,
                                             const float* weight, i64 n, int k, i64 c) {
  for (i64 i = thread_index(); i < n * k; i += thread_stride()) {
    float* d = d_xs + static_cast<i64>(row[i]) * c;
    const float* xt = x + (i / k) * c;
    double dot = 0.0;
    for (i64 j = 0; j < c; ++j)
      dot = __dadd_rn(dot, __dmul_rn(static_cast<double>(d[j]), static_cast<double>(xt[j])));
    dscore[i] = static_cast<float>(dot);
    const float s = weight[i];
    for (i64 j = 0; j < c; ++j) d[j] = __fmul_rn(d[j], s);
  }
}

// One thread per token: its row of E zeroed, then its choices added in choice order (the
// host's += onto 0, which turns a −0 into +0).
__global__ void llama4_router_backward_kernel(float* d_logits, const float* dscore, const std::int32_t* expert,
                                              const float* weight, i64 n, int E, int k) {
  for (i64 t = thread_index(); t < n; t += thread_stride()) {
    float* out = d_logits + t * E;
    for (int e = 0; e < E; ++e) out[e] = 0.0f;
    for (int j = 0; j < k; ++j) {
      const i64 i = t * k + j;
      const float s = weight[i];
      const float g = __fmul_rn(__fmul_rn(dscore[i], s), __fsub_rn(1.0f, s));
      out[expert[i]] = __fadd_rn(out[expert[i]], g);
    }
  }
}

void check_choices(const MoeRouteBuffers& r, i64 n, int k) {
  ANVIL_CHECK(n >= 0 && k >= 1, "Llama 4 MoE shape: n = ", n, ", k = ", k);
  ANVIL_CHECK(r.expert && r.weight && r.row, "Llama 4 MoE: null route buffer");
  ANVIL_CHECK(n * k <= INT32_MAX, "Llama 4 MoE: ", n * k, " routed rows exceed int32 row indices");
}

}  // namespace

void llama4_pairs_split(float* out, const float* in, std::int64_t rows, std::int64_t head_dim,
                        cudaStream_t stream) {
  ANVIL_CHECK(rows >= 0 && head_dim > 0 && head_dim % 2 == 0, "llama4_pairs_split: ", rows, " rows of ",
              head_dim);
  ANVIL_CHECK(rows == 0 || (out && in && out != in), "llama4_pairs_split: null or in-place buffers");
  if (rows > 0)
    launch(llama4_pairs_split_kernel, grid_for(rows * head_dim), kThreads, 0, stream, out, in, rows, head_dim);
}

void llama4_pairs_join(float* out, const float* in, std::int64_t rows, std::int64_t head_dim,
                       cudaStream_t stream) {
  ANVIL_CHECK(rows >= 0 && head_dim > 0 && head_dim % 2 == 0, "llama4_pairs_join: ", rows, " rows of ",
              head_dim);
  ANVIL_CHECK(rows == 0 || (out && in && out != in), "llama4_pairs_join: null or in-place buffers");
  if (rows > 0)
    launch(llama4_pairs_join_kernel, grid_for(rows * head_dim), kThreads, 0, stream, out, in, rows, head_dim);
}

void llama4_temperature(float* x, const std::int32_t* pos, std::int64_t n, std::int64_t width,
                        float floor_scale, float attn_scale, cudaStream_t stream) {
  ANVIL_CHECK(n >= 0 && width > 0 && (n == 0 || (x && pos)), "llama4_temperature: null buffer or ", n, " x ",
              width);
  if (n > 0)
    launch(llama4_temperature_kernel, grid_for(n * width), kThreads, 0, stream, x, pos, n, width, floor_scale,
           attn_scale);
}

void llama4_route_scores(const float* logits, const MoeRouteBuffers& r, std::int64_t n, int experts, int k,
                         cudaStream_t stream) {
  check_choices(r, n, k);
  ANVIL_CHECK(logits && experts >= k, "llama4_route_scores: null logits or ", experts, " experts for top ", k);
  if (n > 0)
    launch(llama4_route_scores_kernel, grid_for(n * k), kThreads, 0, stream, logits, r.expert, r.weight, n,
           experts, k);
}

void llama4_scale_rows(float* xs, const MoeRouteBuffers& r, std::int64_t n, int k, std::int64_t c,
                       cudaStream_t stream) {
  check_choices(r, n, k);
  ANVIL_CHECK(xs && c > 0, "llama4_scale_rows: null buffer or width ", c);
  if (n > 0) launch(llama4_scale_rows_kernel, grid_for(n * k * c), kThreads, 0, stream, xs, r.row, r.weight, n, k, c);
}

void llama4_scale_backward(float* dscore, float* d_xs, const float* x, const MoeRouteBuffers& r,
                           std::int64_t n, int k, std::int64_t c, cudaStream_t stream) {
  check_choices(r, n, k);
  ANVIL_CHECK(dscore && d_xs && x && c > 0, "llama4_scale_backward: null buffer or width ", c);
  if (n > 0)
    launch(llama4_scale_backward_kernel, grid_for(n * k), kThreads, 0, stream, dscore, d_xs, x, r.row, r.weight,
           n, k, c);
}

void llama4_router_backward(float* d_logits, const float* dscore, const MoeRouteBuffers& r, std::int64_t n,
                            int experts, int k, cudaStream_t stream) {
  check_choices(r, n, k);
  ANVIL_CHECK(d_logits && dscore && experts >= k, "llama4_router_backward: null buffer or ", experts,
              " experts for top ", k);
  if (n > 0)
    launch(llama4_router_backward_kernel, grid_for(n), kThreads, 0, stream, d_logits, dscore, r.expert, r.weight,
           n, experts, k);
}

}  // namespace anvil::kernels
