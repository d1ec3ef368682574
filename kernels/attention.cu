// Flash-style attention on tensor cores (mma.sync m16n8k16, bf16 in, f32 accumulate).
//
// Forward: one CTA per (query tile, head, batch); each of its 4 warps owns 16 query rows and
// walks the key tiles with an online softmax, so scores never leave registers.
// Backward, deterministic (every gradient element is written by exactly one thread, no
// atomics), in three launches:
//   1. delta_i = dot(dout_i, out_i) into the workspace, (B, H, T);
//   2. dq: one CTA per (query tile, head, batch), looping over key tiles;
//   3. dk, dv: one CTA per (key tile, kv head, batch), looping over the query heads of its
//      GQA group and their query tiles; P is recomputed from q, k and the saved lse.
// Global tensors are f32; tiles are rounded to bf16 as they are staged into shared memory.
// The index math (masking, tile ranges, fragment layouts) lives in attention.cuh, where
// the CPU tests check it.
#include "attention.cuh"

#include <cuda_bf16.h>

#include <cmath>

#include "cuda_check.cuh"
#include "launch.cuh"
#include "ptx.cuh"

namespace anvil::kernels {

namespace {

namespace am = attention_math;
using bf16 = __nv_bfloat16;
using i64 = std::int64_t;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Rows of [row][d] tiles are padded by 8 bf16: each row stays 16-byte aligned and
// consecutive rows start in different banks.
constexpr int kPad = 8;

template <int D>
struct ForwardTraits {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBlockQ = 16 * kWarps;  // each warp owns 16 query rows
  static constexpr int kBlockK = 64;
  static constexpr int kLdRow = D + kPad;      // q_s, k_s: [row][d]
  static constexpr int kLdT = kBlockK + kPad;  // vt_s: [d][key]
  static constexpr std::size_t kSmemBytes =
      sizeof(bf16) * (kBlockQ * kLdRow + kBlockK * kLdRow + D * kLdT) + sizeof(int) * kBlockK;
  static_assert(D == 64 || D == 128, "head_dim 64 or 128 only");
  static_assert(kBlockK % 16 == 0 && kBlockK <= kThreads, "key tile: whole mma k-steps");
};

template <int D>
struct DqTraits {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBlockQ = 16 * kWarps;  // each warp owns 16 query rows
  static constexpr int kBlockK = 64;
  static constexpr int kLdRow = D + kPad;      // q_s, do_s, k_s, v_s: [row][d]
  static constexpr int kLdT = kBlockK + kPad;  // kt_s: [d][key]
  static constexpr std::size_t kSmemBytes =
      sizeof(bf16) * (2 * kBlockQ * kLdRow + 2 * kBlockK * kLdRow + D * kLdT) +
      sizeof(int) * kBlockK;
  static_assert(D == 64 || D == 128, "head_dim 64 or 128 only");
  static_assert(kBlockK % 16 == 0, "key tile: whole mma k-steps");
};

template <int D>
struct DkvTraits {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBlockK = 16 * kWarps;  // each warp owns 16 keys
  // Per thread the dk and dv accumulators already take D registers; a narrower query tile
  // at D = 128 keeps the score tiles small enough to stay in registers.
  static constexpr int kBlockQ = D == 64 ? 64 : 32;
  static constexpr int kLdRow = D + kPad;      // k_s, v_s, q_s, do_s: [row][d]
  static constexpr int kLdT = kBlockQ + kPad;  // qt_s, dot_s: [d][query]
  static constexpr std::size_t kSmemBytes =
      sizeof(bf16) * (2 * kBlockK * kLdRow + 2 * kBlockQ * kLdRow + 2 * D * kLdT) +
      (2 * sizeof(float) + sizeof(int)) * kBlockQ;
  static_assert(D == 64 || D == 128, "head_dim 64 or 128 only");
  static_assert(kBlockQ % 16 == 0, "query tile: whole mma k-steps");
};

// ---- mma.sync and its fragments ---------------------------------------------------------

__device__ inline std::uint32_t load_pair(const bf16* p) {
  return *reinterpret_cast<const std::uint32_t*>(p);
}

__device__ inline std::uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (lo) in the low half
  return *reinterpret_cast<const std::uint32_t*>(&v);
}

// A (16x16) = tile[row0 .. +16][col0 .. +16] of a row-major tile with `ld` elements a row.
__device__ inline void load_a(std::uint32_t (&a)[4], const bf16* tile, int ld, int row0, int col0,
                              int lane) {
#pragma unroll
  for (int r = 0; r < 4; ++r)
    a[r] = load_pair(tile + (row0 + am::mma_a_row(lane, 2 * r)) * ld + col0 +
                     am::mma_a_col(lane, 2 * r));
}

// B (16x8, k by n) with B(k, n) = tile[n0 + n][k0 + k]: the operand is stored n-major, which
// is how every B below is staged (K for Q K^T, the transposed V for P V, ...).
__device__ inline void load_b(std::uint32_t (&b)[2], const bf16* tile, int ld, int k0, int n0,
                              int lane) {
#pragma unroll
  for (int r = 0; r < 2; ++r)
    b[r] =
        load_pair(tile + (n0 + am::mma_b_col(lane, 2 * r)) * ld + k0 + am::mma_b_row(lane, 2 * r));
}

// The accumulators of two neighbouring 16x8 tiles (columns 16kk .. 16kk+15) are, element
// for element, the A fragment of k-step kk in the next product: no trip through memory.
__device__ inline void acc_to_a(std::uint32_t (&a)[4], const float (&lo)[4], const float (&hi)[4]) {
  a[0] = pack_bf16(lo[0], lo[1]);
  a[1] = pack_bf16(lo[2], lo[3]);
  a[2] = pack_bf16(hi[0], hi[1]);
  a[3] = pack_bf16(hi[2], hi[3]);
}

// ---- staging global f32 into shared bf16 ------------------------------------------------

// Rows [row0, row0 + n_rows) of a (seq, D) slice whose rows are `stride` floats apart, as
// bf16 into rows[r][d] (ld_rows a row) and/or cols[d][r] (ld_cols a row); either may be
// null. Rows past the sequence become zeros (and are masked by the callers as well).
template <int D>
__device__ void stage_tile(bf16* rows, int ld_rows, bf16* cols, int ld_cols, const float* src,
                           i64 stride, int row0, int n_rows, int seq) {
  for (int idx = threadIdx.x; idx < n_rows * D; idx += blockDim.x) {
    const int r = idx / D, d = idx % D;  // d fastest: a warp reads 32 consecutive floats
    const int row = row0 + r;
    const bf16 x = __float2bfloat16_rn(row < seq ? src[row * stride + d] : 0.0f);
    if (rows) rows[r * ld_rows + d] = x;
    if (cols) cols[d * ld_cols + r] = x;
  }
}

// Segment ids of rows [row0, row0 + n); -1 past the sequence or without segments (the
// visibility test ignores them then).
__device__ void stage_segments(int* dst, const std::int32_t* seg, int row0, int n, int seq) {
  for (int i = threadIdx.x; i < n; i += blockDim.x)
    dst[i] = (seg && row0 + i < seq) ? seg[row0 + i] : -1;
}

// ---- forward ----------------------------------------------------------------------------

template <int D>
__global__ void __launch_bounds__(ForwardTraits<D>::kThreads)
    attention_forward_kernel(const AttentionParams p) {
  using Tr = ForwardTraits<D>;
  unsigned char* smem = dynamic_shared<unsigned char>();
  bf16* q_s = reinterpret_cast<bf16*>(smem);    // (kBlockQ, D)
  bf16* k_s = q_s + Tr::kBlockQ * Tr::kLdRow;   // (kBlockK, D)
  bf16* vt_s = k_s + Tr::kBlockK * Tr::kLdRow;  // (D, kBlockK)
  int* segk_s = reinterpret_cast<int*>(vt_s + D * Tr::kLdT);

  const int T = p.seq, H = p.n_heads, Hkv = p.n_kv_heads;
  const int q0 = blockIdx.x * Tr::kBlockQ, h = blockIdx.y, b = blockIdx.z;
  const int kvh = h / (H / Hkv);
  const i64 q_stride = i64{H} * D, kv_stride = i64{Hkv} * D;
  const i64 q_off = (i64{b} * T * H + h) * D, kv_off = (i64{b} * T * Hkv + kvh) * D;
  const std::int32_t* seg = p.segment ? p.segment + i64{b} * T : nullptr;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  // This thread's two query rows: accumulator elements 0,1 are row[0], 2,3 are row[1].
  int row[2], seg_row[2];
  for (int r = 0; r < 2; ++r) {
    row[r] = q0 + warp * 16 + am::mma_c_row(lane, 2 * r);
    seg_row[r] = (seg && row[r] < T) ? seg[row[r]] : -1;
  }

  stage_tile<D>(q_s, Tr::kLdRow, nullptr, 0, p.q + q_off, q_stride, q0, Tr::kBlockQ, T);
  __syncthreads();
  std::uint32_t qa[D / 16][4];  // the warp's 16 query rows, kept in registers
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) load_a(qa[kk], q_s, Tr::kLdRow, warp * 16, kk * 16, lane);

