// Mixture-of-experts kernels (see moe.cuh). NEVER RUN ON A GPU: written for sm_90a and
// run only under the CPU emulation tier (tests/emu), against the CPU backend's host loops.
//
// Each kernel gives one thread the work of one iteration of the host loop's outer level
// (a token, a choice, an expert, an output element) and keeps the host loop's inner order,
// so the results are bit for bit the CPU backend's: products that the host rounds before
// adding are written __fmul_rn/__dmul_rn + __fadd_rn/__dadd_rn, which nvcc may not fuse into
// an FMA. The one difference on a GPU is expf in the router softmax (CUDA's is within
// 2 ulp, glibc's within 1): router probabilities then differ by a few ulps, and a top-k
// choice only where two experts' probabilities lie that close. The emulation tier calls
// the host's expf and so matches bit for bit.
//
// The sort is one block, one thread per expert (E <= 1024): each thread scans the n·k
// choices in order, staged through shared memory a chunk at a time, counting its expert's,
// then, after one thread's exclusive scan over E, placing them at its cursor. That is the
// stable (token, choice) order by construction, with no atomics: simple and exact, O(n·k)
// per thread. A multi-block sort is a later step if a profile asks for one.
#include "moe.cuh"

#include "cuda_check.cuh"
#include "launch.cuh"

