// CudaBackend: the Backend on one CUDA device. Frozen 2-D weights live as bf16 copies the
// backend owns (1-D norm weights as f32); their products go to cuBLASLt with bf16 inputs
// and fp32 accumulation and output; everything else is a kernels/ launcher. All work is
// issued on one non-blocking compute stream, in call order; the host waits only where a
// value has to come back (a loss, a norm, a bad-id flag, a copy to the host).
//
// Scratch (bf16 staging of GEMM inputs, logits, kernel workspaces) is device memory sized
// by reserve(); an op that needs more grows it (after a stream sync), so ops also work
// without reserve(), but after reserve() with the run's limits no op allocates.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "backend/backend_support.h"

namespace anvil::backend {

// Bytes of the cuBLASLt workspace (shared with cuBLAS: both run on the one stream).
inline constexpr std::size_t kCublasWorkspaceBytes = std::size_t{32} << 20;
// The (rows, V) f32 logits block of the LM-head loss stays under this many bytes.
inline constexpr std::size_t kLossLogitsBytes = std::size_t{512} << 20;
inline constexpr i64 kCudaLossRows = 1024;  // and never has more rows than this
// The largest LoRA rank the kernels take (kernels/lora.cu), from the table that config
// validation reads.
inline constexpr int kCudaMaxLoraRank = kCudaSupport.max_lora_rank;

// Rows of LM-head logits made at a time for a vocabulary (shard) of V rows.
i64 cuda_loss_rows(i64 V);

// One device buffer that only grows.
struct DeviceScratch {
  void* ptr = nullptr;
  std::size_t bytes = 0;
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  // The compute stream every op is issued on (communication orders itself against it).
  cudaStream_t stream() const { return stream_; }
  int device() const { return device_; }

  const char* name() const override { return "cuda"; }
  void reserve(const BackendLimits& limits) override;

  bool on_device() const override { return true; }
  bool is_device_memory(const void* p) const override;
  void* native_stream() const override { return stream_; }
  void* memory_alloc(std::size_t bytes) override;
  void memory_free(void* p) override;
  void copy(void* dst, const void* src, std::size_t bytes) override;
  void copy_from_host(void* dst, const void* host, std::size_t bytes) override;
  void copy_to_host(void* host, const void* src, std::size_t bytes) override;
  void fill_zero(void* dst, std::size_t bytes) override;
  TensorView weight_place(const TensorView& w) override;
  void synchronize() override;
  std::string device_identity() const override;

  void gemm(bool trans_a, bool trans_b, i64 m, i64 n, i64 k, float alpha, const float* a, i64 lda,
            const float* b, i64 ldb, float beta, float* c, i64 ldc) override;
  void linear_forward(float* y, const float* x, const TensorView& w, const float* bias, i64 m,
                      float beta) override;
  void linear_backward_input(float* dx, const float* dy, const TensorView& w, i64 m,
                             float beta) override;

  void embedding_forward(float* out, const std::int32_t* ids, const TensorView& table, i64 n,
                         const VocabShard& shard) override;
  void embedding_backward(float* dtable, const float* dout, const std::int32_t* ids, i64 n,
                          i64 vocab, i64 dim) override;

  void rmsnorm_forward(float* out, float* rstd, const float* x, const TensorView& w, i64 n, i64 c,
                       float eps) override;
  void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x,
                        const TensorView& w, const float* rstd, i64 n, i64 c, float beta) override;

  void rope_forward(float* x, const std::int32_t* pos, const float* inv_freq, i64 n, i64 heads,
                    i64 head_dim) override;
  void rope_backward(float* dx, const std::int32_t* pos, const float* inv_freq, i64 n, i64 heads,
                     i64 head_dim) override;

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
                     const float* xa, const float* a, const float* b, i64 n, i64 in, i64 out, i64 r,
                     float scale, const LoraDropout& drop) override;

  // Mixture of experts (cuda_moe.cpp; kernels/moe.cu, UNRUN on a GPU).
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

  // Llama 4 (cuda_llama4.cpp; kernels/llama4.cu, UNRUN on a GPU).
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
  // The descriptors and algorithm of one cuBLASLt product shape, made once per shape.
  struct LtPlan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  // (A transposed?, M, N, K, lda, ldb, ldd, alignment of A, of B, of D in bytes)
  using LtKey = std::array<i64, 10>;

  // D(M,N) = op(A)(M,K) B(K,N) + beta D, column-major, A and B bf16, D f32 in place.
  void lt_matmul(bool trans_a, i64 M, i64 N, i64 K, const std::uint16_t* a, i64 lda,
                 const std::uint16_t* b, i64 ldb, float beta, float* d, i64 ldd);
  const LtPlan& lt_plan(const LtKey& key);
  // `bytes` of scratch in `buf`, growing it (after the stream is idle) when too small.
  void* grow(DeviceScratch& buf, std::size_t bytes);
  // x (count f32) as bf16 in the staging buffer.
  const std::uint16_t* stage_bf16(const float* x, i64 count);
  void release() noexcept;

  // Quantized base weights (cuda_quant.cpp; UNRUN on a GPU): device copies of the codes and
  // scales, and the linear ops on them, a bf16 panel of dequantized rows at a time.
  TensorView quant_weight_place(const TensorView& w);
  const std::uint16_t* quant_dequant_rows(const TensorView& w, i64 r0, i64 rows);
  // forward: dst = y (m, out) from src = x (m, in); backward: dst = dx (m, in) from src = dy.
  void quant_linear(bool backward, float* dst, const float* src, const TensorView& w, i64 m, float beta);

  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  void* blas_workspace_ = nullptr;  // kCublasWorkspaceBytes
  // Device scalars: the loss and norm accumulators (double) and error flags (int32).
  struct Scalars {
    double loss;
    double sum_squares;
    std::int32_t bad_target;
    std::int32_t bad_id;
  };
  Scalars* scalars_ = nullptr;

  DeviceScratch stage_;       // bf16 copy of a GEMM input: (m, in) x or (m, out) dy
  DeviceScratch logits_;      // (loss rows, V) f32 logits, then dlogits
  DeviceScratch loss_stats_;  // (2 * loss rows) double sums, then (loss rows) f32 row maxima
  DeviceScratch attn_ws_;     // attention backward workspace
  DeviceScratch decode_ws_;   // (H, len) f32 decode probabilities
  DeviceScratch lora_ws_;     // LoRA backward workspace
  DeviceScratch embed_ws_;    // embedding backward workspace
  DeviceScratch sumsq_ws_;    // sum_squares partials
  DeviceScratch quant_panel_; // (tile rows, in) bf16 rows of a dequantized weight

  std::map<LtKey, LtPlan> lt_plans_;
  std::vector<void*> weights_;  // device copies made by weight_place, freed with the backend
  std::vector<std::unique_ptr<QuantState>> quant_states_;  // of placed quantized weights
};

}  // namespace anvil::backend
