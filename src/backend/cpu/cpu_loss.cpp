// CpuBackend: the LM head fused with cross-entropy, kLossRows rows at a time so that the
// logits buffer is (kLossRows, V) however many tokens the micro-batch has.
#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"

namespace anvil::backend {

namespace {

constexpr std::int32_t kIgnoreIndex = -100;

}  // namespace

// Per row: lse = log sum_j exp(l_j); loss = lse - l_target;
// dlogits = (softmax(l) - onehot(target)) * grad_scale;  dhidden = dlogits W.
double CpuBackend::lm_head_cross_entropy(float* dhidden, const float* hidden,
                                         const TensorView& w_head, const std::int32_t* targets,
                                         i64 n, float grad_scale) {
  ANVIL_CHECK(w_head.shape.rank() == 2, "LM head must be 2-D, got ", w_head.shape.str());
  const i64 V = w_head.shape[0], C = w_head.shape[1];
  for (i64 i = 0; i < n; ++i)
    ANVIL_CHECK(targets[i] == kIgnoreIndex || (targets[i] >= 0 && targets[i] < V), "target ",
                targets[i], " outside [0, ", V, ")");
  float* logits = scratch(logits_, std::min(n, kLossRows) * V);  // (rows, V)
  double row_loss[kLossRows];
  double total = 0.0;
  for (i64 r0 = 0; r0 < n; r0 += kLossRows) {
    const i64 rows = std::min(kLossRows, n - r0);
    linear_forward(logits, hidden + r0 * C, w_head, nullptr, rows, 0.0f);
#pragma omp parallel for schedule(static) if (rows * V >= kParallelWork)
    for (i64 i = 0; i < rows; ++i) {
      float* li = logits + i * V;
      const std::int32_t t = targets[r0 + i];
      row_loss[i] = 0.0;
      if (t == kIgnoreIndex) {
        if (dhidden) std::fill(li, li + V, 0.0f);
        continue;
      }
      const float mx = *std::max_element(li, li + V);
      double sum = 0.0;
      for (i64 j = 0; j < V; ++j) sum += std::exp(li[j] - mx);  // each term in (0, 1]
      row_loss[i] = static_cast<double>(mx) + std::log(sum) - static_cast<double>(li[t]);
      if (!dhidden) continue;
      const auto inv_sum = static_cast<float>(1.0 / sum);
      const float p_t = std::exp(li[t] - mx) * inv_sum;
      for (i64 j = 0; j < V; ++j) li[j] = std::exp(li[j] - mx) * inv_sum * grad_scale;
      li[t] = (p_t - 1.0f) * grad_scale;
    }
    for (i64 i = 0; i < rows; ++i) total += row_loss[i];  // in row order: deterministic
    if (dhidden) linear_backward_input(dhidden + r0 * C, logits, w_head, rows, 0.0f);
  }
  return total;
}

}  // namespace anvil::backend