  float o[D / 8][4] = {};
  float m[2] = {-INFINITY, -INFINITY};  // running row max of the scores, log2 units
  float l[2] = {0.0f, 0.0f};            // this thread's share of the row's sum
  const float scale_log2 = p.scale * kLog2e;
  const int kv_end = am::kv_tile_end(q0, Tr::kBlockQ, Tr::kBlockK, T, p.causal);

  for (int kt = 0; kt < kv_end; ++kt) {
    const int k0 = kt * Tr::kBlockK;
    __syncthreads();  // every warp is done with the previous k/v tile
    stage_tile<D>(k_s, Tr::kLdRow, nullptr, 0, p.k + kv_off, kv_stride, k0, Tr::kBlockK, T);
    stage_tile<D>(nullptr, 0, vt_s, Tr::kLdT, p.v + kv_off, kv_stride, k0, Tr::kBlockK, T);
    stage_segments(segk_s, seg, k0, Tr::kBlockK, T);
    __syncthreads();

    float s[Tr::kBlockK / 8][4] = {};  // S = Q K^T for 16 rows x kBlockK keys
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
#pragma unroll
      for (int j = 0; j < Tr::kBlockK / 8; ++j) {
        std::uint32_t kb[2];
        load_b(kb, k_s, Tr::kLdRow, kk * 16, j * 8, lane);
        ptx::mma_m16n8k16_bf16(s[j], qa[kk], kb);
      }

    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < Tr::kBlockK / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1, kl = j * 8 + am::mma_c_col(lane, e);
        const bool vis =
            am::visible(row[r], k0 + kl, T, p.causal, seg != nullptr, seg_row[r], segk_s[kl]);
        s[j][e] = vis ? s[j][e] * scale_log2 : -INFINITY;
        tile_max[r] = fmaxf(tile_max[r], s[j][e]);
      }
    float base[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      // The four lanes of a quad hold the row's columns between them.
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
      const am::OnlineMax u = am::online_max_update(m[r], tile_max[r]);
      m[r] = u.m_new;
      base[r] = u.base;
      l[r] *= u.rescale;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        o[dt][2 * r] *= u.rescale;
        o[dt][2 * r + 1] *= u.rescale;
      }
    }
