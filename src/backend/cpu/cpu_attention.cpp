// CpuBackend: causal attention with packed-sequence segments and GQA, one (batch, head) at
// a time: the scores of a head are a (T, T) sgemm, the softmax a parallel loop over rows,
// and the output a second sgemm. Backward recomputes P from q, k and the saved lse.
#include <algorithm>
#include <cmath>
#include <limits>

#include "backend/cpu/cpu_backend.h"
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

}  // namespace

void CpuBackend::attention_forward(float* out, float* lse, const float* q, const float* k,
                                   const float* v, const std::int32_t* segment,
                                   const AttentionShape& s) {
  check_shape(s);
  const i64 T = s.seq, D = s.head_dim, H = s.n_heads;
  const float sm_scale = 1.0f / std::sqrt(static_cast<float>(D));
  float* p = scratch(attn_p_, T * T);  // (T, T)
  for (i64 b = 0; b < s.batch; ++b) {
    const std::int32_t* seg = segment ? segment + b * T : nullptr;
    for (i64 h = 0; h < H; ++h) {
      const HeadSlice hs = head_slice(s, b, h);
      // S = Q K^T * scale
      gemm(false, true, T, T, D, sm_scale, q + hs.q_off, hs.ldq, k + hs.kv_off, hs.ldkv, 0.0f, p,
           T);
      float* lse_bh = lse + (b * H + h) * T;  // (T)
#pragma omp parallel for schedule(static) if (T * T >= kParallelWork)
      for (i64 i = 0; i < T; ++i) {
        float* row = p + i * T;
        float mx = -std::numeric_limits<float>::infinity();
        for (i64 j = 0; j <= i; ++j)
          if (visible(seg, i, j)) mx = std::max(mx, row[j]);
        double sum = 0.0;
        for (i64 j = 0; j < T; ++j) {
          if (visible(seg, i, j)) {
            row[j] = std::exp(row[j] - mx);
            sum += row[j];
          } else {
            row[j] = 0.0f;  // masked keys get exactly zero weight
          }
        }
        const auto inv = static_cast<float>(1.0 / sum);
        for (i64 j = 0; j <= i; ++j) row[j] *= inv;
        lse_bh[i] = mx + static_cast<float>(std::log(sum));
      }
      // O = P V
      gemm(false, false, T, D, T, 1.0f, p, T, v + hs.kv_off, hs.ldkv, 0.0f, out + hs.q_off, hs.ldq);
    }
  }
}

// With P = softmax(S), S = Q K^T * scale:
//   dV += P^T dO;  dP = dO V^T;  dS = P (dP - rowsum(dO * O));
//   dQ = dS K * scale;  dK += dS^T Q * scale.
// The query heads of one kv group accumulate into the same dK, dV slices.
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
  float* p = scratch(attn_p_, T * T);    // (T, T) P
  float* dp = scratch(attn_dp_, T * T);  // (T, T) dP, then dS
  for (i64 b = 0; b < s.batch; ++b) {
    const std::int32_t* seg = segment ? segment + b * T : nullptr;
    for (i64 h = 0; h < H; ++h) {
      const HeadSlice hs = head_slice(s, b, h);
      const float* lse_bh = lse + (b * H + h) * T;
      gemm(false, true, T, T, D, sm_scale, q + hs.q_off, hs.ldq, k + hs.kv_off, hs.ldkv, 0.0f, p,
           T);
#pragma omp parallel for schedule(static) if (T * T >= kParallelWork)
      for (i64 i = 0; i < T; ++i) {
        float* row = p + i * T;
        for (i64 j = 0; j < T; ++j)
          row[j] = visible(seg, i, j) ? std::exp(row[j] - lse_bh[i]) : 0.0f;
      }
      // dV += P^T dO
      gemm(true, false, T, D, T, 1.0f, p, T, dout + hs.q_off, hs.ldq, 1.0f, dv + hs.kv_off,
           hs.ldkv);
      // dP = dO V^T
      gemm(false, true, T, T, D, 1.0f, dout + hs.q_off, hs.ldq, v + hs.kv_off, hs.ldkv, 0.0f, dp,
           T);
#pragma omp parallel for schedule(static) if (T * T >= kParallelWork)
      for (i64 i = 0; i < T; ++i) {
        const float* doi = dout + hs.q_off + i * hs.ldq;
        const float* oi = out + hs.q_off + i * hs.ldq;
        double delta = 0.0;
        for (i64 d = 0; d < D; ++d) delta += static_cast<double>(doi[d]) * oi[d];
        const auto df = static_cast<float>(delta);
        float* dsi = dp + i * T;
        const float* pi = p + i * T;
        for (i64 j = 0; j < T; ++j) dsi[j] = pi[j] * (dsi[j] - df);
      }
      // dQ = dS K * scale;  dK += dS^T Q * scale
      gemm(false, false, T, D, T, sm_scale, dp, T, k + hs.kv_off, hs.ldkv, 0.0f, dq + hs.q_off,
           hs.ldq);
      gemm(true, false, T, D, T, sm_scale, dp, T, q + hs.q_off, hs.ldq, 1.0f, dk + hs.kv_off,
           hs.ldkv);
    }
  }
}

}  // namespace anvil::backend
