// Flash-style attention, forward and backward: tiles of queries against tiles of keys with
// an online softmax, so no (seq, seq) matrix exists in memory; the row log-sum-exp is kept
// for the backward pass. Tensor-core products in bf16 (mma.sync), fp32 accumulation;
// activations arrive and leave as f32 (the Backend's activation type).
//
// Layouts (row-major): q, out, dout, dq (B, T, H, D); k, v, dk, dv (B, T, Hkv, D);
// lse (B, H, T). Query head h reads kv head h / (H / Hkv) (GQA, nothing copied). With
// `segment` (B*T int32), query i sees key j only when segment[j] == segment[i] (packed
// documents); with `causal`, only when j <= i. Softmax scale: `scale` (1/sqrt(D)).
// head_dim 64 or 128; any seq (tails masked).
#pragma once

#include <cstddef>
#include <cmath>
#include <cstdint>
#include <cuda_runtime.h>

namespace anvil::kernels {

struct AttentionParams {
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  const std::int32_t* segment = nullptr;  // may be null: one document per row
  float* out = nullptr;
  float* lse = nullptr;  // natural log of the row's sum of exp(scale * q.k)
  int batch = 0, seq = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
  float scale = 0.0f;
  bool causal = true;
};

struct AttentionBackwardParams {
  AttentionParams fwd;  // q, k, v, segment, out, lse and the shape of the forward call
  const float* dout = nullptr;
  float* dq = nullptr;  // overwritten
  float* dk = nullptr;  // overwritten
  float* dv = nullptr;  // overwritten
};

// Throws anvil::Error (internal) on a shape the kernels do not cover.
void attention_forward(const AttentionParams& p, cudaStream_t stream);

// Scratch the backward pass needs for this shape (row dot(dout, out), ...), in bytes.
std::size_t attention_backward_workspace_bytes(int batch, int seq, int n_heads, int head_dim);
// Deterministic: no atomics on dq, dk or dv.
void attention_backward(const AttentionBackwardParams& p, void* workspace, cudaStream_t stream);

// ---- index math shared by the kernels, host-callable so the CPU tests can check it --------
namespace attention_math {

// Query i may attend to key j (both inside the sequence). `segmented`: seg_i, seg_j are the
// packed-document ids of i and j.
__host__ __device__ constexpr bool visible(int i, int j, int seq, bool causal, bool segmented,
                                           int seg_i, int seg_j) {
  return i < seq && j < seq && (!causal || j <= i) && (!segmented || seg_i == seg_j);
}

__host__ __device__ constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Key tiles [0, end) that the query tile starting at q0 must visit: under causal masking the
// tiles after the one holding the tile's last query see nothing and are skipped.
__host__ __device__ constexpr int kv_tile_end(int q0, int block_q, int block_k, int seq,
                                              bool causal) {
  const int all = ceil_div(seq, block_k);
  if (!causal) return all;
  const int last_query = (q0 + block_q < seq ? q0 + block_q : seq) - 1;
  const int end = last_query / block_k + 1;
  return end < all ? end : all;
}

// First query tile that the key tile starting at k0 must visit (causal: earlier queries
// cannot see any of its keys).
__host__ __device__ constexpr int q_tile_begin(int k0, int block_q, bool causal) {
  return causal ? k0 / block_q : 0;
}

// Fragment layouts of mma.sync.m16n8k16 (bf16 in, f32 accumulate) for lane `lane`, from the
// PTX ISA: g = lane / 4 picks the row (A, C) or column (B), lane % 4 the pair of k (or n).
// A (16x16, row-major) element e in 0..7; registers hold the pairs (e, e+1) for even e.
__host__ __device__ constexpr int mma_a_row(int lane, int e) {
  return lane / 4 + 8 * ((e >> 1) & 1);
}
__host__ __device__ constexpr int mma_a_col(int lane, int e) {
  return 2 * (lane % 4) + (e & 1) + 8 * (e >> 2);
}
// B (16x8, k by n) element e in 0..3.
__host__ __device__ constexpr int mma_b_row(int lane, int e) {
  return 2 * (lane % 4) + (e & 1) + 8 * (e >> 1);
}
__host__ __device__ constexpr int mma_b_col(int lane, int /*e*/) { return lane / 4; }
// C/D accumulator (16x8) element e in 0..3.
__host__ __device__ constexpr int mma_c_row(int lane, int e) { return lane / 4 + 8 * (e >> 1); }
__host__ __device__ constexpr int mma_c_col(int lane, int e) { return 2 * (lane % 4) + (e & 1); }

// Online softmax (exp2 domain): the running row maximum `m_old` meets a tile's maximum.
// `base` is what the tile's scores are shifted by (0 while the row has seen only masked
// keys, so that -inf - -inf never makes a NaN); `rescale` multiplies the old sum and output.
struct OnlineMax {
  float m_new, base, rescale;
};
__host__ __device__ inline OnlineMax online_max_update(float m_old, float tile_max) {
  const float m_new = m_old > tile_max ? m_old : tile_max;
  const float base = m_new == -INFINITY ? 0.0f : m_new;
  return {m_new, base, exp2f(m_old - base)};
}

}  // namespace attention_math

}  // namespace anvil::kernels
