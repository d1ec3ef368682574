// CpuBackend: RMSNorm and rotary embeddings, computed as Hugging Face Llama does in fp32.
#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"

namespace anvil::backend {

namespace {

// A small weight vector (norm weights) as f32: its own memory or a converted copy.
const float* vector_f32(const TensorView& w, i64 c, std::vector<float>& buf) {
  ANVIL_CHECK(w.numel() == c, "norm weight has ", w.numel(), " values, expected ", c);
  if (weight_is_direct_f32(w)) return w.as<const float>();
  float* dst = scratch(buf, c);
  load_f32(dst, w, 0, c);
  return dst;
}

}  // namespace

// HF LlamaRMSNorm: variance = mean(x^2); out = w * (x * rsqrt(variance + eps)). The sum of
// squares is accumulated in double (PyTorch reduces pairwise in float; both are within an
// ulp or two of the exact mean).
void CpuBackend::rmsnorm_forward(float* out, float* rstd, const float* x, const TensorView& w,
                                 i64 n, i64 c, float eps) {
  const float* wf = vector_f32(w, c, norm_w_);
#pragma omp parallel for schedule(static) if (n * c >= kParallelWork)
  for (i64 i = 0; i < n; ++i) {
    const float* xi = x + i * c;
    double ss = 0.0;
    for (i64 j = 0; j < c; ++j) ss += static_cast<double>(xi[j]) * xi[j];
    const auto variance = static_cast<float>(ss / static_cast<double>(c));
    const float r = 1.0f / std::sqrt(variance + eps);
    rstd[i] = r;
    float* oi = out + i * c;
    for (i64 j = 0; j < c; ++j) oi[j] = wf[j] * (xi[j] * r);
  }
}

// With y_j = w_j x_j r and r = (mean(x^2) + eps)^(-1/2):
//   dx_j = r w_j dy_j - (r^3 / c) x_j sum_k dy_k w_k x_k,   dw_j += sum_rows dy_j x_j r.
void CpuBackend::rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x,
                                  const TensorView& w, const float* rstd, i64 n, i64 c,
                                  float beta) {
  const float* wf = vector_f32(w, c, norm_w_);
#pragma omp parallel for schedule(static) if (n * c >= kParallelWork)
  for (i64 i = 0; i < n; ++i) {
    const float* xi = x + i * c;
    const float* gi = dout + i * c;
    float* dxi = dx + i * c;
    double dot = 0.0;
    for (i64 j = 0; j < c; ++j) dot += static_cast<double>(gi[j]) * wf[j] * xi[j];
    const double r = rstd[i];
    const auto coef = static_cast<float>(r * r * r * dot / static_cast<double>(c));
    const float rf = rstd[i];
    for (i64 j = 0; j < c; ++j) {
      const float g = rf * wf[j] * gi[j] - coef * xi[j];
      dxi[j] = beta == 0.0f ? g : g + beta * dxi[j];
    }
  }
  if (!dw) return;
  // Threads own column blocks; every column sums its rows in order (deterministic).
  constexpr i64 kCols = 64;
  const i64 col_blocks = (c + kCols - 1) / kCols;
#pragma omp parallel for schedule(static) if (n * c >= kParallelWork)
  for (i64 cb = 0; cb < col_blocks; ++cb) {
    const i64 c0 = cb * kCols, c1 = std::min(c, c0 + kCols);
    double acc[kCols] = {};
    for (i64 i = 0; i < n; ++i) {
      const double r = rstd[i];
      for (i64 j = c0; j < c1; ++j)
        acc[j - c0] += static_cast<double>(dout[i * c + j]) * x[i * c + j] * r;
    }
    for (i64 j = c0; j < c1; ++j) dw[j] += static_cast<float>(acc[j - c0]);
  }
}

namespace {

// HF rotate-half: for i < D/2, (x_i, x_{i+D/2}) turns by angle pos * inv_freq[i], with the
// angle, cos and sin in fp32 as HF makes them. sign = -1 turns back (the transpose).
void rope_rotate(float* x, const std::int32_t* pos, const float* inv_freq, i64 n, i64 heads,
                 i64 head_dim, float sign) {
  ANVIL_CHECK(head_dim % 2 == 0, "rope needs an even head_dim, got ", head_dim);
  const i64 half = head_dim / 2;
#pragma omp parallel for schedule(static) if (n * heads * head_dim >= kParallelWork)
  for (i64 t = 0; t < n; ++t) {
    const auto p = static_cast<float>(pos[t]);
    for (i64 i = 0; i < half; ++i) {
      const float angle = p * inv_freq[i];
      const float cs = std::cos(angle), sn = sign * std::sin(angle);
      for (i64 h = 0; h < heads; ++h) {
        float* xh = x + (t * heads + h) * head_dim;
        const float x1 = xh[i], x2 = xh[i + half];
        xh[i] = x1 * cs - x2 * sn;
        xh[i + half] = x2 * cs + x1 * sn;
      }
    }
  }
}

}  // namespace

void CpuBackend::rope_forward(float* x, const std::int32_t* pos, const float* inv_freq, i64 n,
                              i64 heads, i64 head_dim) {
  rope_rotate(x, pos, inv_freq, n, heads, head_dim, 1.0f);
}

void CpuBackend::rope_backward(float* dx, const std::int32_t* pos, const float* inv_freq, i64 n,
                               i64 heads, i64 head_dim) {
  rope_rotate(dx, pos, inv_freq, n, heads, head_dim, -1.0f);
}

}  // namespace anvil::backend