#pragma unroll
    for (int j = 0; j < Tr::kBlockK / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[j][e] = exp2f(s[j][e] - base[e >> 1]);  // masked: exp2(-inf) = 0
        l[e >> 1] += s[j][e];
      }

    // O += P V, P rounded to bf16 straight from the accumulators.
#pragma unroll
    for (int kk = 0; kk < Tr::kBlockK / 16; ++kk) {
      std::uint32_t pa[4];
      acc_to_a(pa, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        std::uint32_t vb[2];
        load_b(vb, vt_s, Tr::kLdT, kk * 16, dt * 8, lane);
        ptx::mma_m16n8k16_bf16(o[dt], pa, vb);
      }
    }
  }

  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
  // A row inside the sequence always sees its own key, so l > 0 there; rows past the end
  // are not written.
  for (int r = 0; r < 2; ++r) {
    if (row[r] >= T) continue;
    const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
    float* out_row = p.out + q_off + row[r] * q_stride;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      out_row[dt * 8 + am::mma_c_col(lane, 2 * r)] = o[dt][2 * r] * inv;
      out_row[dt * 8 + am::mma_c_col(lane, 2 * r + 1)] = o[dt][2 * r + 1] * inv;
    }
    if (lane % 4 == 0)
      p.lse[(i64{b} * H + h) * T + row[r]] = l[r] > 0.0f ? m[r] * kLn2 + logf(l[r]) : -INFINITY;
  }
}