namespace anvil::kernels {

namespace {

using i64 = std::int64_t;

constexpr int kThreads = 256;
constexpr int kSortChunk = 2048;  // choices staged in shared memory per pass of the sort

// Grid-stride loops: any count, one launch shape.
int grid_for(i64 n) {
  const i64 blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 65536 ? blocks : 65536);
}

__device__ inline i64 thread_index() { return blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x; }
__device__ inline i64 thread_stride() { return static_cast<i64>(gridDim.x) * blockDim.x; }

// ---- routing: one thread per token --------------------------------------------------------

__global__ void moe_topk_kernel(const float* logits, MoeRouteBuffers r, i64 n, int E, int k,
                                bool norm_topk) {
  for (i64 t = thread_index(); t < n; t += thread_stride()) {
    const float* x = logits + t * E;  // (E)
    float* p = r.probs + t * E;       // (E)
    float mx = x[0];
    for (int e = 1; e < E; ++e) mx = mx < x[e] ? x[e] : mx;  // std::max's choice
    float sum = 0.0f;
    for (int e = 0; e < E; ++e) {
      p[e] = expf(x[e] - mx);
      sum += p[e];
    }
    for (int e = 0; e < E; ++e) p[e] = __fdiv_rn(p[e], sum);
    // The k largest, best first; a tie goes to the lower index (the first met).
    std::int32_t* ex = r.expert + t * k;  // (k)
    for (int j = 0; j < k; ++j) {
      int best = -1;
      for (int e = 0; e < E; ++e) {
        bool taken = false;
        for (int i = 0; i < j; ++i) taken = taken || ex[i] == e;
        if (taken) continue;
        if (best < 0 || p[e] > p[best]) best = e;
      }
      ex[j] = best;
    }
    float top = 0.0f;
    for (int j = 0; j < k; ++j) top += p[ex[j]];
    for (int j = 0; j < k; ++j) r.weight[t * k + j] = norm_topk ? __fdiv_rn(p[ex[j]], top) : p[ex[j]];
  }
}

// The stable counting sort of the n·k choices by expert: one block, thread e owns expert e.
__global__ void moe_sort_kernel(MoeRouteBuffers r, i64 choices, int E, int k) {
  ANVIL_SHARED(std::int32_t, chunk, kSortChunk);
  ANVIL_SHARED(i64, start, kMoeMaxExperts);
  const int e = static_cast<int>(threadIdx.x);
  // Counts: every thread reads every staged choice (a shared-memory broadcast).
  i64 count = 0;
  for (i64 c0 = 0; c0 < choices; c0 += kSortChunk) {
    const i64 len = choices - c0 < kSortChunk ? choices - c0 : kSortChunk;
    for (i64 i = threadIdx.x; i < len; i += blockDim.x) chunk[i] = r.expert[c0 + i];
    __syncthreads();
    if (e < E)
      for (i64 i = 0; i < len; ++i) count += chunk[i] == e;
    __syncthreads();
  }
  if (e < E) start[e] = count;
  __syncthreads();
  if (threadIdx.x == 0) {  // exclusive scan over E, in expert order
    i64 run = 0;
    for (int x = 0; x < E; ++x) {
      const i64 c = start[x];
      start[x] = run;
      r.offsets[x] = run;
      run += c;
    }
    r.offsets[E] = run;
  }
  __syncthreads();
  // Placement in (token, choice) order: the row of each choice and the token of each row.
  i64 cursor = e < E ? start[e] : 0;
  for (i64 c0 = 0; c0 < choices; c0 += kSortChunk) {
    const i64 len = choices - c0 < kSortChunk ? choices - c0 : kSortChunk;
    for (i64 i = threadIdx.x; i < len; i += blockDim.x) chunk[i] = r.expert[c0 + i];
    __syncthreads();
    if (e < E)
      for (i64 i = 0; i < len; ++i) {
        if (chunk[i] != e) continue;
        r.row[c0 + i] = static_cast<std::int32_t>(cursor);
        r.token[cursor] = static_cast<std::int32_t>((c0 + i) / k);
        ++cursor;
      }
    __syncthreads();
  }
}

// ---- row moves: one thread per output element ---------------------------------------------

__global__ void moe_gather_kernel(float* xs, const float* x, const std::int32_t* token, i64 rows, i64 c) {
  for (i64 idx = thread_index(); idx < rows * c; idx += thread_stride()) {
    const i64 row = idx / c, i = idx % c;
    xs[idx] = x[token[row] * c + i];
  }
}

__global__ void moe_combine_kernel(float* y, const float* ye, const float* weight, const std::int32_t* row,
                                   i64 n, int k, i64 c) {
  for (i64 idx = thread_index(); idx < n * c; idx += thread_stride()) {
    const i64 t = idx / c, i = idx % c;
    float out = 0.0f;
    for (int j = 0; j < k; ++j)
      out = __fadd_rn(out, __fmul_rn(weight[t * k + j], ye[static_cast<i64>(row[t * k + j]) * c + i]));
    y[idx] = out;
  }
}

// One thread per choice: the dot product in double, in column order (as the host's).
__global__ void moe_combine_dweight_kernel(float* dweight, const float* dy, const float* ye,
                                           const std::int32_t* row, i64 n, int k, i64 c) {
  for (i64 tj = thread_index(); tj < n * k; tj += thread_stride()) {
    const float* g = dy + (tj / k) * c;
    const float* src = ye + static_cast<i64>(row[tj]) * c;
    double dot = 0.0;
    for (i64 i = 0; i < c; ++i)
      dot = __dadd_rn(dot, __dmul_rn(static_cast<double>(g[i]), static_cast<double>(src[i])));
    dweight[tj] = static_cast<float>(dot);
  }
}

__global__ void moe_combine_dye_kernel(float* d_ye, const float* dy, const float* weight,
                                       const std::int32_t* row, i64 n, int k, i64 c) {
  for (i64 idx = thread_index(); idx < n * k * c; idx += thread_stride()) {
    const i64 tj = idx / c, i = idx % c;
    d_ye[static_cast<i64>(row[tj]) * c + i] = weight[tj] * dy[(tj / k) * c + i];
  }
}

__global__ void moe_scatter_kernel(float* dx, const float* dxs, const std::int32_t* row, i64 n, int k, i64 c) {
  for (i64 idx = thread_index(); idx < n * c; idx += thread_stride()) {
    const i64 t = idx / c, i = idx % c;
    float out = 0.0f;
    for (int j = 0; j < k; ++j) out += dxs[static_cast<i64>(row[t * k + j]) * c + i];
    dx[idx] = out;
  }
}

// ---- router backward: one thread per token, in double -------------------------------------

__global__ void moe_router_backward_kernel(float* d_logits, const float* dweight, MoeRouteBuffers r, i64 n,
                                           int E, int k, bool norm_topk, const double* aux_grad) {
  for (i64 t = thread_index(); t < n; t += thread_stride()) {
    const float* p = r.probs + t * E;
    const std::int32_t* ex = r.expert + t * k;
    const float* dw = dweight + t * k;
    // w_j = p_j / S with S = Σ_top p: dL/dp_j = (dw_j − Σ_i dw_i w_i) / S; else dL/dp_j = dw_j.
    double s = 1.0, dot = 0.0;
    if (norm_topk) {
      s = 0.0;
      for (int j = 0; j < k; ++j) s += p[ex[j]];
      for (int j = 0; j < k; ++j)
        dot = __dadd_rn(dot, __dmul_rn(static_cast<double>(dw[j]), static_cast<double>(r.weight[t * k + j])));
    }
    auto dp = [&](int e) {  // dL/dprobs[e]: the aux share, then each choice of e in order
      double v = aux_grad ? aux_grad[e] : 0.0;
      for (int j = 0; j < k; ++j)
        if (ex[j] == e) v += norm_topk ? (dw[j] - dot) / s : static_cast<double>(dw[j]);
      return v;
    };
    double mean = 0.0;  // softmax: dlogit_e = p_e (dp_e − Σ_i p_i dp_i)
    for (int e = 0; e < E; ++e) mean = __dadd_rn(mean, __dmul_rn(static_cast<double>(p[e]), dp(e)));
    for (int e = 0; e < E; ++e) d_logits[t * E + e] = static_cast<float>(p[e] * (dp(e) - mean));
  }
}

// One thread per expert: its count and its column of probabilities, in row order.
__global__ void moe_aux_kernel(double* count, double* prob_sum, MoeRouteBuffers r, i64 n, int E, int k) {
  const i64 e = thread_index();
  if (e >= E) return;
  double c = count[e];
  for (i64 i = 0; i < n * k; ++i)
    if (r.expert[i] == e) c += 1.0;
  count[e] = c;
  double s = prob_sum[e];
  for (i64 t = 0; t < n; ++t) s += r.probs[t * E + e];
  prob_sum[e] = s;
}

__global__ void moe_residual_add_kernel(float* y, const float* x, i64 n) {
  for (i64 i = thread_index(); i < n; i += thread_stride()) y[i] += x[i];
}

void check_route(const MoeRouteBuffers& r, i64 n, int k) {
  ANVIL_CHECK(n >= 0 && k >= 1, "MoE shape: n = ", n, ", k = ", k);
  ANVIL_CHECK(r.probs && r.expert && r.weight && r.row && r.token && r.offsets, "MoE route: null buffer");
  ANVIL_CHECK(n * k <= INT32_MAX, "MoE: ", n * k, " routed rows exceed int32 row indices");
}

}  // namespace

