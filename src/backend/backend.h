// Backend: the op interface the model is written against. The CPU backend (cpu/) is the
// fp32 reference; the CUDA backend implements the same calls with cuBLAS and kernels/.
//
// Conventions, shared by every op:
// - Row-major buffers, raw pointers and explicit sizes (as a kernel launcher takes them);
//   activations and gradients are f32. Shapes are in the comment of each call.
// - Frozen base weights come as TensorViews in Hugging Face layout, (out, in) for a linear
//   layer, in f32 or bf16; an op reads bf16 weights as exact f32 values. The linear ops
//   also take quantized views (nf4, fp8_e4m3 with TensorView::quant, see
//   quant/quant_state.h) and read them as their dequantized f32 values (CPU backend).
// - `beta` on an output: 0 overwrites it, 1 accumulates into it. Outputs without beta are
//   overwritten.
// - Ops never allocate per call once warmed up: scratch is sized by reserve() before the
//   step loop (the model calls it with its largest shapes).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/llama4_ops.h"
#include "backend/moe_experts.h"
#include "backend/moe_route.h"
#include "core/philox.h"
#include "core/tensor.h"

namespace anvil::backend {

using i64 = std::int64_t;

// Causal self-attention over a batch of sequences. `segment` (B*T int32, may be null):
// packed sequences; a query attends to key j only if j <= i and segment[j] == segment[i].
// Query head h uses kv head h / (n_heads / n_kv_heads) (GQA). Softmax scale 1/sqrt(D).
struct AttentionShape {
  i64 batch = 0;
  i64 seq = 0;
  i64 n_heads = 0;
  i64 n_kv_heads = 0;
  i64 head_dim = 0;
};

// LoRA dropout on the adapter input: element (row, col) of x is kept with probability
// 1 - p and scaled by 1/(1-p). The keep decision is philox_uniform(stream, index) >= p with
// index = (row_offset + row) * row_stride + col_offset + col, so the mask depends only on
// the token's place in the optimizer step and the global column, never on how rows are
// split over micro-batches and data-parallel ranks or columns over tensor-parallel ranks.
struct LoraDropout {
  float p = 0.0f;  // 0: no dropout (the op never draws a number)
  PhiloxStream stream{};
  i64 row_offset = 0;
  i64 row_stride = 0;  // the layer's full (unsharded) input width
  i64 col_offset = 0;
};

struct AdamwArgs {
  float lr = 0.0f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;  // decoupled: p -= lr * wd * p
  std::int64_t step = 1;      // 1-based, for bias correction
};

// The vocabulary rows [first, first + table rows) of `total` that one rank holds of a
// vocab-parallel embedding or LM head. total = 0: the table is the whole vocabulary.
struct VocabShard {
  i64 first = 0;
  i64 total = 0;
};

// The reductions a vocab-parallel cross-entropy needs over the ranks holding the other
// vocabulary shards, elementwise and in place, on backend buffers. Called by every rank of
// the group in the same order; never called when one rank holds the whole vocabulary.
class VocabReducer {
 public:
  virtual ~VocabReducer() = default;
  virtual void max(float* x, i64 n) = 0;
  virtual void sum(double* x, i64 n) = 0;
};

// The largest shapes the run will use; reserve() sizes scratch from them.
struct BackendLimits {
  i64 max_tokens = 0;      // B*T of one micro-batch
  i64 max_seq = 0;         // T
  i64 max_heads = 0;       // attention heads
  i64 max_head_dim = 0;
  i64 max_width = 0;       // largest linear input width (LoRA dropout scratch)
  i64 vocab = 0;           // LM head rows
  i64 hidden = 0;          // LM head columns
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  virtual void reserve(const BackendLimits& limits) = 0;

