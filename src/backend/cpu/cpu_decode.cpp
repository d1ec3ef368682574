// Attention of one new position over the KV cache, for greedy decoding. Work is tiny
// (H x len x D), so plain loops; heads run in parallel.
#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"

namespace anvil::backend {

void CpuBackend::attention_decode(float* out, const float* q, const float* k_cache,
                                  const float* v_cache, i64 len, i64 n_heads, i64 n_kv_heads,
                                  i64 head_dim) {
  ANVIL_CHECK(len > 0 && n_kv_heads > 0 && n_heads % n_kv_heads == 0, "bad decode attention shape");
  const i64 D = head_dim, KV = n_kv_heads * head_dim, group = n_heads / n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  float* probs = scratch(attn_p_, n_heads * len);  // (H, len)
#pragma omp parallel for schedule(static) if (n_heads * len * D > 65536)
  for (i64 h = 0; h < n_heads; ++h) {
    const float* qh = q + h * D;
    const i64 off = (h / group) * D;
    float* p = probs + h * len;
    float mx = -INFINITY;
    for (i64 j = 0; j < len; ++j) {
      const float* kj = k_cache + j * KV + off;
      float s = 0;
      for (i64 d = 0; d < D; ++d) s += qh[d] * kj[d];
      p[j] = s * scale;
      mx = std::max(mx, p[j]);
    }
    float sum = 0;
    for (i64 j = 0; j < len; ++j) sum += (p[j] = std::exp(p[j] - mx));
    float* oh = out + h * D;
    for (i64 d = 0; d < D; ++d) oh[d] = 0;
    for (i64 j = 0; j < len; ++j) {
      const float w = p[j] / sum;
      const float* vj = v_cache + j * KV + off;
      for (i64 d = 0; d < D; ++d) oh[d] += w * vj[d];
    }
  }
}

}  // namespace anvil::backend
