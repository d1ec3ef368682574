#include "model/llama4_ops.h"

#include <algorithm>
#include <cmath>

namespace anvil::model {

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

void llama4_chunk_segments(std::int32_t* out, const std::int32_t* segments, const std::int32_t* positions,
                           std::int64_t batch, std::int64_t seq, std::int64_t chunk) {
  for (std::int64_t b = 0; b < batch; ++b) {
    std::int32_t id = 0;
    for (std::int64_t t = 0; t < seq; ++t) {
      const std::int64_t i = b * seq + t;
      const bool same = t > 0 && positions[i] / chunk == positions[i - 1] / chunk &&
                        (!segments || segments[i] == segments[i - 1]);
      if (t > 0 && !same) ++id;
      out[i] = id;
    }
  }
}

void llama4_temperature(float* x, const std::int32_t* positions, std::int64_t n, std::int64_t width,
                        const Llama4Spec& spec) {
  for (std::int64_t t = 0; t < n; ++t) {
    // HF computes the scale in fp32: log1p(floor((pos + 1) / floor_scale)) * attn_scale + 1.
    const float steps = std::floor((static_cast<float>(positions[t]) + 1.0f) / static_cast<float>(spec.floor_scale));
    const float s = std::log1p(steps) * static_cast<float>(spec.attn_scale) + 1.0f;
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

void llama4_sum_experts(float* y, const float* ye, const MoeRoute& r, std::int64_t n, std::int64_t k,
                        std::int64_t c) {
  std::fill(y, y + n * c, 0.0f);
  for (std::int64_t i = 0; i < n * k; ++i) {
    const float* row = ye + static_cast<std::int64_t>(r.row[i]) * c;
    float* out = y + (i / k) * c;
    for (std::int64_t j = 0; j < c; ++j) out[j] += row[j];
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

}  // namespace anvil::model
