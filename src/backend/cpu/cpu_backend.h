// CpuBackend: the fp32 reference backend. Matrix products go to OpenBLAS (cblas_sgemm),
// elementwise and per-row loops to OpenMP. BLAS is never called inside an OpenMP parallel
// region: OpenBLAS runs its own threads.
//
// Scratch lives in members sized by reserve(); an op that needs more than was reserved
// grows its buffer (so the ops work without reserve(), as in unit tests), but after
// reserve() with the run's limits no op allocates.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.h"

namespace anvil::backend {

// Rows of the LM head logits made at a time: the logits buffer is (kLossRows, V).
inline constexpr i64 kLossRows = 64;
// Query rows of one attention block (cpu_attention.cpp): its scores are (kAttnRows, keys).
inline constexpr i64 kAttnRows = 128;
// Rows of a LoRA input handled at a time when a (rows, in) scratch is needed.
inline constexpr i64 kLoraRows = 256;
// Floats of bf16 weight rows converted to f32 before one sgemm.
inline constexpr i64 kConvertFloats = i64{1} << 20;
// Experts per sparse layer that reserve() sizes the experts' ordering for (the largest MoE
// models have 256); a layer with more grows it once.
inline constexpr i64 kReservedExperts = 1024;
// Elementwise work (in simple float operations) below which a loop stays on one thread: a
// team costs microseconds to start, and more while OpenBLAS's threads still spin.
inline constexpr i64 kParallelWork = i64{1} << 15;

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  void reserve(const BackendLimits& limits) override;

  void* memory_alloc(std::size_t bytes) override;
  void memory_free(void* p) override;
  void copy(void* dst, const void* src, std::size_t bytes) override;
  void copy_from_host(void* dst, const void* host, std::size_t bytes) override;
  void copy_to_host(void* host, const void* src, std::size_t bytes) override;
  void fill_zero(void* dst, std::size_t bytes) override;
  TensorView weight_place(const TensorView& w) override { return w; }

  void gemm(bool trans_a, bool trans_b, i64 m, i64 n, i64 k, float alpha, const float* a,
            i64 lda, const float* b, i64 ldb, float beta, float* c, i64 ldc) override;
  void linear_forward(float* y, const float* x, const TensorView& w, const float* bias, i64 m,
                      float beta) override;
  void linear_backward_input(float* dx, const float* dy, const TensorView& w, i64 m,
                             float beta) override;

  void embedding_forward(float* out, const std::int32_t* ids, const TensorView& table, i64 n,
                         const VocabShard& shard) override;
  void embedding_backward(float* dtable, const float* dout, const std::int32_t* ids, i64 n,
                          i64 vocab, i64 dim) override;

