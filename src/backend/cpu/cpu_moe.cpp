// The mixture-of-experts host loops (backend/moe_route.h): the CPU backend's MoE ops, and
// the reference the CUDA kernels (kernels/moe.cu) are held against.
#include "backend/moe_route.h"

#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"

namespace anvil::backend {

namespace {

void softmax_row(const float* x, float* p, std::int64_t E) {
  float mx = x[0];
  for (std::int64_t e = 1; e < E; ++e) mx = std::max(mx, x[e]);
  float sum = 0.0f;
  for (std::int64_t e = 0; e < E; ++e) {
    p[e] = std::exp(x[e] - mx);
    sum += p[e];
  }
  for (std::int64_t e = 0; e < E; ++e) p[e] /= sum;
}

// The k largest of p (E), best first; a tie goes to the lower index.
void top_k(const float* p, std::int64_t E, std::int64_t k, std::int32_t* out) {
  for (std::int64_t j = 0; j < k; ++j) {
    std::int64_t best = -1;
    for (std::int64_t e = 0; e < E; ++e) {
      if (std::find(out, out + j, static_cast<std::int32_t>(e)) != out + j) continue;
      if (best < 0 || p[e] > p[best]) best = e;
    }
    out[j] = static_cast<std::int32_t>(best);
  }
}

}  // namespace

void moe_route(const float* logits, std::int64_t n, std::int64_t E, std::int64_t k, bool norm_topk,
               const MoeRoute& r) {
#pragma omp parallel for schedule(static) if (n * E >= kParallelWork)
  for (std::int64_t t = 0; t < n; ++t) {
    float* p = r.probs + t * E;
    softmax_row(logits + t * E, p, E);
    std::int32_t* ex = r.expert + t * k;
    top_k(p, E, k, ex);
    float sum = 0.0f;
    for (std::int64_t j = 0; j < k; ++j) sum += p[ex[j]];
    for (std::int64_t j = 0; j < k; ++j) r.weight[t * k + j] = norm_topk ? p[ex[j]] / sum : p[ex[j]];
  }
  // Counting sort of the n·k choices by expert, stable in (token, choice) order, with no
  // scratch: offsets[e + 1] starts at expert e's first row and, as e's cursor, ends at e + 1's.
  std::fill(r.offsets, r.offsets + E + 1, 0);
  for (std::int64_t i = 0; i < n * k; ++i) ++r.offsets[r.expert[i] + 1];
  for (std::int64_t e = 0; e < E; ++e) r.offsets[e + 1] += r.offsets[e];  // [e]: e's first row
  for (std::int64_t e = E; e > 0; --e) r.offsets[e] = r.offsets[e - 1];    // [e + 1]: e's first row
  for (std::int64_t i = 0; i < n * k; ++i) {
    const std::int64_t row = r.offsets[r.expert[i] + 1]++;
    r.row[i] = static_cast<std::int32_t>(row);
    r.token[row] = static_cast<std::int32_t>(i / k);
  }
}

void moe_router_backward(float* d_logits, const float* dweight, const MoeRoute& r, std::int64_t n,
                         std::int64_t E, std::int64_t k, bool norm_topk, const double* aux_grad) {
#pragma omp parallel for schedule(static) if (n * E * k >= kParallelWork)
  for (std::int64_t t = 0; t < n; ++t) {
    const float* p = r.probs + t * E;
    const std::int32_t* ex = r.expert + t * k;
    const float* dw = dweight + t * k;
    // w_j = p_j / S with S = Σ_top p: dL/dp_j = (dw_j − Σ_i dw_i w_i) / S; else dL/dp_j = dw_j.
    double s = 1.0, dot = 0.0;
    if (norm_topk) {
      s = 0.0;
      for (std::int64_t j = 0; j < k; ++j) s += p[ex[j]];
      for (std::int64_t j = 0; j < k; ++j) dot += static_cast<double>(dw[j]) * r.weight[t * k + j];
    }
    // dL/dprobs[e]: the aux loss's share plus that of each choice of e (a few, in choice
    // order), made where it is needed rather than kept in a row of scratch.
    auto dp = [&](std::int64_t e) {
      double v = aux_grad ? aux_grad[e] : 0.0;
      for (std::int64_t j = 0; j < k; ++j)
        if (ex[j] == e) v += norm_topk ? (dw[j] - dot) / s : static_cast<double>(dw[j]);
      return v;
    };
    // Softmax: dlogit_e = p_e (dp_e − Σ_i p_i dp_i).
    double mean = 0.0;
    for (std::int64_t e = 0; e < E; ++e) mean += p[e] * dp(e);
    for (std::int64_t e = 0; e < E; ++e) d_logits[t * E + e] = static_cast<float>(p[e] * (dp(e) - mean));
  }
}

void moe_aux_accumulate(double* count, double* prob_sum, const MoeRoute& r, std::int64_t n, std::int64_t E,
                        std::int64_t k) {
  for (std::int64_t i = 0; i < n * k; ++i) count[r.expert[i]] += 1.0;
  for (std::int64_t t = 0; t < n; ++t)
    for (std::int64_t e = 0; e < E; ++e) prob_sum[e] += r.probs[t * E + e];
}

void moe_gather(float* xs, const float* x, const MoeRoute& r, std::int64_t n, std::int64_t k, std::int64_t c) {
#pragma omp parallel for schedule(static) if (n * k * c >= kParallelWork)
  for (std::int64_t row = 0; row < n * k; ++row) std::copy_n(x + r.token[row] * c, c, xs + row * c);
}

void moe_combine(float* y, const float* ye, const MoeRoute& r, std::int64_t n, std::int64_t k, std::int64_t c) {
#pragma omp parallel for schedule(static) if (n * k * c >= kParallelWork)
  for (std::int64_t t = 0; t < n; ++t) {
    float* out = y + t * c;
    std::fill(out, out + c, 0.0f);
    for (std::int64_t j = 0; j < k; ++j) {
      const float w = r.weight[t * k + j];
      const float* src = ye + static_cast<std::int64_t>(r.row[t * k + j]) * c;
      for (std::int64_t i = 0; i < c; ++i) out[i] += w * src[i];
    }
  }
}

void moe_combine_backward(float* dweight, float* d_ye, const float* dy, const float* ye, const MoeRoute& r,
                          std::int64_t n, std::int64_t k, std::int64_t c) {
#pragma omp parallel for schedule(static) if (n * k * c >= kParallelWork)
  for (std::int64_t t = 0; t < n; ++t) {
    const float* g = dy + t * c;
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int64_t row = r.row[t * k + j];
      const float* src = ye + row * c;
      double dot = 0.0;
      for (std::int64_t i = 0; i < c; ++i) dot += static_cast<double>(g[i]) * src[i];
      dweight[t * k + j] = static_cast<float>(dot);
      const float w = r.weight[t * k + j];
      float* dst = d_ye + row * c;
      for (std::int64_t i = 0; i < c; ++i) dst[i] = w * g[i];
    }
  }
}

