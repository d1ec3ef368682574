// A Llama decoder (Llama 2/3, Mistral, Qwen2, SmolLM2 shapes) with frozen base weights and
// LoRA adapters, written as explicit forward and backward passes over Backend ops.
//
// One training micro-batch:  embed ─► L × block ─► final norm ─► LM head + cross-entropy
// and back in reverse layer order. Block l:
//   xn1 = rmsnorm(x)            q,k,v = xn1·W^T + LoRA, rope(q, k)
//   x_mid = x + attention(q,k,v)·Wo^T + LoRA
//   xn2 = rmsnorm(x_mid)        h = silu(xn2·Wg^T + LoRA) * (xn2·Wu^T + LoRA)
//   x_out = x_mid + h·Wd^T + LoRA
// Qwen3 normalises each head of q and k (q_norm, k_norm) before rope. A sparse block
// (Qwen3-MoE, Mixtral) routes each token of xn2 to its top-k experts instead of the MLP
// (model/moe_routing.h): rows sorted by expert, one GEMM per expert with its own adapters,
//   x_out = x_mid + Σ_j weight_j · expert_j(xn2)
// and the router (frozen) gets its gradient through the weights and, when config.json asks
// for it, through transformers' load-balancing loss.
// Every buffer lives in one arena sized at construction from (micro_batch, seq_len); with
// activation checkpointing only each block's input is kept and the block is recomputed
// inside backward.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "core/arena.h"
#include "model/llama_weights.h"
#include "model/lora.h"
#include "model/model_spec.h"
#include "model/moe_dispatch.h"
#include "model/moe_routing.h"
#include "model/tp_layers.h"

namespace anvil::model {

// Rows of token ids with their targets, positions and document segments, (B, T) each.
struct TokenBatch {
  std::int64_t batch = 0, seq = 0;
  const std::int32_t* ids = nullptr;
  const std::int32_t* targets = nullptr;    // -100: not trained; null for logits only
  const std::int32_t* positions = nullptr;  // restart at 0 for each packed document
  const std::int32_t* segments = nullptr;   // null: one document per row
  // Index of the first row among all rows of the optimizer step (keys dropout masks, so
  // the masks do not depend on how the step is split into micro-batches or ranks).
  std::int64_t row_offset = 0;
};

struct ModelLimits {
  std::int64_t micro_batch = 1;
  std::int64_t seq_len = 0;
  bool activation_checkpointing = false;
};

// The rotary frequencies HF uses for `spec` (default, linear or llama3 scaling), (D/2).
std::vector<float> rope_inv_freq(const ModelSpec& spec);

// One rank's part of projection p of block `layer` (of routed expert `expert` for the
// expert projections): base weight, bias and, when `lora` has an adapter there, its A and B
// in `params` and their gradients in `grads` (may be null).
LinearShard linear_shard(const BaseWeights& base, const LoraLayout* lora, const float* params,
                         float* grads, std::int64_t layer, Proj p, std::int64_t expert = -1);

// One projection of block `layer` over n rows on one rank: y(n, out) = x W^T (+ bias) +
// beta*y, plus the adapter when `lora` has one there (xa (n, r) saved for backward). The
// KV-cache decoder's projection.
void project_forward(backend::Backend& be, const BaseWeights& base, const LoraLayout* lora,
                     const float* lora_params, std::int64_t layer, Proj p, float* y,
                     const float* x, float* xa, std::int64_t n, float beta,
                     const backend::LoraDropout& drop);

// The TP group of a single-rank model.
TpGroup tp_single(const ModelSpec& spec);

// Frees backend memory that is not an arena's (a deleter for std::unique_ptr).
struct BackendFree {
  backend::Backend* be = nullptr;
  void operator()(void* p) const {
    if (be) be->memory_free(p);
  }
};

// Every buffer the model hands its backend is backend memory (device memory for the CUDA
// backend): the arena, the staged micro-batch, and the frozen weights, which the constructor
// puts where the backend reads them (Backend::weight_place). The TP group's Comm must work
// on backend memory too (NCCL, or MPI staged through the host). Callers pass host arrays
// (TokenBatch) and read adapter parameters and gradients through the backend's copies.
//
// With tensor parallelism each rank of the TP group builds the model with its own TpGroup:
// `spec` is the whole model's shape, `base` this rank's slices (base_weights_load with the
// shard) and `lora` the local layout, LoraLayout(tp_local_spec(spec, shard), ...).
class LlamaModel {
 public:
  LlamaModel(ModelSpec spec, BaseWeights base, LoraLayout lora, ModelLimits limits,
             backend::Backend& backend, std::uint64_t dropout_seed);
  LlamaModel(ModelSpec spec, BaseWeights base, LoraLayout lora, ModelLimits limits,
             backend::Backend& backend, std::uint64_t dropout_seed, TpGroup tp);
  LlamaModel(const LlamaModel&) = delete;
  LlamaModel& operator=(const LlamaModel&) = delete;