  // ---- memory: where the ops' buffers live ---------------------------------------------
  // Every pointer an op takes is backend memory: host memory for the CPU backend (these
  // calls are then plain allocations and memcpy), device memory for the CUDA backend.
  // Allocation happens before the step loop (arenas), never inside it.
  virtual bool on_device() const { return false; }
  // Whether `p` points into this backend's device memory (false on the CPU backend, whose
  // memory is host memory): lets one communicator take host scalars and backend buffers
  // alike (runtime/group_comm.h).
  virtual bool is_device_memory(const void* /*p*/) const { return false; }
  // The native stream this backend's ops run on (a cudaStream_t), for device collectives
  // that must be ordered with them (NCCL); null on the CPU backend.
  virtual void* native_stream() const { return nullptr; }
  // `bytes` of zeroed backend memory, aligned to at least 64 bytes; memory_free releases it.
  virtual void* memory_alloc(std::size_t bytes) = 0;
  virtual void memory_free(void* p) = 0;
  virtual void copy(void* dst, const void* src, std::size_t bytes) = 0;  // backend to backend
  virtual void copy_from_host(void* dst, const void* host, std::size_t bytes) = 0;
  virtual void copy_to_host(void* host, const void* src, std::size_t bytes) = 0;
  virtual void fill_zero(void* dst, std::size_t bytes) = 0;
  // A frozen weight (host view: mapped file or host memory) where this backend's ops read
  // it: the CPU backend returns the view itself; the CUDA backend a bf16 copy in device
  // memory that it owns for its lifetime.
  virtual TensorView weight_place(const TensorView& w) = 0;
  // Waits for every op issued so far (the CPU backend's ops are synchronous).
  virtual void synchronize() {}
  // The device this backend computes on, for the per-rank binding line: a GPU's UUID and
  // PCI bus id; empty on the CPU backend.
  virtual std::string device_identity() const { return {}; }

  // ---- dense algebra -------------------------------------------------------------------
  // C(m,n) = alpha * op(A) op(B) + beta * C; op(X) = X^T when trans_x. f32.
  virtual void gemm(bool trans_a, bool trans_b, i64 m, i64 n, i64 k, float alpha,
                    const float* a, i64 lda, const float* b, i64 ldb, float beta, float* c,
                    i64 ldc) = 0;
  // y(m, out) = x(m, in) W^T (+ bias(out)) + beta*y, with W (out, in) = w.shape.
  virtual void linear_forward(float* y, const float* x, const TensorView& w, const float* bias,
                              i64 m, float beta) = 0;
  // dx(m, in) = dy(m, out) W + beta*dx.
  virtual void linear_backward_input(float* dx, const float* dy, const TensorView& w, i64 m,
                                     float beta) = 0;

  // ---- embedding -----------------------------------------------------------------------
  // out(n, C) = table[ids]; table (V, C). With a vocabulary shard, rows of ids outside
  // the shard are zero (the group's sum is the full lookup). An id outside the whole
  // vocabulary is an internal error.
  virtual void embedding_forward(float* out, const std::int32_t* ids, const TensorView& table,
                                 i64 n, const VocabShard& shard = {}) = 0;
  // dtable(V, C) += scatter of dout(n, C) by ids.
  virtual void embedding_backward(float* dtable, const float* dout, const std::int32_t* ids,
                                  i64 n, i64 vocab, i64 dim) = 0;

  // ---- RMSNorm: out = x / sqrt(mean(x^2) + eps) * w ------------------------------------
  // x, out (n, c); rstd (n) saved for backward; w (c).
  virtual void rmsnorm_forward(float* out, float* rstd, const float* x, const TensorView& w,
                               i64 n, i64 c, float eps) = 0;
  // dx(n, c) = ... + beta*dx; dw(c) += ... when dw is not null (full fine-tuning).
  virtual void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x,
                                const TensorView& w, const float* rstd, i64 n, i64 c,
                                float beta) = 0;

  // ---- rotary position embedding, HF rotate-half layout --------------------------------
  // x (n, heads, head_dim) in place; pos (n); inv_freq (head_dim/2). For pair i < D/2:
  // (x_i, x_{i+D/2}) rotated by angle pos * inv_freq[i].
  virtual void rope_forward(float* x, const std::int32_t* pos, const float* inv_freq, i64 n,
                            i64 heads, i64 head_dim) = 0;
  // The transpose (rotation by the negative angle), in place on the gradient.
  virtual void rope_backward(float* dx, const std::int32_t* pos, const float* inv_freq, i64 n,
                             i64 heads, i64 head_dim) = 0;

  // ---- attention -----------------------------------------------------------------------
  // q, out (B, T, H, D); k, v (B, T, Hkv, D); lse (B, H, T) saved for backward.
  virtual void attention_forward(float* out, float* lse, const float* q, const float* k,
                                 const float* v, const std::int32_t* segment,
                                 const AttentionShape& s) = 0;
  // dq (B, T, H, D); dk, dv (B, T, Hkv, D); all overwritten.
  virtual void attention_backward(float* dq, float* dk, float* dv, const float* dout,
                                  const float* out, const float* lse, const float* q,
                                  const float* k, const float* v, const std::int32_t* segment,
                                  const AttentionShape& s) = 0;