void moe_scatter(float* dx, const float* dxs, const MoeRoute& r, std::int64_t n, std::int64_t k, std::int64_t c) {
#pragma omp parallel for schedule(static) if (n * k * c >= kParallelWork)
  for (std::int64_t t = 0; t < n; ++t) {
    float* out = dx + t * c;
    std::fill(out, out + c, 0.0f);
    for (std::int64_t j = 0; j < k; ++j) {
      const float* src = dxs + static_cast<std::int64_t>(r.row[t * k + j]) * c;
      for (std::int64_t i = 0; i < c; ++i) out[i] += src[i];
    }
  }
}

// The CPU backend's MoE ops are the host loops themselves. Their per-token loops write only
// their token's outputs (and its choices' rows, which no other token has), so they split over
// the threads with the same results.
void CpuBackend::moe_route(const float* logits, i64 n, i64 experts, i64 k, bool norm_topk, const MoeRoute& r) {
  ANVIL_CHECK(n >= 0 && k >= 1 && experts >= k, "MoE routing: n = ", n, ", ", experts, " experts, top ", k);
  backend::moe_route(logits, n, experts, k, norm_topk, r);
}

void CpuBackend::moe_gather(float* xs, const float* x, const MoeRoute& r, i64 n, i64 k, i64 c) {
  backend::moe_gather(xs, x, r, n, k, c);
}

void CpuBackend::moe_combine(float* y, const float* ye, const MoeRoute& r, i64 n, i64 k, i64 c) {
  backend::moe_combine(y, ye, r, n, k, c);
}

void CpuBackend::moe_combine_backward(float* dweight, float* d_ye, const float* dy, const float* ye,
                                      const MoeRoute& r, i64 n, i64 k, i64 c) {
  backend::moe_combine_backward(dweight, d_ye, dy, ye, r, n, k, c);
}

void CpuBackend::moe_scatter(float* dx, const float* dxs, const MoeRoute& r, i64 n, i64 k, i64 c) {
  backend::moe_scatter(dx, dxs, r, n, k, c);
}

void CpuBackend::moe_router_backward(float* d_logits, const float* dweight, const MoeRoute& r, i64 n,
                                     i64 experts, i64 k, bool norm_topk, const double* aux_grad) {
  backend::moe_router_backward(d_logits, dweight, r, n, experts, k, norm_topk, aux_grad);
}

void CpuBackend::moe_aux_accumulate(double* count, double* prob_sum, const MoeRoute& r, i64 n, i64 experts,
                                    i64 k) {
  backend::moe_aux_accumulate(count, prob_sum, r, n, experts, k);
}

void CpuBackend::moe_residual_add(float* y, const float* x, i64 n) {
  for (i64 i = 0; i < n; ++i) y[i] += x[i];
}

}  // namespace anvil::backend
