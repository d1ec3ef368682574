// Tensor-parallel layers (Megatron), one function per layer kind, each stating where its
// matrix is split and where the all-reduce sits. The collectives come in conjugate pairs:
//   column-parallel  Y_t = X·W_tᵀ                 forward: identity   backward: all-reduce dX
//   row-parallel     Y   = Σ_t X_t·W_tᵀ           forward: all-reduce  backward: identity
//   vocab-parallel   embedding rows / LM head rows, cross-entropy reduced per row
// With no TP group (comm null or of size 1) every collective returns at once and each
// layer is the plain single-rank layer.
//
// LoRA under TP, y += s·drop(x)·Aᵀ·Bᵀ, adds no collective of its own:
//   column-parallel W: A (r, in) replicated, B sharded with W's output rows. dB_t is
//     complete; dA_t and the adapter's share of dX are partial sums over the group: dX is
//     all-reduced with the base layer's dX, dA once per optimizer step (LlamaModel).
//   row-parallel W: A sharded with W's input columns, B (out, r) replicated. The partial
//     product is linear in the (n, r) xa_t = drop(X_t)·A_tᵀ, so each rank adds
//     s·xa_t·Bᵀ to its partial output and the layer's one all-reduce sums it too. dB_t =
//     s·dYᵀ·xa_t is then a partial sum, reduced once per optimizer step with the A's.
#pragma once

#include <cstdint>

#include "backend/backend.h"
#include "comm/comm.h"
#include "core/tensor.h"
#include "model/tp_shard.h"

namespace anvil::model {

// The TP group a model runs in.
struct TpGroup {
  TpShard shard;                  // this rank's part of the model
  comm::Comm* comm = nullptr;     // the group; null: one rank
  comm::Comm* kv_comm = nullptr;  // ranks holding the same KV heads; null unless kv_replicas > 1
  comm::Comm* ep_comm = nullptr;  // the expert-parallel group (shard.ep_size ranks); null: ep 1
};

// Sums x (n) over the group in place; nothing for one rank.
void tp_allreduce(comm::Comm* tp, float* x, std::int64_t n);

// One rank's part of a linear layer and its adapter.
struct LinearShard {
  TensorView w;                 // (out, in), this rank's slice
  const float* bias = nullptr;  // (out) or null
  const float* a = nullptr;     // (r, in) adapter A; null: no adapter
  const float* b = nullptr;     // (out, r) adapter B
  float* da = nullptr;          // (r, in) gradient of A, accumulated
  float* db = nullptr;          // (out, r) gradient of B, accumulated
  std::int64_t r = 0;
  float scale = 0.0f;
  std::int64_t in() const { return w.shape[1]; }
  std::int64_t out() const { return w.shape[0]; }
};

// y(n, out) = beta·y + x·Wᵀ (+ bias) + s·drop(x)·Aᵀ·Bᵀ, all local; xa (n, r) = drop(x)·Aᵀ
// saved. This is the column-parallel forward (X replicated, no collective) and the
// single-rank layer.
void linear_forward_local(backend::Backend& be, const LinearShard& l, float* y, const float* x,
                          float* xa, std::int64_t n, float beta, const backend::LoraDropout& drop);

// dx(n, in) = beta·dx + dy·W + the adapter's input gradient; da, db += adapter gradients.
// All local: for a column-parallel layer dx and da are this rank's partial sums; for a
// row-parallel one everything is complete.
void linear_backward_local(backend::Backend& be, const LinearShard& l, float* dx, const float* dy,
                           const float* x, const float* xa, std::int64_t n, float beta,
                           const backend::LoraDropout& drop);

// Row-parallel: y(n, out) = beta·y + Σ_t [x_t·W_tᵀ + s·drop(x_t)·A_tᵀ·Bᵀ] (+ bias), with
// x_t (n, in_t) this rank's input columns; one all-reduce of (n, out). xa (n, r) saved is
// this rank's partial xa_t. Backward: linear_backward_local.
void row_parallel_forward(backend::Backend& be, comm::Comm* tp, const LinearShard& l, float* y,
                          const float* x, float* xa, std::int64_t n, float beta,
                          const backend::LoraDropout& drop);

// Vocab-parallel embedding: out(n, C) = table[ids] with the table's rows split over the
// group; each rank looks up the ids it holds (zeros elsewhere), then one all-reduce.
void vocab_parallel_embedding(backend::Backend& be, comm::Comm* tp, float* out,
                              const std::int32_t* ids, const TensorView& table, std::int64_t n,
                              const backend::VocabShard& shard);

// Vocab-parallel LM head + cross-entropy: the sum of token losses over the whole
// vocabulary, with the per-row max, sum of exponentials and target logit reduced over the
// group a block of rows at a time. dhidden (n, C), when not null, is the complete gradient
// (the shards' parts all-reduced: the conjugate of the head's replicated input).
double vocab_parallel_cross_entropy(backend::Backend& be, comm::Comm* tp, float* dhidden,
                                    const float* hidden, const TensorView& w_head,
                                    const std::int32_t* targets, std::int64_t n,
                                    float grad_scale, const backend::VocabShard& shard);

}  // namespace anvil::model
