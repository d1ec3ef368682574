// Llama 4's host loops (backend/llama4_ops.h): the CPU backend's Llama 4 ops, and the
// reference the CUDA kernels (kernels/llama4.cu) are held against.
#include "backend/llama4_ops.h"

#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"

namespace anvil::backend {

void llama4_pairs_split(float* out, const float* in, std::int64_t rows, std::int64_t D) {
  const std::int64_t half = D / 2;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t i = 0; i < half; ++i) {
      out[r * D + i] = in[r * D + 2 * i];
      out[r * D + half + i] = in[r * D + 2 * i + 1];
    }
}

void llama4_pairs_join(float* out, const float* in, std::int64_t rows, std::int64_t D) {
  const std::int64_t half = D / 2;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t i = 0; i < half; ++i) {
      out[r * D + 2 * i] = in[r * D + i];
      out[r * D + 2 * i + 1] = in[r * D + half + i];
    }
}

void llama4_temperature(float* x, const std::int32_t* positions, std::int64_t n, std::int64_t width,
                        float floor_scale, float attn_scale) {
  for (std::int64_t t = 0; t < n; ++t) {
    // HF computes the scale in fp32: log1p(floor((pos + 1) / floor_scale)) * attn_scale + 1.
    const float steps = std::floor((static_cast<float>(positions[t]) + 1.0f) / floor_scale);
    const float s = std::log1p(steps) * attn_scale + 1.0f;
    for (std::int64_t c = 0; c < width; ++c) x[t * width + c] *= s;
  }
}

void llama4_route_scores(const float* logits, const MoeRoute& r, std::int64_t n, std::int64_t E, std::int64_t k) {
  for (std::int64_t i = 0; i < n * k; ++i) {
    const float z = logits[(i / k) * E + r.expert[i]];
    r.weight[i] = 1.0f / (1.0f + std::exp(-z));
  }
}

void llama4_scale_rows(float* xs, const MoeRoute& r, std::int64_t n, std::int64_t k, std::int64_t c) {
  for (std::int64_t i = 0; i < n * k; ++i) {
    float* row = xs + static_cast<std::int64_t>(r.row[i]) * c;
    for (std::int64_t j = 0; j < c; ++j) row[j] *= r.weight[i];
  }
}

void llama4_scale_backward(float* dscore, float* d_xs, const float* x, const MoeRoute& r, std::int64_t n,
                           std::int64_t k, std::int64_t c) {
  for (std::int64_t i = 0; i < n * k; ++i) {
    float* d = d_xs + static_cast<std::int64_t>(r.row[i]) * c;
    const float* xt = x + (i / k) * c;
    double dot = 0.0;
    for (std::int64_t j = 0; j < c; ++j) dot += static_cast<double>(d[j]) * xt[j];
    dscore[i] = static_cast<float>(dot);
    for (std::int64_t j = 0; j < c; ++j) d[j] *= r.weight[i];
  }
}

void llama4_router_backward(float* d_logits, const float* dscore, const MoeRoute& r, std::int64_t n,
                            std::int64_t E, std::int64_t k) {
  std::fill(d_logits, d_logits + n * E, 0.0f);
  for (std::int64_t i = 0; i < n * k; ++i) {
    const float s = r.weight[i];
    d_logits[(i / k) * E + r.expert[i]] += dscore[i] * s * (1.0f - s);
  }
}

// The CPU backend's Llama 4 ops are the host loops themselves (single-threaded, as they
// were when the model called them directly).
void CpuBackend::llama4_pairs_split(float* out, const float* in, i64 rows, i64 head_dim) {
  ANVIL_CHECK(head_dim % 2 == 0, "llama4_pairs_split: odd head_dim ", head_dim);
  backend::llama4_pairs_split(out, in, rows, head_dim);
}

void CpuBackend::llama4_pairs_join(float* out, const float* in, i64 rows, i64 head_dim) {
  ANVIL_CHECK(head_dim % 2 == 0, "llama4_pairs_join: odd head_dim ", head_dim);
  backend::llama4_pairs_join(out, in, rows, head_dim);
}

void CpuBackend::llama4_temperature(float* x, const std::int32_t* pos, i64 n, i64 width, float floor_scale,
                                    float attn_scale) {
  backend::llama4_temperature(x, pos, n, width, floor_scale, attn_scale);
}

void CpuBackend::llama4_route_scores(const float* logits, const MoeRoute& r, i64 n, i64 experts, i64 k) {
  backend::llama4_route_scores(logits, r, n, experts, k);
}

void CpuBackend::llama4_scale_rows(float* xs, const MoeRoute& r, i64 n, i64 k, i64 c) {
  backend::llama4_scale_rows(xs, r, n, k, c);
}

void CpuBackend::llama4_scale_backward(float* dscore, float* d_xs, const float* x, const MoeRoute& r, i64 n,
                                       i64 k, i64 c) {
  backend::llama4_scale_backward(dscore, d_xs, x, r, n, k, c);
}

void CpuBackend::llama4_router_backward(float* d_logits, const float* dscore, const MoeRoute& r, i64 n,
                                        i64 experts, i64 k) {
  backend::llama4_router_backward(d_logits, dscore, r, n, experts, k);
}

}  // namespace anvil::backend
