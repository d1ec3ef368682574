// LoRA kernels (see lora.cuh). Three kernel shapes carry the forward and the backward:
//   narrow: out(n, r) = alpha * drop(X)(n, K) W^T           lora_down; g = scale * dy B
//   reduce: part[s](M, r) = sum_{rows i of split s} drop(X)[i, m] G[i, c]    db; da
//   wide:   Y(n, M) += alpha * mask(G(n, r) W(M, r)^T)      lora_up; dx
// W is read through strides, so A (r, in) and B (out, r) serve on either side without a
// transposed copy. Sums over rows go to per-CTA partials that a second kernel adds in a
// fixed order: results do not depend on scheduling (no float atomics).
//
// The products are fp32 SIMT loops: with r <= 64 the adapter is narrow, x is read once per
// pass, and fp32 FMAs keep these kernels near the memory bound without tensor-core
// fragment code that nobody has run yet.
#include "lora.cuh"

#include <algorithm>

#include "cuda_check.cuh"
#include "launch.cuh"

namespace anvil::kernels {

namespace {

using i64 = std::int64_t;

constexpr int kThreads = 256;
constexpr int kMaxRank = 64;

// Dropout as the kernels apply it; on = false leaves x as it is (no numbers drawn).
struct Dropout {
  LoraDropoutParams mask;
  float inv_keep = 1.0f;
  bool on = false;
};

// v = elements (row, col .. col + 3) of x (rows, cols) after dropout; zero outside x.
// Kept elements are x * (1/(1-p)), as the CPU backend makes them.
__device__ inline void load4_dropout(float v[4], const float* x, i64 rows, i64 cols, i64 row,
                                     i64 col, const Dropout& d) {
#pragma unroll
  for (int j = 0; j < 4; ++j) v[j] = 0.0f;
  if (row >= rows) return;
  const float* xr = x + row * cols;
#pragma unroll
  for (int j = 0; j < 4; ++j)
    if (col + j < cols) v[j] = xr[col + j];
  if (!d.on) return;
  const unsigned keep = lora_dropout_keep4(d.mask, row, col);
#pragma unroll
  for (int j = 0; j < 4; ++j) v[j] = (keep >> j & 1u) ? v[j] * d.inv_keep : 0.0f;
}

// ---- narrow: out(n, r) = alpha * drop(X) W^T ---------------------------------------------

struct NarrowParams {
  float* out;      // (n, r)
  const float* x;  // (n, k)
  const float* w;  // element (c, kk) at w[c * w_c + kk * w_k]
  i64 n, k, w_c, w_k;
  int r;
  float alpha;
  Dropout drop;
};

constexpr int kNarrowRows = 64;                       // rows of x per CTA
constexpr int kNarrowK = 64;                          // columns of x per step
constexpr int kNarrowParts = kThreads / kNarrowRows;  // threads per row, each a quarter step
constexpr int kNarrowPad = kNarrowK + 1;  // odd stride: a warp reading a column hits 32 banks
static_assert(kNarrowK % (4 * kNarrowParts) == 0, "steps split into whole groups of four");
static_assert(kNarrowRows * (kMaxRank + 1) <= kNarrowRows * kNarrowPad, "sums fit in xs");

// A CTA owns 64 rows and walks K in steps of 64: the masked x tile and the matching W^T
// slice go to shared memory, each of the 4 threads of a row sums a quarter of the step for
// all R ranks, and the quarters are added in a fixed order at the end.
template <int R>
__global__ void __launch_bounds__(kThreads) lora_narrow_kernel(NarrowParams p) {
  ANVIL_SHARED(float, xs, kNarrowRows * kNarrowPad);  // (64, 64) drop(x); then (64, R+1) sums
  ANVIL_SHARED(float, ws, kNarrowK * R);  // (64, R) W^T, zero past r and past k
  const int tid = threadIdx.x;
  const int row = tid % kNarrowRows, part = tid / kNarrowRows;
  const i64 row0 = static_cast<i64>(blockIdx.x) * kNarrowRows;
  float acc[R];
#pragma unroll
  for (int c = 0; c < R; ++c) acc[c] = 0.0f;

  for (i64 k0 = 0; k0 < p.k; k0 += kNarrowK) {
    for (int e = tid; e < kNarrowRows * kNarrowK / 4; e += kThreads) {
      const int lr = e / (kNarrowK / 4), lc = e % (kNarrowK / 4) * 4;
      float v[4];
      load4_dropout(v, p.x, p.n, p.k, row0 + lr, k0 + lc, p.drop);
#pragma unroll
      for (int j = 0; j < 4; ++j) xs[lr * kNarrowPad + lc + j] = v[j];
    }
    for (int e = tid; e < kNarrowK * R; e += kThreads) {
      const int c = e / kNarrowK, kk = e % kNarrowK;
      ws[kk * R + c] = c < p.r && k0 + kk < p.k ? p.w[c * p.w_c + (k0 + kk) * p.w_k] : 0.0f;
    }
    __syncthreads();
    constexpr int kPart = kNarrowK / kNarrowParts;
    const float* xr = xs + row * kNarrowPad + part * kPart;
    const float* wr = ws + part * kPart * R;
#pragma unroll 4
    for (int kk = 0; kk < kPart; ++kk) {
      const float xv = xr[kk];
#pragma unroll
      for (int c = 0; c < R; ++c) acc[c] = fmaf(xv, wr[kk * R + c], acc[c]);
    }
    __syncthreads();  // before the next step (or the sums) overwrite xs and ws
  }

  float* sums = xs;  // (64, R + 1): R + 1 is odd, so a warp's 32 rows hit distinct banks
  for (int q = 0; q < kNarrowParts; ++q) {
    if (part == q) {
#pragma unroll
      for (int c = 0; c < R; ++c) {
        float& s = sums[row * (R + 1) + c];
        s = q == 0 ? acc[c] : s + acc[c];
      }
    }
    __syncthreads();
  }
  for (int e = tid; e < kNarrowRows * p.r; e += kThreads) {
    const int lr = e / p.r, c = e % p.r;
    const i64 gr = row0 + lr;
    if (gr < p.n) p.out[gr * p.r + c] = p.alpha * sums[lr * (R + 1) + c];
  }
}

// ---- reduce: part[s](m, r) = sum over the rows of split s of drop(X)[i, col] G[i, c] -----

struct ReduceParams {
  float* part;     // (splits, m, r)
  const float* x;  // (n, m)
  const float* g;  // (n, r)
  i64 n, m, rows_per_split;
  int r;
  Dropout drop;
};

constexpr int kReduceCols = 64;                         // columns of X per CTA
constexpr int kReduceRows = 32;                         // rows per step
constexpr int kReduceGroups = kThreads / kReduceCols;  // group q owns ranks q, q + 4, ...
constexpr int kTargetCtas = 264;  // ~2 CTAs per SM of an H100/H200 (132 SMs)
constexpr int kMaxSplits = 64;

// A CTA owns 64 columns of X and one split of the rows, which it walks in order, 32 rows a
// step: thread (q, col) accumulates column col against ranks q, q + 4, ... (R / 4 sums).
template <int R>
__global__ void __launch_bounds__(kThreads) lora_reduce_kernel(ReduceParams p) {
  ANVIL_SHARED(float, xs, kReduceRows * kReduceCols);  // (32, 64) drop(X)
  ANVIL_SHARED(float, gs, kReduceRows * R);            // (32, R) G, zero past r
  constexpr int kPer = R / kReduceGroups;
  static_assert(kPer >= 1, "R covers the thread groups");
  const int tid = threadIdx.x;
  const int col = tid % kReduceCols, q = tid / kReduceCols;
  const i64 col0 = static_cast<i64>(blockIdx.x) * kReduceCols;
  const i64 begin = static_cast<i64>(blockIdx.y) * p.rows_per_split;
  const i64 end = begin + p.rows_per_split < p.n ? begin + p.rows_per_split : p.n;
  float acc[kPer];
#pragma unroll
  for (int j = 0; j < kPer; ++j) acc[j] = 0.0f;

  for (i64 i0 = begin; i0 < end; i0 += kReduceRows) {
    for (int e = tid; e < kReduceRows * kReduceCols / 4; e += kThreads) {
      const int lr = e / (kReduceCols / 4), lc = e % (kReduceCols / 4) * 4;
      float v[4];
      // Rows past this split's end read as zero (end <= n bounds the row).
      load4_dropout(v, p.x, end, p.m, i0 + lr, col0 + lc, p.drop);
#pragma unroll
      for (int j = 0; j < 4; ++j) xs[lr * kReduceCols + lc + j] = v[j];
    }
    for (int e = tid; e < kReduceRows * R; e += kThreads) {
      const int lr = e / R, c = e % R;
      const i64 gi = i0 + lr;
      gs[e] = c < p.r && gi < end ? p.g[gi * p.r + c] : 0.0f;
    }
    __syncthreads();
#pragma unroll 4
    for (int i = 0; i < kReduceRows; ++i) {
      const float xv = xs[i * kReduceCols + col];
#pragma unroll
      for (int j = 0; j < kPer; ++j)
        acc[j] = fmaf(xv, gs[i * R + q + kReduceGroups * j], acc[j]);
    }
    __syncthreads();
  }
  const i64 gc = col0 + col;
  if (gc >= p.m) return;
  float* dst = p.part + (static_cast<i64>(blockIdx.y) * p.m + gc) * p.r;
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    const int c = q + kReduceGroups * j;
    if (c < p.r) dst[c] = acc[j];
  }
}

// dst(m, c) += alpha * sum_s part[s](m, c), the splits in order; (m, c) is at
// dst[m * d_m + c * d_c].
__global__ void lora_finalize_kernel(float* dst, const float* part, i64 m, int r, int splits,
                                     i64 d_m, i64 d_c, float alpha) {
  for (i64 e = blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x; e < m * r;
       e += static_cast<i64>(gridDim.x) * blockDim.x) {
    float s = 0.0f;
    for (int k = 0; k < splits; ++k) s += part[k * m * r + e];
    const i64 mm = e / r, c = e % r;
    float& o = dst[mm * d_m + c * d_c];
    o = alpha * s + o;
  }
}

// Rows split so that tiles x splits gives the GPU enough CTAs. The split depends on the
// shape only (not the device), so a result is the same on any GPU and run.
struct RowSplit {
  int splits;
  i64 rows;  // per split, a multiple of kReduceRows
};

RowSplit row_split(i64 n, i64 m) {
  const i64 steps = std::max<i64>(1, (n + kReduceRows - 1) / kReduceRows);
  const i64 tiles = (m + kReduceCols - 1) / kReduceCols;
  const i64 want =
      std::clamp<i64>((kTargetCtas + tiles - 1) / tiles, 1, std::min<i64>(steps, kMaxSplits));
  const i64 per = (steps + want - 1) / want;
  return {static_cast<int>((steps + per - 1) / per), per * kReduceRows};
}

// ---- wide: Y(n, m) += alpha * mask(G W^T) -------------------------------------------------

struct WideParams {
  float* y;        // (n, m), accumulated
  const float* g;  // (n, r)
  const float* w;  // element (col, c) at w[col * w_m + c * w_c]
  i64 n, m, w_m, w_c;
  int r;
  float alpha;
  Dropout drop;  // on: outputs the forward dropped stay as they were
};

constexpr int kWideTile = 64;             // rows and columns of Y per CTA
constexpr int kWidePad = kMaxRank + 1;    // odd stride: conflict-free column reads
constexpr int kWideRowsPer = kWideTile / (kThreads / 32);  // 8 rows per thread
constexpr int kWideColsPer = kWideTile / 32;               // 2 columns per thread

// A CTA owns a 64 x 64 tile of Y; G's 64 rows and W's 64 rows (all r ranks) sit in shared
// memory. Thread (ty, tx) makes rows ty + 8i and columns tx + 32j, so a warp writes 32
// consecutive floats of a row.
__global__ void __launch_bounds__(kThreads) lora_wide_kernel(WideParams p) {
  ANVIL_SHARED(float, gs, kWideTile * kWidePad);  // (64 rows, r)
  ANVIL_SHARED(float, ws, kWideTile * kWidePad);  // (64 cols, r)
  ANVIL_SHARED(unsigned char, keep, kWideTile * kWideTile);
  const int tid = threadIdx.x, tx = tid % 32, ty = tid / 32;
  const i64 row0 = static_cast<i64>(blockIdx.y) * kWideTile;
  const i64 col0 = static_cast<i64>(blockIdx.x) * kWideTile;
  for (int e = tid; e < kWideTile * p.r; e += kThreads) {
    const int lr = e / p.r, c = e % p.r;
    gs[lr * kWidePad + c] = row0 + lr < p.n ? p.g[(row0 + lr) * p.r + c] : 0.0f;
    const int lm = e % kWideTile, cw = e / kWideTile;
    ws[lm * kWidePad + cw] = col0 + lm < p.m ? p.w[(col0 + lm) * p.w_m + cw * p.w_c] : 0.0f;
  }
  if (p.drop.on) {
    for (int e = tid; e < kWideTile * kWideTile / 4; e += kThreads) {
      const int lr = e / (kWideTile / 4), lc = e % (kWideTile / 4) * 4;
      const unsigned bits = lora_dropout_keep4(p.drop.mask, row0 + lr, col0 + lc);
#pragma unroll
      for (int j = 0; j < 4; ++j) keep[lr * kWideTile + lc + j] = bits >> j & 1u;
    }
  }
  __syncthreads();

  float acc[kWideRowsPer][kWideColsPer] = {};
  for (int c = 0; c < p.r; ++c) {
    float gv[kWideRowsPer], wv[kWideColsPer];
#pragma unroll
    for (int i = 0; i < kWideRowsPer; ++i) gv[i] = gs[(ty + 8 * i) * kWidePad + c];
#pragma unroll
    for (int j = 0; j < kWideColsPer; ++j) wv[j] = ws[(tx + 32 * j) * kWidePad + c];
#pragma unroll
    for (int i = 0; i < kWideRowsPer; ++i)
#pragma unroll
      for (int j = 0; j < kWideColsPer; ++j) acc[i][j] = fmaf(gv[i], wv[j], acc[i][j]);
  }
#pragma unroll
  for (int i = 0; i < kWideRowsPer; ++i) {
    const int lr = ty + 8 * i;
    const i64 row = row0 + lr;
    if (row >= p.n) continue;
#pragma unroll
    for (int j = 0; j < kWideColsPer; ++j) {
      const int lc = tx + 32 * j;
      const i64 col = col0 + lc;
      if (col >= p.m) continue;
      if (p.drop.on && !keep[lr * kWideTile + lc]) continue;  // dropped: y stays as it was
      float& o = p.y[row * p.m + col];
      o = p.alpha * acc[i][j] + o;
    }
  }
}

// ---- launch helpers -------------------------------------------------------------------

Dropout dropout_of(const LoraDropoutParams& d, i64 in) {
  ANVIL_CHECK(d.p >= 0.0f && d.p < 1.0f, "LoRA dropout p = ", d.p, " outside [0, 1)");
  Dropout out;
  out.mask = d;
  out.on = d.p != 0.0f;
  out.inv_keep = 1.0f / (1.0f - d.p);
  if (out.on)
    ANVIL_CHECK(d.row_offset >= 0 && d.col_offset >= 0 && d.row_stride >= d.col_offset + in,
                "LoRA dropout row_stride ", d.row_stride, " < col_offset ", d.col_offset,
                " + width ", in);
  return out;
}

void check_shape(i64 n, i64 width, int r) {
  ANVIL_CHECK(n >= 0 && width > 0, "LoRA shape n = ", n, ", width = ", width);
  ANVIL_CHECK(r >= 1 && r <= kMaxRank, "LoRA rank ", r, " outside [1, ", kMaxRank, "]");
}

// The rank rounded up to the instantiated widths; W past r is zero in shared memory.
template <template <int> class Launch, typename P>
void by_rank(int r, const P& p, dim3 grid, cudaStream_t stream) {
  if (r <= 8) Launch<8>::run(p, grid, stream);
  else if (r <= 16) Launch<16>::run(p, grid, stream);
  else if (r <= 32) Launch<32>::run(p, grid, stream);
  else Launch<64>::run(p, grid, stream);
}

template <int R>
struct NarrowLaunch {
  static void run(const NarrowParams& p, dim3 grid, cudaStream_t s) {
    launch(lora_narrow_kernel<R>, grid, kThreads, 0, s, p);
  }
};

template <int R>
struct ReduceLaunch {
  static void run(const ReduceParams& p, dim3 grid, cudaStream_t s) {
    launch(lora_reduce_kernel<R>, grid, kThreads, 0, s, p);
  }
};

void launch_narrow(const NarrowParams& p, cudaStream_t stream) {
  if (p.n == 0) return;
  const dim3 grid(static_cast<unsigned>((p.n + kNarrowRows - 1) / kNarrowRows));
  by_rank<NarrowLaunch>(p.r, p, grid, stream);
}

// dst (m, r) += alpha * X^T G over all n rows, via the partials in `part`.
void launch_reduce(float* dst, i64 d_m, i64 d_c, float alpha, const ReduceParams& p0,
                   cudaStream_t stream) {
  const RowSplit split = row_split(p0.n, p0.m);
  ReduceParams p = p0;
  p.rows_per_split = split.rows;
  const dim3 grid(static_cast<unsigned>((p.m + kReduceCols - 1) / kReduceCols),
                  static_cast<unsigned>(split.splits));
  by_rank<ReduceLaunch>(p.r, p, grid, stream);
  const i64 total = p.m * p.r;
  const int blocks = static_cast<int>(std::min<i64>((total + kThreads - 1) / kThreads, 4096));
  launch(lora_finalize_kernel, blocks, kThreads, 0, stream, dst, p.part, p.m, p.r, split.splits,
         d_m, d_c, alpha);
}

void launch_wide(const WideParams& p, cudaStream_t stream) {
  if (p.n == 0) return;
  const i64 row_tiles = (p.n + kWideTile - 1) / kWideTile;
  ANVIL_CHECK(row_tiles <= 65535, "LoRA: ", p.n, " rows exceed one launch");
  const dim3 grid(static_cast<unsigned>((p.m + kWideTile - 1) / kWideTile),
                  static_cast<unsigned>(row_tiles));
  launch(lora_wide_kernel, grid, kThreads, 0, stream, p);
}

std::size_t align_up(std::size_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace

void lora_down(float* xa, const float* x, const float* a, std::int64_t n, std::int64_t in, int r,
               const LoraDropoutParams& drop, cudaStream_t stream) {
  check_shape(n, in, r);
  const Dropout d = dropout_of(drop, in);
  if (n == 0) return;
  ANVIL_CHECK(xa && x && a, "lora_down: null buffer");
  // A (r, in): element (c, k) at a[c * in + k].
  launch_narrow(NarrowParams{xa, x, a, n, in, in, 1, r, 1.0f, d}, stream);
}

void lora_up(float* y, const float* xa, const float* b, std::int64_t n, std::int64_t out, int r,
             float scale, cudaStream_t stream) {
  check_shape(n, out, r);
  if (n == 0) return;
  ANVIL_CHECK(y && xa && b, "lora_up: null buffer");
  // B (out, r): element (o, c) at b[o * r + c].
  launch_wide(WideParams{y, xa, b, n, out, r, 1, r, scale, Dropout{}}, stream);
}

std::size_t lora_backward_workspace_bytes(std::int64_t n, std::int64_t in, std::int64_t out,
                                          int r) {
  const RowSplit for_db = row_split(n, out), for_da = row_split(n, in);
  const i64 part = std::max(for_db.splits * out, for_da.splits * in) * r;
  return align_up(static_cast<std::size_t>(n * r) * sizeof(float)) +
         static_cast<std::size_t>(part) * sizeof(float);
}

void lora_backward(float* dx, float* da, float* db, const float* dy, const float* x,
                   const float* xa, const float* a, const float* b, std::int64_t n,
                   std::int64_t in, std::int64_t out, int r, float scale,
                   const LoraDropoutParams& drop, void* workspace, cudaStream_t stream) {
  check_shape(n, in, r);
  check_shape(n, out, r);
  const Dropout d = dropout_of(drop, in);
  ANVIL_CHECK(da && db, "LoRA backward needs both adapter gradients");
  if (n == 0) return;
  ANVIL_CHECK(dy && x && xa && a && b && workspace, "lora_backward: null buffer");
  ANVIL_CHECK(reinterpret_cast<std::uintptr_t>(workspace) % 16 == 0,
              "lora_backward: workspace not 16-byte aligned");
  auto* g = static_cast<float*>(workspace);  // (n, r) scale * dy B
  float* part = reinterpret_cast<float*>(static_cast<char*>(workspace) +
                                         align_up(static_cast<std::size_t>(n * r) * sizeof(float)));

  // g = scale * dy B; B (out, r) as W (r, out): element (c, o) at b[o * r + c].
  launch_narrow(NarrowParams{g, dy, b, n, out, 1, r, r, scale, Dropout{}}, stream);
  // db (out, r) += scale * dy^T xa.
  launch_reduce(db, r, 1, scale, ReduceParams{part, dy, xa, n, out, 0, r, Dropout{}}, stream);
  // da (r, in) += g^T dropout(x): the partials are (in, r), da is stored transposed. The
  // partial buffer is reused; the stream orders this after db's finalize.
  launch_reduce(da, 1, in, 1.0f, ReduceParams{part, x, g, n, in, 0, r, d}, stream);
  // dx (n, in) += mask(g A) / (1 - p); A (r, in) as W (in, r): element (k, c) at a[c*in + k].
  if (dx) launch_wide(WideParams{dx, g, a, n, in, 1, in, r, d.on ? d.inv_keep : 1.0f, d}, stream);
}

}  // namespace anvil::kernels