// ---- backward ---------------------------------------------------------------------------

constexpr int kDeltaWarps = 4;

// delta (B, H, T) = rowsum(dout * out); one warp per (b, i, h) row of out.
__global__ void __launch_bounds__(32 * kDeltaWarps)
    attention_delta_kernel(float* delta, const float* out, const float* dout, int T, int H, int D,
                           i64 rows) {
  const i64 row = i64{blockIdx.x} * kDeltaWarps + threadIdx.x / 32;  // (b * T + i) * H + h
  if (row >= rows) return;  // a whole warp leaves together: the shuffles stay full-warp
  const int lane = threadIdx.x % 32;
  float acc = 0.0f;
  for (int c = lane; c < D; c += 32) acc += out[row * D + c] * dout[row * D + c];
  for (int off = 16; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (lane == 0) {
    const i64 b = row / (i64{T} * H), i = (row / H) % T, h = row % H;
    delta[(b * H + h) * T + i] = acc;
  }
}

// dq for the 16 query rows of each warp: dS = P (dP - delta), dQ = scale * dS K.
template <int D>
__global__ void __launch_bounds__(DqTraits<D>::kThreads)
    attention_dq_kernel(const AttentionBackwardParams p, const float* delta) {
  using Tr = DqTraits<D>;
  const AttentionParams& f = p.fwd;
  unsigned char* smem = dynamic_shared<unsigned char>();
  bf16* q_s = reinterpret_cast<bf16*>(smem);    // (kBlockQ, D)
  bf16* do_s = q_s + Tr::kBlockQ * Tr::kLdRow;  // (kBlockQ, D)
  bf16* k_s = do_s + Tr::kBlockQ * Tr::kLdRow;  // (kBlockK, D)
  bf16* v_s = k_s + Tr::kBlockK * Tr::kLdRow;   // (kBlockK, D)
  bf16* kt_s = v_s + Tr::kBlockK * Tr::kLdRow;  // (D, kBlockK)
  int* segk_s = reinterpret_cast<int*>(kt_s + D * Tr::kLdT);

  const int T = f.seq, H = f.n_heads, Hkv = f.n_kv_heads;
  const int q0 = blockIdx.x * Tr::kBlockQ, h = blockIdx.y, b = blockIdx.z;
  const int kvh = h / (H / Hkv);
  const i64 q_stride = i64{H} * D, kv_stride = i64{Hkv} * D;
  const i64 q_off = (i64{b} * T * H + h) * D, kv_off = (i64{b} * T * Hkv + kvh) * D;
  const i64 row_off = (i64{b} * H + h) * T;  // into lse and delta, (B, H, T)
  const std::int32_t* seg = f.segment ? f.segment + i64{b} * T : nullptr;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  int row[2], seg_row[2];
  float lse2[2], dlt[2];  // the row's lse in log2 units, and its delta
  for (int r = 0; r < 2; ++r) {
    row[r] = q0 + warp * 16 + am::mma_c_row(lane, 2 * r);
    const bool in = row[r] < T;
    seg_row[r] = (seg && in) ? seg[row[r]] : -1;
    lse2[r] = in ? f.lse[row_off + row[r]] * kLog2e : 0.0f;
    dlt[r] = in ? delta[row_off + row[r]] : 0.0f;
  }

  stage_tile<D>(q_s, Tr::kLdRow, nullptr, 0, f.q + q_off, q_stride, q0, Tr::kBlockQ, T);
  stage_tile<D>(do_s, Tr::kLdRow, nullptr, 0, p.dout + q_off, q_stride, q0, Tr::kBlockQ, T);

  float dq[D / 8][4] = {};
  const float scale_log2 = f.scale * kLog2e;
  const int kv_end = am::kv_tile_end(q0, Tr::kBlockQ, Tr::kBlockK, T, f.causal);
  for (int kt = 0; kt < kv_end; ++kt) {
    const int k0 = kt * Tr::kBlockK;
    __syncthreads();  // every warp is done with the previous tiles (and q_s, do_s are in)
    stage_tile<D>(k_s, Tr::kLdRow, kt_s, Tr::kLdT, f.k + kv_off, kv_stride, k0, Tr::kBlockK, T);
    stage_tile<D>(v_s, Tr::kLdRow, nullptr, 0, f.v + kv_off, kv_stride, k0, Tr::kBlockK, T);
    stage_segments(segk_s, seg, k0, Tr::kBlockK, T);
    __syncthreads();

    float s[Tr::kBlockK / 8][4] = {};   // S = Q K^T
    float dp[Tr::kBlockK / 8][4] = {};  // dP = dO V^T
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      std::uint32_t qa[4], da[4];
      load_a(qa, q_s, Tr::kLdRow, warp * 16, kk * 16, lane);
      load_a(da, do_s, Tr::kLdRow, warp * 16, kk * 16, lane);
#pragma unroll
      for (int j = 0; j < Tr::kBlockK / 8; ++j) {
        std::uint32_t kb[2], vb[2];
        load_b(kb, k_s, Tr::kLdRow, kk * 16, j * 8, lane);
        load_b(vb, v_s, Tr::kLdRow, kk * 16, j * 8, lane);
        ptx::mma_m16n8k16_bf16(s[j], qa, kb);
        ptx::mma_m16n8k16_bf16(dp[j], da, vb);
      }
    }
#pragma unroll
    for (int j = 0; j < Tr::kBlockK / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1, kl = j * 8 + am::mma_c_col(lane, e);
        const bool vis =
            am::visible(row[r], k0 + kl, T, f.causal, seg != nullptr, seg_row[r], segk_s[kl]);
        const float pr = vis ? exp2f(s[j][e] * scale_log2 - lse2[r]) : 0.0f;
        s[j][e] = pr * (dp[j][e] - dlt[r]);  // now dS
      }
#pragma unroll
    for (int kk = 0; kk < Tr::kBlockK / 16; ++kk) {
      std::uint32_t dsa[4];
      acc_to_a(dsa, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        std::uint32_t kb[2];
        load_b(kb, kt_s, Tr::kLdT, kk * 16, dt * 8, lane);
        ptx::mma_m16n8k16_bf16(dq[dt], dsa, kb);
      }
    }
  }

  for (int r = 0; r < 2; ++r) {
    if (row[r] >= T) continue;
    float* dq_row = p.dq + q_off + row[r] * q_stride;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      dq_row[dt * 8 + am::mma_c_col(lane, 2 * r)] = dq[dt][2 * r] * f.scale;
      dq_row[dt * 8 + am::mma_c_col(lane, 2 * r + 1)] = dq[dt][2 * r + 1] * f.scale;
    }
  }
}

