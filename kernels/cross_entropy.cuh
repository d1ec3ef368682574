// Cross-entropy over a block of LM-head logits (rows, V), in the phases a vocab-parallel
// loss needs: row statistics, then (after the group has combined them) the loss and the
// gradient in place of the logits. The caller makes the logits a bounded block of rows at
// a time, so full (n, V) fp32 logits never exist.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace anvil::kernels {

inline constexpr std::int32_t kIgnoreIndex = -100;

// Per row i with targets[i] != -100: row_max[i] = max_j logits[i, j] (0 for ignored rows).
void cross_entropy_row_max(float* row_max, const float* logits, const std::int32_t* targets,
                           std::int64_t rows, std::int64_t V, cudaStream_t stream);
// sums (2 * rows) doubles: sums[i] = sum_j exp(logits[i,j] - row_max[i]);
// sums[rows + i] = logits[i, targets[i] - first] when the target is in this shard, else 0.
// Ignored rows: both 0. A target outside [0, vocab) sets *bad_target (device int32) to 1.
void cross_entropy_row_sums(double* sums, const float* logits, const float* row_max,
                            const std::int32_t* targets, std::int64_t rows, std::int64_t V,
                            std::int64_t first, std::int64_t vocab, std::int32_t* bad_target,
                            cudaStream_t stream);
// loss_acc (1 double) += sum over non-ignored rows of row_max + log(sum) - target_logit, in
// row order (one thread: deterministic). When `grad`, logits become
// (softmax - onehot(target)) * grad_scale in place (ignored rows: 0).
void cross_entropy_loss_grad(float* logits, double* loss_acc, const float* row_max,
                             const double* sums, const std::int32_t* targets, std::int64_t rows,
                             std::int64_t V, std::int64_t first, float grad_scale, bool grad,
                             cudaStream_t stream);

}  // namespace anvil::kernels