  // One query position against a KV cache (greedy decoding): q, out (H*D) for the newest
  // position; k_cache, v_cache (len, Hkv*D) hold positions 0 .. len-1, its own included.
  virtual void attention_decode(float* out, const float* q, const float* k_cache,
                                const float* v_cache, i64 len, i64 n_heads, i64 n_kv_heads,
                                i64 head_dim) = 0;

  // ---- SwiGLU: h = silu(gate) * up, elementwise over n values ---------------------------
  virtual void swiglu_forward(float* h, const float* gate, const float* up, i64 n) = 0;
  virtual void swiglu_backward(float* dgate, float* dup, const float* dh, const float* gate,
                               const float* up, i64 n) = 0;

  // ---- LM head fused with cross-entropy ------------------------------------------------
  // hidden (n, C), w_head (V, C), targets (n) with -100 = ignored. Returns the sum over
  // non-ignored rows of -log softmax(hidden W^T)[target], accumulated in double. When
  // dhidden is not null it is set to grad_scale * d(sum)/d(hidden) (ignored rows: 0).
  // Logits are made a bounded block of rows at a time, never (n, V) at once.
  // Vocab-parallel: w_head holds the shard's rows, targets are global ids, `reduce` combines
  // the row maxima and sums of the shards, and dhidden is this shard's part of the gradient
  // (the caller sums it over the group). The loss returned is the whole vocabulary's.
  virtual double lm_head_cross_entropy(float* dhidden, const float* hidden,
                                       const TensorView& w_head, const std::int32_t* targets,
                                       i64 n, float grad_scale, const VocabShard& shard = {},
                                       VocabReducer* reduce = nullptr) = 0;

  // ---- LoRA: y += scale * dropout(x) A^T B^T -------------------------------------------
  // x (n, in); a (r, in); b (out, r); y (n, out) accumulated; xa (n, r) saved = dropout(x) A^T.
  // Two halves, so that a row-parallel layer can sum xa over its group in between.
  virtual void lora_down(float* xa, const float* x, const float* a, i64 n, i64 in, i64 r,
                         const LoraDropout& drop) = 0;
  virtual void lora_up(float* y, const float* xa, const float* b, i64 n, i64 out, i64 r,
                       float scale) = 0;
  void lora_forward(float* y, float* xa, const float* x, const float* a, const float* b, i64 n,
                    i64 in, i64 out, i64 r, float scale, const LoraDropout& drop) {
    lora_down(xa, x, a, n, in, r, drop);
    lora_up(y, xa, b, n, out, r, scale);
  }
  // dx (n, in) += (dy B * scale) A masked by dropout (when dx not null);
  // da (r, in) += ((dy B)*scale)^T dropout(x); db (out, r) += scale * dy^T xa.
  virtual void lora_backward(float* dx, float* da, float* db, const float* dy, const float* x,
                             const float* xa, const float* a, const float* b, i64 n, i64 in,
                             i64 out, i64 r, float scale, const LoraDropout& drop) = 0;

  // ---- mixture of experts (backend/moe_route.h) ----------------------------------------
  // n tokens, E experts, top k, width c; the route's buffers are backend memory. Each op
  // gives the host loop of moe_route.h's name: on the CPU backend it is that loop, on the
  // CUDA backend a kernel with the same order of arithmetic (kernels/moe.cu says where the
  // device can round differently).
  virtual void moe_route(const float* logits, i64 n, i64 experts, i64 k, bool norm_topk,
                         const MoeRoute& r) = 0;
  virtual void moe_gather(float* xs, const float* x, const MoeRoute& r, i64 n, i64 k, i64 c) = 0;
  virtual void moe_combine(float* y, const float* ye, const MoeRoute& r, i64 n, i64 k, i64 c) = 0;
  virtual void moe_combine_backward(float* dweight, float* d_ye, const float* dy, const float* ye,
                                    const MoeRoute& r, i64 n, i64 k, i64 c) = 0;
  virtual void moe_scatter(float* dx, const float* dxs, const MoeRoute& r, i64 n, i64 k, i64 c) = 0;
  // aux_grad (E doubles, backend memory) may be null.
  virtual void moe_router_backward(float* d_logits, const float* dweight, const MoeRoute& r, i64 n,
                                   i64 experts, i64 k, bool norm_topk, const double* aux_grad) = 0;
  // count, prob_sum (E doubles each, backend memory) accumulated.
  virtual void moe_aux_accumulate(double* count, double* prob_sum, const MoeRoute& r, i64 n,
                                  i64 experts, i64 k) = 0;
  // y (n) += x (n): the combined experts' output into the residual stream.
  virtual void moe_residual_add(float* y, const float* x, i64 n) = 0;
  // The routed experts' MLPs (backend/moe_experts.h): moe_expert_forward / backward of each
  // of `count` experts. Their rows and adapters are disjoint, so a backend may run them in
  // any order or at once; each expert's ops are the same either way.
  virtual void moe_experts_forward(const MoeExpert* experts, i64 count, const MoeExpertActs& a) {
    for (i64 i = 0; i < count; ++i) moe_expert_forward(*this, experts[i], a);
  }
  virtual void moe_experts_backward(const MoeExpert* experts, i64 count, const MoeExpertActs& a,
                                    const MoeExpertGrads& g) {
    for (i64 i = 0; i < count; ++i) moe_expert_backward(*this, experts[i], a, g);
  }

