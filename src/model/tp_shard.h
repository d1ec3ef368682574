// How tensor parallelism splits a Llama model over the `size` ranks of one TP group
// (Megatron layout, ../shared/DESIGN.md "Parallelism"):
//   column-parallel  q, k, v, gate, up   W (out, in): rank t holds a block of output rows
//   row-parallel     o, down             W (out, in): rank t holds a block of input columns
//   routed experts   each expert's gate/up/down split like the dense MLP's (every rank holds
//                    a slice of every expert); the router replicated
//   vocab-parallel   embedding, LM head  (V, C):      rank t holds a block of vocabulary rows
//   replicated       norms
// Query heads split evenly. KV heads split evenly when tp divides them; when tp is a
// multiple of the KV heads instead, each KV head is replicated on tp / n_kv_heads
// consecutive ranks (the ranks whose query heads read it), as Megatron does for GQA.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "model/lora.h"
#include "model/model_spec.h"

namespace anvil::model {

struct TpShard {
  int rank = 0;
  int size = 1;
  std::int64_t heads = 0;          // local query heads, H / tp
  std::int64_t kv_heads = 0;       // local KV heads, Hkv / tp, or 1 when replicated
  std::int64_t kv_head_first = 0;  // global index of the first local KV head
  std::int64_t kv_replicas = 1;    // ranks holding the same KV heads (tp / Hkv when tp > Hkv)
  std::int64_t ffn = 0;            // local intermediate rows, F / tp
  std::int64_t expert_ffn = 0;     // local rows of each routed expert, moe.intermediate_size / tp
  std::int64_t vocab = 0;          // local vocabulary rows, V / tp
  std::int64_t vocab_first = 0;    // global index of the first local vocabulary row
  // Expert parallelism (ep_shard_set): this rank holds routed experts [expert_first,
  // expert_first + experts), a contiguous block, num_experts / ep of them.
  int ep_rank = 0, ep_size = 1;
  std::int64_t expert_first = 0;
  std::int64_t experts = 0;        // every expert unless ep_shard_set says otherwise
};

// Every reason `tp` cannot split `spec`, one line each ("does not divide the model's
// num_attention_heads (4)"); empty when it can.
std::vector<std::string> tp_shard_problems(const ModelSpec& spec, int tp);
// Rank `rank`'s part; an internal error when tp_shard_problems is not empty (callers
// validate first, with the config's key in the message).
TpShard tp_shard(const ModelSpec& spec, int rank, int size);

// Rank `ep_rank` of `ep_size` expert-parallel ranks: its block of routed experts (an
// internal error unless ep_size divides num_experts; the config's validation says so first).
void ep_shard_set(TpShard& t, const ModelSpec& spec, int ep_rank, int ep_size);

enum class SplitAxis { split_rows, split_cols };

// The part of a (rows, cols) weight one rank holds: `count` rows or columns from `start`.
struct WeightSlice {
  SplitAxis axis = SplitAxis::split_rows;
  std::int64_t start = 0;
  std::int64_t count = 0;
};

// True for o, down and the experts' down, whose input columns are split.
bool proj_row_parallel(Proj p);
// The slice of projection p's weight (out, in) rank `t` holds.
WeightSlice tp_proj_slice(const ModelSpec& spec, const TpShard& t, Proj p);
// The slice of layer `layer`'s projection p: tp_proj_slice, but Llama 4's gate/up/down
// split their own layer's width (intermediate_size_mlp in a dense layer, the shared
// expert's in a sparse one).
WeightSlice tp_proj_slice_at(const ModelSpec& spec, const TpShard& t, std::int64_t layer, Proj p);
// The local (out, in) of projection p.
std::array<std::int64_t, 2> tp_proj_shape(const ModelSpec& spec, const TpShard& t, Proj p);
// The vocabulary rows of the embedding and the LM head.
WeightSlice tp_vocab_slice(const TpShard& t);

// The model shape one rank computes with: heads, KV heads, intermediate size, vocabulary
// and routed experts held of its slice; everything else as in `spec` (num_experts stays
// the model's: the router scores them all).
ModelSpec tp_local_spec(const ModelSpec& spec, const TpShard& t);

// ---- LoRA adapters under TP (the math is in tp_layers.h) ----------------------------------
// Column-parallel W: A replicated, B's rows split with W's. Row-parallel W: A's columns
// split with W's, B replicated. KV heads replicated on several ranks replicate the rows of
// their k/v B as well. Gradients of replicated matrices are partial sums on each rank.

// The ranks of a TP group whose copies of one adapter matrix are the same parameter.
enum class GradReduce {
  grad_reduce_none,  // complete on every rank
  grad_reduce_tp,    // a partial sum: all-reduce over the TP group
  grad_reduce_kv,    // a partial sum: all-reduce over the ranks sharing the KV heads
};

// One adapter matrix (A or B of one slot) in a rank's local flat buffer.
struct LoraPart {
  std::int64_t offset = 0;  // in the local layout
  std::int64_t count = 0;
  std::int64_t replicas = 1;  // ranks holding the same values (count once in a norm)
  GradReduce grad = GradReduce::grad_reduce_none;
};

// Every A and B of `local` (the layout of tp_local_spec(spec, t)), in buffer order.
std::vector<LoraPart> lora_tp_parts(const TpShard& t, const LoraLayout& local);

// Where one of rank t's adapter matrices sits in the whole matrix: its rows and columns of
// the full (rows, cols) A or B, which are the whole local matrix, stored row-major at
// `local_offset` of the local buffer. `writer`: the lowest TP rank holding these values
// (the one that saves them; replicated copies are not written twice).
struct LoraBlock {
  const LoraSlot* slot = nullptr;  // in the full layout
  char which = 'A';
  std::int64_t rows = 0, cols = 0;  // the whole matrix
  std::int64_t row0 = 0, nrows = 0, col0 = 0, ncols = 0;
  std::int64_t local_offset = 0;
  bool writer = false;
};
std::vector<LoraBlock> lora_tp_blocks(const ModelSpec& spec, const TpShard& t, const LoraLayout& full,
                                      const LoraLayout& local);

// Rank t's values between the full layout (LoraLayout(spec, lora)) and its local layout.
void lora_shard_extract(const ModelSpec& spec, const TpShard& t, const LoraLayout& full,
                        const LoraLayout& local, const float* full_params, float* local_params);
void lora_shard_insert(const ModelSpec& spec, const TpShard& t, const LoraLayout& full,
                       const LoraLayout& local, const float* local_params, float* full_params);

}  // namespace anvil::model