// dk, dv for the 16 keys of each warp, summed over the query heads of the kv head's group:
// with S^T = K Q^T and P^T from the saved lse, dV = P^T dO, dS^T = P^T (V dO^T - delta),
// dK = scale * dS^T Q.
template <int D>
__global__ void __launch_bounds__(DkvTraits<D>::kThreads)
    attention_dkv_kernel(const AttentionBackwardParams p, const float* delta) {
  using Tr = DkvTraits<D>;
  const AttentionParams& f = p.fwd;
  unsigned char* smem = dynamic_shared<unsigned char>();
  bf16* k_s = reinterpret_cast<bf16*>(smem);                      // (kBlockK, D)
  bf16* v_s = k_s + Tr::kBlockK * Tr::kLdRow;                     // (kBlockK, D)
  bf16* q_s = v_s + Tr::kBlockK * Tr::kLdRow;                     // (kBlockQ, D)
  bf16* do_s = q_s + Tr::kBlockQ * Tr::kLdRow;                    // (kBlockQ, D)
  bf16* qt_s = do_s + Tr::kBlockQ * Tr::kLdRow;                   // (D, kBlockQ)
  bf16* dot_s = qt_s + D * Tr::kLdT;                              // (D, kBlockQ)
  float* lse_s = reinterpret_cast<float*>(dot_s + D * Tr::kLdT);  // (kBlockQ) log2 units
  float* delta_s = lse_s + Tr::kBlockQ;                           // (kBlockQ)
  int* segq_s = reinterpret_cast<int*>(delta_s + Tr::kBlockQ);    // (kBlockQ)

  const int T = f.seq, H = f.n_heads, Hkv = f.n_kv_heads, group = H / Hkv;
  const int k0 = blockIdx.x * Tr::kBlockK, kvh = blockIdx.y, b = blockIdx.z;
  const i64 q_stride = i64{H} * D, kv_stride = i64{Hkv} * D;
  const i64 kv_off = (i64{b} * T * Hkv + kvh) * D;
  const std::int32_t* seg = f.segment ? f.segment + i64{b} * T : nullptr;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  // This thread's two keys: rows of the S^T accumulators.
  int key[2], seg_key[2];
  for (int r = 0; r < 2; ++r) {
    key[r] = k0 + warp * 16 + am::mma_c_row(lane, 2 * r);
    seg_key[r] = (seg && key[r] < T) ? seg[key[r]] : -1;
  }
  stage_tile<D>(k_s, Tr::kLdRow, nullptr, 0, f.k + kv_off, kv_stride, k0, Tr::kBlockK, T);
  stage_tile<D>(v_s, Tr::kLdRow, nullptr, 0, f.v + kv_off, kv_stride, k0, Tr::kBlockK, T);

  float dk[D / 8][4] = {}, dv[D / 8][4] = {};
  const float scale_log2 = f.scale * kLog2e;
  const int q_begin = am::q_tile_begin(k0, Tr::kBlockQ, f.causal);
  const int q_end = am::ceil_div(T, Tr::kBlockQ);
  for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
    const i64 q_off = (i64{b} * T * H + h) * D, row_off = (i64{b} * H + h) * T;
    for (int qt = q_begin; qt < q_end; ++qt) {
      const int q0 = qt * Tr::kBlockQ;
      __syncthreads();  // every warp is done with the previous query tile
      stage_tile<D>(q_s, Tr::kLdRow, qt_s, Tr::kLdT, f.q + q_off, q_stride, q0, Tr::kBlockQ, T);
      stage_tile<D>(do_s, Tr::kLdRow, dot_s, Tr::kLdT, p.dout + q_off, q_stride, q0, Tr::kBlockQ,
                    T);
      for (int i = threadIdx.x; i < Tr::kBlockQ; i += blockDim.x) {
        const bool in = q0 + i < T;
        lse_s[i] = in ? f.lse[row_off + q0 + i] * kLog2e : 0.0f;
        delta_s[i] = in ? delta[row_off + q0 + i] : 0.0f;
      }
      stage_segments(segq_s, seg, q0, Tr::kBlockQ, T);
      __syncthreads();

      float s[Tr::kBlockQ / 8][4] = {};   // S^T = K Q^T, then P^T
      float dp[Tr::kBlockQ / 8][4] = {};  // dP^T = V dO^T, then dS^T
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        std::uint32_t ka[4], va[4];
        load_a(ka, k_s, Tr::kLdRow, warp * 16, kk * 16, lane);
        load_a(va, v_s, Tr::kLdRow, warp * 16, kk * 16, lane);
#pragma unroll
        for (int j = 0; j < Tr::kBlockQ / 8; ++j) {
          std::uint32_t qb[2], db[2];
          load_b(qb, q_s, Tr::kLdRow, kk * 16, j * 8, lane);
          load_b(db, do_s, Tr::kLdRow, kk * 16, j * 8, lane);
          ptx::mma_m16n8k16_bf16(s[j], ka, qb);
          ptx::mma_m16n8k16_bf16(dp[j], va, db);
        }
      }
#pragma unroll
      for (int j = 0; j < Tr::kBlockQ / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = e >> 1, ql = j * 8 + am::mma_c_col(lane, e);
          const bool vis =
              am::visible(q0 + ql, key[r], T, f.causal, seg != nullptr, segq_s[ql], seg_key[r]);
          const float pr = vis ? exp2f(s[j][e] * scale_log2 - lse_s[ql]) : 0.0f;
          s[j][e] = pr;
          dp[j][e] = pr * (dp[j][e] - delta_s[ql]);
        }
#pragma unroll
      for (int kk = 0; kk < Tr::kBlockQ / 16; ++kk) {
        std::uint32_t pa[4], dsa[4];
        acc_to_a(pa, s[2 * kk], s[2 * kk + 1]);
        acc_to_a(dsa, dp[2 * kk], dp[2 * kk + 1]);
#pragma unroll
        for (int dt = 0; dt < D / 8; ++dt) {
          std::uint32_t dob[2], qb[2];
          load_b(dob, dot_s, Tr::kLdT, kk * 16, dt * 8, lane);
          load_b(qb, qt_s, Tr::kLdT, kk * 16, dt * 8, lane);
          ptx::mma_m16n8k16_bf16(dv[dt], pa, dob);
          ptx::mma_m16n8k16_bf16(dk[dt], dsa, qb);
        }
      }
    }
  }

  for (int r = 0; r < 2; ++r) {
    if (key[r] >= T) continue;
    float* dk_row = p.dk + kv_off + key[r] * kv_stride;
    float* dv_row = p.dv + kv_off + key[r] * kv_stride;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt)
      for (int c = 0; c < 2; ++c) {
        const int d = dt * 8 + am::mma_c_col(lane, 2 * r + c);
        dk_row[d] = dk[dt][2 * r + c] * f.scale;
        dv_row[d] = dv[dt][2 * r + c];
      }
  }
}