void moe_route(const float* logits, std::int64_t n, int experts, int k, bool norm_topk,
               const MoeRouteBuffers& r, cudaStream_t stream) {
  check_route(r, n, k);
  ANVIL_CHECK(experts >= k && experts <= kMoeMaxExperts, "MoE routing: ", experts, " experts, top ", k,
              " (at most ", kMoeMaxExperts, " experts)");
  ANVIL_CHECK(logits, "moe_route: null logits");
  if (n > 0) launch(moe_topk_kernel, grid_for(n), kThreads, 0, stream, logits, r, n, experts, k, norm_topk);
  const int threads = (experts + 31) / 32 * 32;  // one per expert, whole warps
  launch(moe_sort_kernel, 1, threads, 0, stream, r, n * k, experts, k);
}

void moe_gather(float* xs, const float* x, const MoeRouteBuffers& r, std::int64_t n, int k,
                std::int64_t c, cudaStream_t stream) {
  check_route(r, n, k);
  ANVIL_CHECK(xs && x && c > 0, "moe_gather: null buffer or width ", c);
  if (n > 0) launch(moe_gather_kernel, grid_for(n * k * c), kThreads, 0, stream, xs, x, r.token, n * k, c);
}

void moe_combine(float* y, const float* ye, const MoeRouteBuffers& r, std::int64_t n, int k,
                 std::int64_t c, cudaStream_t stream) {
  check_route(r, n, k);
  ANVIL_CHECK(y && ye && c > 0, "moe_combine: null buffer or width ", c);
  if (n > 0) launch(moe_combine_kernel, grid_for(n * c), kThreads, 0, stream, y, ye, r.weight, r.row, n, k, c);
}

void moe_combine_backward(float* dweight, float* d_ye, const float* dy, const float* ye,
                          const MoeRouteBuffers& r, std::int64_t n, int k, std::int64_t c,
                          cudaStream_t stream) {
  check_route(r, n, k);
  ANVIL_CHECK(dweight && d_ye && dy && ye && c > 0, "moe_combine_backward: null buffer or width ", c);
  if (n == 0) return;
  launch(moe_combine_dweight_kernel, grid_for(n * k), kThreads, 0, stream, dweight, dy, ye, r.row, n, k, c);
  launch(moe_combine_dye_kernel, grid_for(n * k * c), kThreads, 0, stream, d_ye, dy, r.weight, r.row, n, k, c);
}

void moe_scatter(float* dx, const float* dxs, const MoeRouteBuffers& r, std::int64_t n, int k,
                 std::int64_t c, cudaStream_t stream) {
  check_route(r, n, k);
  ANVIL_CHECK(dx && dxs && c > 0, "moe_scatter: null buffer or width ", c);
  if (n > 0) launch(moe_scatter_kernel, grid_for(n * c), kThreads, 0, stream, dx, dxs, r.row, n, k, c);
}

void moe_router_backward(float* d_logits, const float* dweight, const MoeRouteBuffers& r,
                         std::int64_t n, int experts, int k, bool norm_topk,
                         const double* aux_grad, cudaStream_t stream) {
  check_route(r, n, k);
  ANVIL_CHECK(d_logits && dweight && experts >= k, "moe_router_backward: null buffer or ", experts,
              " experts for top ", k);
  if (n > 0)
    launch(moe_router_backward_kernel, grid_for(n), kThreads, 0, stream, d_logits, dweight, r, n, experts, k,
           norm_topk, aux_grad);
}

void moe_aux_accumulate(double* count, double* prob_sum, const MoeRouteBuffers& r,
                        std::int64_t n, int experts, int k, cudaStream_t stream) {
  check_route(r, n, k);
  ANVIL_CHECK(count && prob_sum && experts >= 1, "moe_aux_accumulate: null buffer or ", experts, " experts");
  launch(moe_aux_kernel, (experts + 63) / 64, 64, 0, stream, count, prob_sum, r, n, experts, k);
}

void moe_residual_add(float* y, const float* x, std::int64_t n, cudaStream_t stream) {
  ANVIL_CHECK(n >= 0 && (n == 0 || (y && x)), "moe_residual_add: null buffer or n = ", n);
  if (n > 0) launch(moe_residual_add_kernel, grid_for(n), kThreads, 0, stream, y, x, n);
}

}  // namespace anvil::kernels
