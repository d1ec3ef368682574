// CudaBackend: the LM head fused with cross-entropy, a block of rows at a time so the f32
// logits stay (cuda_loss_rows(V), V) however many tokens come. The algorithm is the CPU
// backend's; its phases are kernels/cross_entropy launchers, with the vocab-parallel
// reductions (on device buffers) in between. The loss and the bad-target flag stay on the
// device until the last block: one host sync per call.
#include <algorithm>

#include "backend/cuda/cuda_backend.h"
#include "core/dtype.h"
#include "backend/lm_head_shape.h"
#include "core/error.h"
#include "cross_entropy.cuh"
#include "cuda_check.cuh"

namespace anvil::backend {

// Per row: m = max_j l_j; s = sum_j exp(l_j - m); loss = m + log s - l_target;
// dlogits = (softmax(l) - onehot(target)) * grad_scale;  dhidden = dlogits W.
double CudaBackend::lm_head_cross_entropy(float* dhidden, const float* hidden,
                                          const TensorView& w_head, const std::int32_t* targets,
                                          i64 n, float grad_scale, const VocabShard& shard,
                                          VocabReducer* reduce) {
  const LmHeadShape shape = lm_head_shape(w_head, shard, reduce);
  const i64 V = shape.V, C = shape.C, vocab = shape.vocab, v0 = shape.v0;
  const bool sharded = shape.sharded;
  if (n == 0) return 0.0;

  const i64 block = std::min(n, cuda_loss_rows(V));
  auto* logits = static_cast<float*>(
      grow(logits_, static_cast<std::size_t>(block * V) * sizeof(float)));  // (block, V)
  auto* sums = static_cast<double*>(
      grow(loss_stats_, static_cast<std::size_t>(block) * (2 * sizeof(double) + sizeof(float))));
  // sums: (rows) sums of exp, then (rows) target logits; row_max (block) after them.
  auto* row_max = reinterpret_cast<float*>(sums + 2 * block);
  // Stable from here: the linear calls below grow only the bf16 staging buffer.
  CUDA_CHECK(cudaMemsetAsync(&scalars_->loss, 0, sizeof(double), stream_));
  CUDA_CHECK(cudaMemsetAsync(&scalars_->bad_target, 0, sizeof(std::int32_t), stream_));

  for (i64 r0 = 0; r0 < n; r0 += block) {
    const i64 rows = std::min(block, n - r0);
    const std::int32_t* tg = targets + r0;
    linear_forward(logits, hidden + r0 * C, w_head, nullptr, rows, 0.0f);  // (rows, V)
    kernels::cross_entropy_row_max(row_max, logits, tg, rows, V, stream_);
    if (sharded) reduce->max(row_max, rows);
    kernels::cross_entropy_row_sums(sums, logits, row_max, tg, rows, V, v0, vocab,
                                    &scalars_->bad_target, stream_);
    if (sharded) reduce->sum(sums, 2 * rows);
    kernels::cross_entropy_loss_grad(logits, &scalars_->loss, row_max, sums, tg, rows, V, v0,
                                     grad_scale, dhidden != nullptr, stream_);
    if (dhidden) linear_backward_input(dhidden + r0 * C, logits, w_head, rows, 0.0f);
  }

  // The one host wait of the micro-batch: the loss, and the flags of this call's targets and
  // of the ids every embedding lookup since the last loss saw (embedding_forward does not wait).
  Scalars result{};
  CUDA_CHECK(cudaMemcpyAsync(&result, scalars_, sizeof(Scalars), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaMemsetAsync(&scalars_->bad_id, 0, sizeof(std::int32_t), stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  ANVIL_CHECK(result.bad_id == 0, "a token id outside the vocabulary");
  ANVIL_CHECK(result.bad_target == 0, "a target outside [0, ", vocab, ") (and not -100)");
  return result.loss;
}

}  // namespace anvil::backend