// ---- launchers --------------------------------------------------------------------------

void check_params(const AttentionParams& p) {
  ANVIL_CHECK(p.head_dim == 64 || p.head_dim == 128,
              "attention kernels cover head_dim 64 and 128, not ", p.head_dim);
  ANVIL_CHECK(p.batch >= 0 && p.seq >= 0 && p.n_heads > 0 && p.n_kv_heads > 0 &&
                  p.n_heads % p.n_kv_heads == 0,
              "attention shape: B=", p.batch, " T=", p.seq, " H=", p.n_heads,
              " Hkv=", p.n_kv_heads);
  ANVIL_CHECK(p.batch <= 65535 && p.n_heads <= 65535, "attention grid: B=", p.batch,
              " H=", p.n_heads, " (at most 65535 each)");
  ANVIL_CHECK(std::isfinite(p.scale) && p.scale > 0.0f, "attention scale ", p.scale);
  ANVIL_CHECK(p.q && p.k && p.v && p.out && p.lse, "attention: null tensor");
}

// Shared memory beyond the default 48 KB must be asked for per kernel. The launchers do it
// once per instantiation (a function-local static each): a call per launch costs time and
// would break CUDA graph capture.
template <typename... Params>
bool allow_smem(void (*kernel)(Params...), std::size_t bytes) {
  CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                  cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(bytes)));
  return true;
}