  const ModelSpec& spec() const { return spec_; }
  const LoraLayout& lora_layout() const { return lora_; }  // this rank's
  const TpGroup& tp() const { return tp_; }
  // Every adapter matrix of this rank's buffer, with how it is shared over the TP group.
  const std::vector<LoraPart>& lora_parts() const { return parts_; }
  const BaseWeights& base() const { return base_; }
  backend::Backend& backend() const { return be_; }
  float* lora_params() { return buf_.lora_params; }
  const float* lora_params() const { return buf_.lora_params; }
  float* lora_grads() { return buf_.lora_grads; }
  std::int64_t lora_size() const { return lora_.size(); }
  // Bytes of parameters, gradients and activations held in the arena.
  std::size_t arena_bytes() const { return arena_.capacity(); }
  // The arena bytes of a model whose rank holds `local` (tp_local_spec) with adapter
  // layout `lora`, without building it: the constructor's own carving, in plan mode.
  // `activations`: the element type of the activation buffers (f32, as the CPU backend
  // computes; bf16 projects a GPU run). Adapter parameters and gradients stay f32.
  static std::size_t arena_bytes_for(const ModelSpec& local, const LoraLayout& lora, const ModelLimits& limits,
                                     DType activations = DType::dtype_f32);
  // The shapes the model reserves its backend's scratch for.
  static backend::BackendLimits backend_limits_for(const ModelSpec& local, const ModelLimits& limits);
  void zero_grads();

  // Forward and backward of one micro-batch at optimizer step `step`: the LoRA gradients
  // grow by grad_scale · d(sum of token losses). Returns the sum of token losses.
  double train_micro_batch(const TokenBatch& batch, float grad_scale, std::uint64_t step);
  // Once per optimizer step, after the last micro-batch: sums the adapter gradients that
  // are partial over the TP group (the replicated A and B matrices, B of replicated KV heads).
  // Nothing for one rank.
  void reduce_tp_grads();
  // Then, under ep: the data-parallel sum of the adapter gradients, the routed experts' over
  // `edp` (the ranks holding the same experts), the rest over `dp` (moe_dispatch.h).
  void reduce_ep_grads(comm::Comm& dp, comm::Comm& edp);
  // Sum of squared adapter gradients of the whole model, each replicated parameter counted
  // once; the same on every rank of the TP group (one all-reduce).
  double grad_sum_squares();
  // Sum of token losses, no dropout, no gradients.
  double eval_loss(const TokenBatch& batch);
  // logits (B*T, V) for every position, no dropout, into `out` in backend memory. One rank
  // only (no TP).
  void logits(const TokenBatch& batch, float* out);

  // Mixture of experts: the weight of the load-balancing loss in the gradient of the next
  // train_micro_batch calls (config.json's router_aux_loss_coef divided by the step's
  // micro-batches; 0 leaves the router's loss out), and the loss of the last forward.
  void set_aux_loss_weight(float w) { aux_weight_ = w; }
  double last_aux_loss() const { return aux_loss_; }
  // Tokens routed to each expert of each sparse layer in the last forward, (layer, E)
  // row-major over the sparse layers in order (min/max load for the metrics).
  std::vector<std::int64_t> last_expert_load() const;
  // The routing of sparse layer `layer` in the last forward (null for a dense layer), in the
  // backend's memory.
  const MoeRoute* route(std::int64_t layer) const {
    return spec_.layer_is_moe(layer) ? &buf_.routes[static_cast<std::size_t>(layer)] : nullptr;
  }