  void rmsnorm_forward(float* out, float* rstd, const float* x, const TensorView& w, i64 n,
                       i64 c, float eps) override;
  void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x,
                        const TensorView& w, const float* rstd, i64 n, i64 c,
                        float beta) override;

  void rope_forward(float* x, const std::int32_t* pos, const float* inv_freq, i64 n, i64 heads,
                    i64 head_dim) override;
  void rope_backward(float* dx, const std::int32_t* pos, const float* inv_freq, i64 n,
                     i64 heads, i64 head_dim) override;

  void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                         const std::int32_t* segment, const AttentionShape& s) override;
  void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                          const float* lse, const float* q, const float* k, const float* v,
                          const std::int32_t* segment, const AttentionShape& s) override;

  void attention_decode(float* out, const float* q, const float* k_cache, const float* v_cache,
                        i64 len, i64 n_heads, i64 n_kv_heads, i64 head_dim) override;

  void swiglu_forward(float* h, const float* gate, const float* up, i64 n) override;
  void swiglu_backward(float* dgate, float* dup, const float* dh, const float* gate,
                       const float* up, i64 n) override;

  double lm_head_cross_entropy(float* dhidden, const float* hidden, const TensorView& w_head,
                               const std::int32_t* targets, i64 n, float grad_scale,
                               const VocabShard& shard, VocabReducer* reduce) override;

  void lora_down(float* xa, const float* x, const float* a, i64 n, i64 in, i64 r,
                 const LoraDropout& drop) override;
  void lora_up(float* y, const float* xa, const float* b, i64 n, i64 out, i64 r,
               float scale) override;
  void lora_backward(float* dx, float* da, float* db, const float* dy, const float* x,
                     const float* xa, const float* a, const float* b, i64 n, i64 in, i64 out,
                     i64 r, float scale, const LoraDropout& drop) override;

  void moe_route(const float* logits, i64 n, i64 experts, i64 k, bool norm_topk,
                 const MoeRoute& r) override;
  void moe_gather(float* xs, const float* x, const MoeRoute& r, i64 n, i64 k, i64 c) override;
  void moe_combine(float* y, const float* ye, const MoeRoute& r, i64 n, i64 k, i64 c) override;
  void moe_combine_backward(float* dweight, float* d_ye, const float* dy, const float* ye,
                            const MoeRoute& r, i64 n, i64 k, i64 c) override;
  void moe_scatter(float* dx, const float* dxs, const MoeRoute& r, i64 n, i64 k, i64 c) override;
  void moe_router_backward(float* d_logits, const float* dweight, const MoeRoute& r, i64 n,
                           i64 experts, i64 k, bool norm_topk, const double* aux_grad) override;
  void moe_aux_accumulate(double* count, double* prob_sum, const MoeRoute& r, i64 n, i64 experts,
                          i64 k) override;
  void moe_residual_add(float* y, const float* x, i64 n) override;
  // The experts side by side on the OpenMP threads, each with its own worker backend (its
  // own scratch) and single-threaded BLAS (cpu_moe_experts.cpp).
  void moe_experts_forward(const MoeExpert* experts, i64 count, const MoeExpertActs& a) override;
  void moe_experts_backward(const MoeExpert* experts, i64 count, const MoeExpertActs& a,
                            const MoeExpertGrads& g) override;
  // Llama 4: the host loops of backend/llama4_ops.h (cpu_llama4.cpp).
  void llama4_pairs_split(float* out, const float* in, i64 rows, i64 head_dim) override;
  void llama4_pairs_join(float* out, const float* in, i64 rows, i64 head_dim) override;
  void llama4_temperature(float* x, const std::int32_t* pos, i64 n, i64 width, float floor_scale,
                          float attn_scale) override;
  void llama4_route_scores(const float* logits, const MoeRoute& r, i64 n, i64 experts, i64 k) override;
  void llama4_scale_rows(float* xs, const MoeRoute& r, i64 n, i64 k, i64 c) override;
  void llama4_scale_backward(float* dscore, float* d_xs, const float* x, const MoeRoute& r, i64 n, i64 k,
                             i64 c) override;
  void llama4_router_backward(float* d_logits, const float* dscore, const MoeRoute& r, i64 n, i64 experts,
                              i64 k) override;

  double sum_squares(const float* x, i64 n) override;
  void scale(float* x, float s, i64 n) override;
  void adamw_update(float* p, const float* g, float* m, float* v, i64 n,
                    const AdamwArgs& args) override;

 private:
  // A weight as f32 rows [row0, row0 + rows) of `cols` values: the weight's own memory
  // when it is aligned f32, otherwise converted (bf16) or dequantized (nf4, fp8) into
  // weight_rows_, which reserve() sizes: a quantized weight is never expanded whole.
  const float* weight_rows_f32(const TensorView& w, i64 row0, i64 rows);
  // Rows of a weight converted per sgemm: the whole weight when it is usable directly.
  i64 weight_row_block(const TensorView& w) const;

  std::vector<float> weight_rows_;  // (rows, in) converted bf16 / dequantized / misaligned rows
  std::vector<float> norm_w_;       // (c) norm weight as f32
  std::vector<float> attn_p_;       // (threads, kAttnRows, T) scores, then probabilities
  std::vector<float> attn_dp_;      // (threads, kAttnRows, T) dP, then dS
  std::vector<float> logits_;       // (kLossRows, V) logits, then dlogits
  std::vector<float> lora_x_;       // (kLoraRows, in) dropout(x), then dx before the mask
  std::vector<float> lora_g_;       // (kLoraRows, r) dy B * scale
  std::vector<i64> embed_order_;    // (V + n) embedding backward: run ends by id, tokens by id
  std::vector<i64> expert_order_;   // (experts) the order moe_experts_* hand them out in
  // One backend per OpenMP thread for the experts run side by side: their scratch is their
  // own. reserve() makes and sizes them; a call with more threads adds workers.
  std::vector<std::unique_ptr<CpuBackend>> expert_workers_;
  std::vector<std::unique_ptr<CpuBackend>>& expert_workers(int threads);
  // This backend's own scratch, without the workers'.
  void reserve_own(const BackendLimits& limits);
};

// Makes `buf` hold at least n elements; allocates only when it is too small.
template <typename T>
T* scratch(std::vector<T>& buf, i64 n) {
  if (static_cast<i64>(buf.size()) < n) buf.resize(static_cast<std::size_t>(n));
  return buf.data();
}

// Whether a weight view can be handed to BLAS as it is.
bool weight_is_direct_f32(const TensorView& w);
// Whether a weight view holds quantized codes (nf4, fp8_e4m3) and their QuantState.
bool weight_is_quantized(const TensorView& w);
// Copies `count` elements starting at element `offset` of an f32 or bf16 view into dst as
// f32; safe on misaligned views.
void load_f32(float* dst, const TensorView& w, i64 offset, i64 count);

}  // namespace anvil::backend