  // ---- Llama 4 (backend/llama4_ops.h) --------------------------------------------------
  // Its attention's pair permutation and temperature, and its sigmoid-scored experts'
  // steps around the MoE ops above, each the host loop of llama4_ops.h's name: that loop
  // on the CPU backend, a kernel with the same order of arithmetic on the CUDA backend
  // (kernels/llama4.cu says where the device can round differently).
  virtual void llama4_pairs_split(float* out, const float* in, i64 rows, i64 head_dim) = 0;
  virtual void llama4_pairs_join(float* out, const float* in, i64 rows, i64 head_dim) = 0;
  // pos (n, backend memory) as the rope ops take it.
  virtual void llama4_temperature(float* x, const std::int32_t* pos, i64 n, i64 width, float floor_scale,
                                  float attn_scale) = 0;
  virtual void llama4_route_scores(const float* logits, const MoeRoute& r, i64 n, i64 experts, i64 k) = 0;
  virtual void llama4_scale_rows(float* xs, const MoeRoute& r, i64 n, i64 k, i64 c) = 0;
  virtual void llama4_scale_backward(float* dscore, float* d_xs, const float* x, const MoeRoute& r, i64 n,
                                     i64 k, i64 c) = 0;
  virtual void llama4_router_backward(float* d_logits, const float* dscore, const MoeRoute& r, i64 n,
                                      i64 experts, i64 k) = 0;

  // ---- optimizer -----------------------------------------------------------------------
  virtual double sum_squares(const float* x, i64 n) = 0;  // accumulated in double
  virtual void scale(float* x, float s, i64 n) = 0;
  // AdamW on n parameters with fp32 state m, v (zero-initialised by the caller).
  virtual void adamw_update(float* p, const float* g, float* m, float* v, i64 n,
                            const AdamwArgs& args) = 0;
};

std::unique_ptr<Backend> make_cpu_backend();
// The CUDA backend on CUDA device `device` (cuda/): bf16 copies of the frozen weights,
// cuBLASLt for their products, kernels/ for the rest, one compute stream. Throws
// anvil::Error (user error) when anvil was built without CUDA or the device is missing.
std::unique_ptr<Backend> make_cuda_backend(int device);
// CUDA devices this process can use: 0 when built without CUDA, without an NVIDIA driver,
// or with none visible. Any other failure to enumerate them (a driver older than the CUDA
// runtime, Fabric Manager down, a GPU fallen off the bus) is a user error carrying CUDA's
// own error, never read as "no GPU".
int cuda_device_count();
// The UUIDs ("GPU-8f1c...", what nvidia-smi and CUDA_VISIBLE_DEVICES name) of those devices,
// in CUDA ordinal order: which physical GPU each ordinal is, whatever binding made it visible.
std::vector<std::string> cuda_visible_gpus();
// Bytes of scratch the CPU backend's reserve(limits) holds (the planner's count of it).
std::int64_t cpu_scratch_bytes(const BackendLimits& limits);

// Threads of the CPU backend (its OpenMP loops and OpenBLAS).
void cpu_threads_set(int n);
// The threads one of `local_ranks` CPU ranks on this node should use: the CPUs it may run
// on (its affinity mask, which mpirun/srun may have narrowed), shared evenly with the other
// ranks when all of them have the whole node; at least 1.
int cpu_threads_for_rank(int local_ranks);

// The OPENBLAS_CORETYPE a program should restart with, when OpenBLAS fell back to generic
// kernels on a CPU with AVX2 or AVX-512 (an unrecognised CPU model under a hypervisor);
// empty when nothing needs doing or the user set OPENBLAS_CORETYPE.
std::string blas_core_override();

}  // namespace anvil::backend