template <int D>
void forward_launch(const AttentionParams& p, cudaStream_t stream) {
  using Tr = ForwardTraits<D>;
  static const bool smem_allowed = allow_smem(attention_forward_kernel<D>, Tr::kSmemBytes);
  (void)smem_allowed;
  const dim3 grid(am::ceil_div(p.seq, Tr::kBlockQ), p.n_heads, p.batch);
  launch(attention_forward_kernel<D>, grid, Tr::kThreads, Tr::kSmemBytes, stream, p);
}

template <int D>
void backward_launch(const AttentionBackwardParams& p, const float* delta, cudaStream_t stream) {
  const AttentionParams& f = p.fwd;
  using Q = DqTraits<D>;
  static const bool dq_smem_allowed = allow_smem(attention_dq_kernel<D>, Q::kSmemBytes);
  (void)dq_smem_allowed;
  const dim3 dq_grid(am::ceil_div(f.seq, Q::kBlockQ), f.n_heads, f.batch);
  launch(attention_dq_kernel<D>, dq_grid, Q::kThreads, Q::kSmemBytes, stream, p, delta);
  using K = DkvTraits<D>;
  static const bool dkv_smem_allowed = allow_smem(attention_dkv_kernel<D>, K::kSmemBytes);
  (void)dkv_smem_allowed;
  const dim3 dkv_grid(am::ceil_div(f.seq, K::kBlockK), f.n_kv_heads, f.batch);
  launch(attention_dkv_kernel<D>, dkv_grid, K::kThreads, K::kSmemBytes, stream, p, delta);
}

}  // namespace