 private:
  // Shapes with this rank's H, Hkv, F (the whole model's divided over the TP group).
  struct LayerActs {
    float* x_in;   // (N, C) block input, kept with checkpointing
    float* xn1;    // (N, C)
    float* rstd1;  // (N)
    float* q;      // (N, H*D) after rope
    float* k;      // (N, Hkv*D) after rope
    float* v;      // (N, Hkv*D)
    float* att;    // (N, H*D)
    float* lse;    // (B, H, T)
    float* x_mid;  // (N, C)
    float* xn2;    // (N, C)
    float* rstd2;  // (N)
    float* gate;   // (N, F)
    float* up;     // (N, F)
    float* h;      // (N, F)
    std::array<float*, kProjCount> xa{};  // (N, r) per adapted projection; (N·k, r) per expert one
    // qk-norm: q and k before their norm, and the norms' 1/rms per head
    float* q_pre = nullptr;   // (N, H*D)
    float* k_pre = nullptr;   // (N, Hkv*D)
    float* rstd_q = nullptr;  // (N*H)
    float* rstd_k = nullptr;  // (N*Hkv)
    // a sparse block's rows in expert order (R = N·k), fe = this rank's rows of an expert
    float* xs = nullptr;     // (R, C) gathered xn2
    float* egate = nullptr;  // (R, fe)
    float* eup = nullptr;    // (R, fe)
    float* eh = nullptr;     // (R, fe)
    float* ye = nullptr;     // (R, C) expert outputs (partial sums over the TP group)
    // Under ep the five above hold the rows this rank's experts received (R · ep at most,
    // expert-major, moe_dispatch.h), and the outputs come back here, in this rank's order.
    float* ye_home = nullptr;  // (R, C); null without ep (then ye is it)
  };
  // Every buffer of the arena, in the order carve() takes them.
  struct Buffers {
    float* lora_params = nullptr;  // (lora size)
    float* lora_grads = nullptr;   // (lora size)
    // The micro-batch in backend memory (a device backend's ops cannot read host arrays),
    // (N) each, and the rotary frequencies (D/2).
    std::int32_t* ids = nullptr;
    std::int32_t* targets = nullptr;
    std::int32_t* positions = nullptr;
    std::int32_t* segments = nullptr;
    float* inv_freq = nullptr;
    std::vector<LayerActs> acts;   // per layer; with checkpointing all but x_in shared
    float* x_final = nullptr;      // (N, C) last block output
    float* xf = nullptr;           // (N, C) final norm output
    float* rstdf = nullptr;        // (N)
    float* d_res = nullptr;        // (N, C) residual gradient
    float* d_xn = nullptr;         // (N, C)
    float* d_q = nullptr;          // (N, H*D)
    float* d_att = nullptr;        // (N, H*D)
    float* d_k = nullptr;          // (N, Hkv*D)
    float* d_v = nullptr;          // (N, Hkv*D)
    float* d_gate = nullptr;       // (N, F)
    float* d_up = nullptr;         // (N, F)
    float* d_h = nullptr;          // (N, F)
    float* d_qn = nullptr;         // (N, H*D) qk-norm: gradient before the norm
    float* d_kn = nullptr;         // (N, Hkv*D)
    // Llama 4: the weight of its weightless qk-norm, and the chunked layers' segments
    float* ones = nullptr;                    // (D) all 1
    std::int32_t* chunk_segments = nullptr;   // (N)
    // sparse blocks: the routing of each layer (kept for the aux loss and backward), and
    // scratch shared by the layers
    std::vector<MoeRoute> routes;  // per layer; empty for dense layers
    float* logits = nullptr;       // (N, E) router logits, then their gradient
    float* moe_out = nullptr;      // (N, C) the combined expert outputs
    float* dweight = nullptr;      // (N, k)
    float* d_ye = nullptr;         // (R, C)
    float* d_xs = nullptr;         // (R, C); then (N, C) Llama 4's shared expert's input gradient
    float* d_egate = nullptr;      // (R, fe)
    float* d_eup = nullptr;        // (R, fe)
    float* d_eh = nullptr;         // (R, fe)
    double* moe_aux = nullptr;     // (3, E) aux loss: choice counts, probability sums, dL/dprobs
    float* ep_home = nullptr;      // (R, C) ep: rows and gradients on their way out or back
  };
  // Takes every buffer from `arena` (null pointers in plan mode). The one list of the
  // arena's contents: the constructor and arena_bytes_for both run it.
  static void carve(Arena& arena, const ModelSpec& local, const LoraLayout& lora, const ModelLimits& limits,
                    DType activations, Buffers& out);
  void check_batch(const TokenBatch& b, bool need_targets) const;
  backend::VocabShard vocab_shard() const;
  backend::LoraDropout dropout_for(std::int64_t layer, Proj p, const TokenBatch& b) const;
  // y(N, out) = x W^T (+ bias) + beta*y, plus the adapter.
  void project(std::int64_t layer, Proj p, float* y, const float* x, float* xa,
               const TokenBatch& b, float beta);
  // dx(N, in) = dy W + beta*dx, plus the adapter's input gradient; adapter grads +=.
  void project_backward(std::int64_t layer, Proj p, float* dx, const float* dy, const float* x,
                        const float* xa, const TokenBatch& b, float beta);
  // Runs block `layer` on acts.x_in, writing its output to x_out (null: recompute only
  // what backward needs).
  void block_forward(std::int64_t layer, LayerActs& a, float* x_out, const TokenBatch& b);
  // d_res holds dL/d(x_out) and becomes dL/d(x_in).
  void block_backward(std::int64_t layer, const LayerActs& a, float* d_res, const TokenBatch& b);
  // q, k (and v) of block `layer` from a.xn1, normed per head (qk-norm) and rotated.
  void qkv_forward(std::int64_t layer, LayerActs& a, const TokenBatch& b);
  // d_q, d_k (rotated, normed) back to d_xn of the block input's norm.
  void qkv_backward(std::int64_t layer, const LayerActs& a, const TokenBatch& b);
  // Llama 4 (model/llama4_attention.cpp): q and k from their projections in a.q, a.k to
  // what the attention reads (rope with pairs split, qk-norm; the NoPE temperature), and
  // d_q, d_k back to the projections' outputs.
  void llama4_qk_forward(std::int64_t layer, LayerActs& a, const TokenBatch& b);
  void llama4_qk_backward(std::int64_t layer, const LayerActs& a, const TokenBatch& b);
  // The segments block `layer`'s attention masks with: Llama 4's chunks on its RoPE layers.
  const std::int32_t* attention_segments(std::int64_t layer, const TokenBatch& b) const;
  // The sparse MLP: x_out = x_mid + the weighted experts of a.xn2 (x_out null: recompute).
  void moe_forward(std::int64_t layer, LayerActs& a, float* x_out, const TokenBatch& b);
  // dL/d(x_out) in d_res to dL/d(xn2) in buf_.d_xn (complete over the TP group).
  void moe_backward(std::int64_t layer, const LayerActs& a, const float* d_res);
  // After a forward: the load-balancing loss of every sparse layer's routing, and its
  // gradient per expert (aux_grad_) scaled by aux_weight_.
  void aux_loss_compute(std::int64_t n);
  // Embedding, every block and the final norm; returns the final normed hidden (N, C).
  const float* forward_hidden(const TokenBatch& b);
  // `b` with its arrays in backend memory: itself on the CPU, uploaded copies on a device.
  // Llama 4's chunk segments are made from the host batch here and uploaded with it.
  TokenBatch stage_batch(const TokenBatch& b);

