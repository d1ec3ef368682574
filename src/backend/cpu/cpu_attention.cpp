// CpuBackend: causal attention with packed-sequence segments and GQA. A head's queries go
// kAttnRows at a time: a block's scores are an sgemm against the keys its last query can see
// (the causal prefix; the rest of the (T, T) square is masked for the whole block and never
// computed), the softmax a loop over its rows, the output a second sgemm. Backward
// recomputes P from q, k and the saved lse.
//
// The heads (forward) or kv groups (backward: a group's query heads add into one dK, dV
// slice) are spread over the OpenMP threads when there are at least as many as threads,
// each thread with its own rows of scratch and single-threaded sgemm: a (512, 512, 64)
// product split over two threads spends much of its time starting and joining them. With
// fewer heads than threads, one at a time with the products and row loops threaded. Either
// way each head's arithmetic and a group's order of accumulation are fixed.
#include <algorithm>
#include <cmath>
#include <limits>

#include <omp.h>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_exp.h"
#include "core/error.h"

namespace anvil::backend {

namespace {

void check_shape(const AttentionShape& s) {
  ANVIL_CHECK(s.batch >= 0 && s.seq > 0 && s.head_dim > 0 && s.n_kv_heads > 0 &&
                  s.n_heads % s.n_kv_heads == 0,
              "attention shape: B=", s.batch, " T=", s.seq, " H=", s.n_heads, " Hkv=", s.n_kv_heads,
              " D=", s.head_dim);
}

// Query i may see key j: causal, and inside its own packed sequence.
inline bool visible(const std::int32_t* seg, i64 i, i64 j) {
  return j <= i && (!seg || seg[j] == seg[i]);
}

// Strides of one (batch, head) slice: rows of q/out step H*D, rows of k/v step Hkv*D.
struct HeadSlice {
  i64 q_off, kv_off, ldq, ldkv;
};

HeadSlice head_slice(const AttentionShape& s, i64 b, i64 h) {
  const i64 T = s.seq, D = s.head_dim, H = s.n_heads, Hkv = s.n_kv_heads;
  const i64 kvh = h / (H / Hkv);
  return {(b * T * H + h) * D, (b * T * Hkv + kvh) * D, H * D, Hkv * D};
}

// Whether `units` independent pieces of work go to the threads whole, and the scratch rows
// of (block, T) floats the op then needs: one block per thread, or one.
struct AttnSpread {
  bool whole = false;
  i64 blocks = 1;
};

AttnSpread attn_spread(i64 units) {
  const int threads = omp_get_max_threads();
  AttnSpread sp;
  sp.whole = threads > 1 && units >= threads && !omp_in_parallel();
  sp.blocks = sp.whole ? threads : 1;
  return sp;
}

float* thread_block(float* base, const AttnSpread& sp, i64 block_floats) {
  return base + (sp.whole ? omp_get_thread_num() : 0) * block_floats;
}

}  // namespace

void CpuBackend::attention_forward(float* out, float* lse, const float* q, const float* k,
                                   const float* v, const std::int32_t* segment,
                                   const AttentionShape& s) {
  check_shape(s);
  const i64 T = s.seq, D = s.head_dim, H = s.n_heads;
  const float sm_scale = 1.0f / std::sqrt(static_cast<float>(D));
  const i64 block = std::min(kAttnRows, T);
  const AttnSpread sp = attn_spread(s.batch * H);
  float* p_all = scratch(attn_p_, sp.blocks * block * T);  // (blocks, block, T)
#pragma omp parallel for schedule(dynamic, 1) if (sp.whole)
  for (i64 u = 0; u < s.batch * H; ++u) {
    const i64 b = u / H, h = u % H;
    const std::int32_t* seg = segment ? segment + b * T : nullptr;
    const HeadSlice hs = head_slice(s, b, h);
    float* p = thread_block(p_all, sp, block * T);  // (rows, keys)
    float* lse_bh = lse + (b * H + h) * T;          // (T)
    for (i64 i0 = 0; i0 < T; i0 += block) {
      const i64 rows = std::min(block, T - i0), keys = i0 + rows;
      // S = Q K^T * scale over the keys the block can see
      gemm(false, true, rows, keys, D, sm_scale, q + hs.q_off + i0 * hs.ldq, hs.ldq, k + hs.kv_off,
           hs.ldkv, 0.0f, p, keys);
#pragma omp parallel for schedule(static) if (!sp.whole && rows * keys >= kParallelWork)
      for (i64 r = 0; r < rows; ++r) {
        const i64 i = i0 + r;
        float* row = p + r * keys;
        float mx = -std::numeric_limits<float>::infinity();
        for (i64 j = 0; j <= i; ++j)
          if (visible(seg, i, j)) mx = std::max(mx, row[j]);
        exp_shifted(row, mx, row, i + 1);
        double sum = 0.0;
        for (i64 j = 0; j < keys; ++j) {
          if (!visible(seg, i, j)) row[j] = 0.0f;  // masked keys get exactly zero weight
          sum += row[j];
        }
        const auto inv = static_cast<float>(1.0 / sum);
        for (i64 j = 0; j <= i; ++j) row[j] *= inv;
        lse_bh[i] = mx + static_cast<float>(std::log(sum));
      }
      // O = P V
      gemm(false, false, rows, D, keys, 1.0f, p, keys, v + hs.kv_off, hs.ldkv, 0.0f,
           out + hs.q_off + i0 * hs.ldq, hs.ldq);
    }
  }
}

// With P = softmax(S), S = Q K^T * scale:
//   dV += P^T dO;  dP = dO V^T;  dS = P (dP - rowsum(dO * O));
//   dQ = dS K * scale;  dK += dS^T Q * scale.
// The query heads of one kv group accumulate into the same dK, dV slices, in head order and
// query-block order within a head.
void CpuBackend::attention_backward(float* dq, float* dk, float* dv, const float* dout,
                                    const float* out, const float* lse, const float* q,
                                    const float* k, const float* v, const std::int32_t* segment,
                                    const AttentionShape& s) {
  check_shape(s);
  const i64 T = s.seq, D = s.head_dim, H = s.n_heads, Hkv = s.n_kv_heads;
  const float sm_scale = 1.0f / std::sqrt(static_cast<float>(D));
  const i64 kv_count = s.batch * T * Hkv * D;
  std::fill(dk, dk + kv_count, 0.0f);
  std::fill(dv, dv + kv_count, 0.0f);
  const i64 block = std::min(kAttnRows, T), group = H / Hkv;
  const AttnSpread sp = attn_spread(s.batch * Hkv);
  float* p_all = scratch(attn_p_, sp.blocks * block * T);    // (blocks, block, T) P
  float* dp_all = scratch(attn_dp_, sp.blocks * block * T);  // (blocks, block, T) dP, then dS
#pragma omp parallel for schedule(dynamic, 1) if (sp.whole)
  for (i64 u = 0; u < s.batch * Hkv; ++u) {
    const i64 b = u / Hkv;
    const std::int32_t* seg = segment ? segment + b * T : nullptr;
    float* p = thread_block(p_all, sp, block * T);    // (rows, keys)
    float* dp = thread_block(dp_all, sp, block * T);  // (rows, keys)
    for (i64 h = (u % Hkv) * group; h < (u % Hkv + 1) * group; ++h) {
      const HeadSlice hs = head_slice(s, b, h);
      const float* lse_bh = lse + (b * H + h) * T;
      for (i64 i0 = 0; i0 < T; i0 += block) {
        const i64 rows = std::min(block, T - i0), keys = i0 + rows;
        const i64 qo = hs.q_off + i0 * hs.ldq;  // the block's first query row
        gemm(false, true, rows, keys, D, sm_scale, q + qo, hs.ldq, k + hs.kv_off, hs.ldkv, 0.0f, p,
             keys);
#pragma omp parallel for schedule(static) if (!sp.whole && rows * keys >= kParallelWork)
        for (i64 r = 0; r < rows; ++r) {
          float* row = p + r * keys;
          exp_shifted(row, lse_bh[i0 + r], row, i0 + r + 1);
          for (i64 j = 0; j < keys; ++j)
            if (!visible(seg, i0 + r, j)) row[j] = 0.0f;
        }
        // dV += P^T dO
        gemm(true, false, keys, D, rows, 1.0f, p, keys, dout + qo, hs.ldq, 1.0f, dv + hs.kv_off,
             hs.ldkv);
        // dP = dO V^T
        gemm(false, true, rows, keys, D, 1.0f, dout + qo, hs.ldq, v + hs.kv_off, hs.ldkv, 0.0f, dp,
             keys);
#pragma omp parallel for schedule(static) if (!sp.whole && rows * keys >= kParallelWork)
        for (i64 r = 0; r < rows; ++r) {
          const float* doi = dout + qo + r * hs.ldq;
          const float* oi = out + qo + r * hs.ldq;
          double delta = 0.0;
          for (i64 d = 0; d < D; ++d) delta += static_cast<double>(doi[d]) * oi[d];
          const auto df = static_cast<float>(delta);
          float* dsi = dp + r * keys;
          const float* pi = p + r * keys;
          for (i64 j = 0; j < keys; ++j) dsi[j] = pi[j] * (dsi[j] - df);
        }
        // dQ = dS K * scale;  dK += dS^T Q * scale
        gemm(false, false, rows, D, keys, sm_scale, dp, keys, k + hs.kv_off, hs.ldkv, 0.0f, dq + qo,
             hs.ldq);
        gemm(true, false, keys, D, rows, sm_scale, dp, keys, q + qo, hs.ldq, 1.0f, dk + hs.kv_off,
             hs.ldkv);
      }
    }
  }
}

}  // namespace anvil::backend