void attention_forward(const AttentionParams& p, cudaStream_t stream) {
  check_params(p);
  if (p.batch == 0 || p.seq == 0) return;
  if (p.head_dim == 64)
    forward_launch<64>(p, stream);
  else
    forward_launch<128>(p, stream);
}

std::size_t attention_backward_workspace_bytes(int batch, int seq, int n_heads, int /*head_dim*/) {
  return sizeof(float) * static_cast<std::size_t>(batch) * seq * n_heads;  // delta (B, H, T)
}

void attention_backward(const AttentionBackwardParams& p, void* workspace, cudaStream_t stream) {
  const AttentionParams& f = p.fwd;
  check_params(f);
  ANVIL_CHECK(p.dout && p.dq && p.dk && p.dv, "attention backward: null tensor");
  if (f.batch == 0 || f.seq == 0) return;
  ANVIL_CHECK(workspace, "attention backward: null workspace");
  auto* delta = static_cast<float*>(workspace);  // (B, H, T)
  const i64 rows = i64{f.batch} * f.seq * f.n_heads;
  const auto blocks = static_cast<unsigned>((rows + kDeltaWarps - 1) / kDeltaWarps);
  launch(attention_delta_kernel, blocks, 32 * kDeltaWarps, 0, stream, delta, f.out, p.dout, f.seq,
         f.n_heads, f.head_dim, rows);
  if (f.head_dim == 64)
    backward_launch<64>(p, delta, stream);
  else
    backward_launch<128>(p, delta, stream);
}

}  // namespace anvil::kernels