  ModelSpec spec_;   // the whole model
  ModelSpec local_;  // this rank's heads, KV heads, intermediate rows and vocabulary
  BaseWeights base_;
  LoraLayout lora_;
  ModelLimits limits_;
  backend::Backend& be_;
  std::uint64_t dropout_seed_;
  TpGroup tp_;
  std::unique_ptr<MoeDispatch> ep_;  // the routed experts' token exchange; null: ep 1
  std::vector<LoraPart> parts_;
  // Backend memory that is not the arena's, freed through the backend.
  std::unique_ptr<float, BackendFree> tp_stage_;  // partial gradients packed for one all-reduce
  std::unique_ptr<float, BackendFree> ep_stage_;  // ep: the gradients packed per reduction group
  std::unique_ptr<double, BackendFree> tp_scalar_;  // (1) a sum reduced over the TP group
  std::uint64_t step_ = 0;
  bool dropout_on_ = false;
  std::int64_t n_max_ = 0;  // B*T
  std::int64_t n_cur_ = 0;  // B*T of the micro-batch in flight
  float aux_weight_ = 0.0f;
  double aux_loss_ = 0.0;
  std::vector<double> aux_grad_;  // (E) dL/dprobs of every sparse row; empty: no aux loss
  std::vector<std::int32_t> chunk_host_;  // (B*T) Llama 4's chunk segments before staging

  Arena arena_;
  Buffers buf_;
};

}  // namespace anvil::model
