// CpuBackend: the LM head fused with cross-entropy, kLossRows rows at a time so that the
// logits buffer is (kLossRows, V) however many tokens the micro-batch has. With a
// vocabulary shard the block's row maxima, sums and target logits are combined over the
// group between the phases, so no rank ever holds a whole row of logits.
#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_exp.h"
#include "backend/lm_head_shape.h"
#include "core/error.h"

namespace anvil::backend {

namespace {

constexpr std::int32_t kIgnoreIndex = -100;

}  // namespace

// Per row: m = max_j l_j; s = sum_j exp(l_j - m); loss = m + log s - l_target;
// dlogits = (softmax(l) - onehot(target)) * grad_scale;  dhidden = dlogits W.
double CpuBackend::lm_head_cross_entropy(float* dhidden, const float* hidden,
                                         const TensorView& w_head, const std::int32_t* targets,
                                         i64 n, float grad_scale, const VocabShard& shard,
                                         VocabReducer* reduce) {
  const LmHeadShape shape = lm_head_shape(w_head, shard, reduce);
  const i64 V = shape.V, C = shape.C, vocab = shape.vocab, v0 = shape.v0;
  const bool sharded = shape.sharded;
  for (i64 i = 0; i < n; ++i)
    ANVIL_CHECK(targets[i] == kIgnoreIndex || (targets[i] >= 0 && targets[i] < vocab), "target ",
                targets[i], " outside [0, ", vocab, ")");
  float* logits = scratch(logits_, std::min(n, kLossRows) * V);  // (rows, V)
  float row_max[kLossRows];
  double row_sums[2 * kLossRows];  // (rows) sums of exp, then (rows) target logits
  double total = 0.0;
  for (i64 r0 = 0; r0 < n; r0 += kLossRows) {
    const i64 rows = std::min(kLossRows, n - r0);
    const std::int32_t* tg = targets + r0;
    double* sum = row_sums;
    double* target_logit = row_sums + rows;
    linear_forward(logits, hidden + r0 * C, w_head, nullptr, rows, 0.0f);
    for (i64 i = 0; i < rows; ++i) {
      const float* li = logits + i * V;
      row_max[i] = tg[i] == kIgnoreIndex ? 0.0f : *std::max_element(li, li + V);
    }
    if (sharded) reduce->max(row_max, rows);
    // Each exp(l_j - m) replaces its logit, and the gradient's pass reuses it: one exp per
    // logit. Without a gradient the logits are not needed after the sum either.
#pragma omp parallel for schedule(static) if (rows * V >= kParallelWork)
    for (i64 i = 0; i < rows; ++i) {
      float* li = logits + i * V;
      sum[i] = 0.0;
      target_logit[i] = 0.0;
      if (tg[i] == kIgnoreIndex) continue;
      const i64 t = tg[i] - v0;
      if (t >= 0 && t < V) target_logit[i] = li[t];
      exp_shifted(li, row_max[i], li, V);  // in [0, 1]
      for (i64 j = 0; j < V; ++j) sum[i] += li[j];
    }
    if (sharded) reduce->sum(row_sums, 2 * rows);
    for (i64 i = 0; i < rows; ++i)  // in row order: deterministic
      if (tg[i] != kIgnoreIndex)
        total += static_cast<double>(row_max[i]) + std::log(sum[i]) - target_logit[i];
    if (!dhidden) continue;
#pragma omp parallel for schedule(static) if (rows * V >= kParallelWork)
    for (i64 i = 0; i < rows; ++i) {
      float* li = logits + i * V;
      if (tg[i] == kIgnoreIndex) {
        std::fill(li, li + V, 0.0f);
        continue;
      }
      const auto inv_sum = static_cast<float>(1.0 / sum[i]);
      const i64 t = tg[i] - v0;
      const float p_t = t >= 0 && t < V ? li[t] * inv_sum : 0.0f;  // li: exp(l - m) from above
      for (i64 j = 0; j < V; ++j) li[j] = li[j] * inv_sum * grad_scale;
      if (t >= 0 && t < V) li[t] = (p_t - 1.0f) * grad_scale;
    }
    linear_backward_input(dhidden + r0 * C, logits, w_head, rows, 0.0f);
  }
  return total;
}

}  // namespace anvil::backend
