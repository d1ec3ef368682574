// CudaBackend: the ops that are one or two kernels/ launchers each (embedding, RMSNorm,
// RoPE, attention, SwiGLU, LoRA, optimizer). Argument checks mirror the CPU backend's, so
// a bad call fails the same way on both.
#include <climits>
#include <cmath>

#include "attention.cuh"
#include "backend/cuda/cuda_backend.h"
#include "core/dtype.h"
#include "core/error.h"
#include "cuda_check.cuh"
#include "decode.cuh"
#include "embedding.cuh"
#include "lora.cuh"
#include "optim.cuh"
#include "rmsnorm.cuh"
#include "rope.cuh"
#include "swiglu.cuh"

namespace anvil::backend {

namespace {

void check_attention_shape(const AttentionShape& s) {
  ANVIL_CHECK(s.batch >= 0 && s.seq > 0 && s.head_dim > 0 && s.n_kv_heads > 0 &&
                  s.n_heads % s.n_kv_heads == 0,
              "attention shape: B=", s.batch, " T=", s.seq, " H=", s.n_heads, " Hkv=", s.n_kv_heads,
              " D=", s.head_dim);
  ANVIL_CHECK(s.batch <= INT_MAX && s.seq <= INT_MAX && s.n_heads <= INT_MAX,
              "attention shape beyond int: B=", s.batch, " T=", s.seq, " H=", s.n_heads);
}

kernels::AttentionParams attention_params(float* out, float* lse, const float* q, const float* k,
                                          const float* v, const std::int32_t* segment,
                                          const AttentionShape& s) {
  kernels::AttentionParams p;
  p.q = q;
  p.k = k;
  p.v = v;
  p.segment = segment;
  p.out = out;
  p.lse = lse;
  p.batch = static_cast<int>(s.batch);
  p.seq = static_cast<int>(s.seq);
  p.n_heads = static_cast<int>(s.n_heads);
  p.n_kv_heads = static_cast<int>(s.n_kv_heads);
  p.head_dim = static_cast<int>(s.head_dim);
  p.scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));  // as the CPU backend
  p.causal = true;
  return p;
}

// The CPU backend's dropout checks, and the kernels' view of the same mask.
kernels::LoraDropoutParams dropout_params(const LoraDropout& d, i64 in) {
  ANVIL_CHECK(d.p >= 0.0f && d.p < 1.0f, "LoRA dropout p = ", d.p, " outside [0, 1)");
  if (d.p != 0.0f)
    ANVIL_CHECK(d.row_offset >= 0 && d.col_offset >= 0 && d.row_stride >= d.col_offset + in,
                "LoRA dropout row_stride ", d.row_stride, " < col_offset ", d.col_offset,
                " + width ", in);
  kernels::LoraDropoutParams p;
  p.p = d.p;
  p.k0 = d.stream.key.k0;
  p.k1 = d.stream.key.k1;
  p.c2 = d.stream.c2;
  p.c3 = d.stream.c3;
  p.row_offset = d.row_offset;
  p.row_stride = d.row_stride;
  p.col_offset = d.col_offset;
  return p;
}

void check_lora_rank(i64 r) {
  ANVIL_CHECK(r > 0 && r <= kCudaMaxLoraRank, "LoRA rank ", r, " outside [1, ", kCudaMaxLoraRank,
              "] (the CUDA kernels' limit)");
}

// A norm weight as weight_place() leaves it: c f32 values in device memory.
const float* norm_weight(const TensorView& w, i64 c) {
  ANVIL_CHECK(w.shape.rank() == 1 && w.dtype == DType::dtype_f32,
              "norm weight must be a 1-D f32 view from weight_place(), got ", w.shape.str(), " ",
              dtype_name(w.dtype));
  ANVIL_CHECK(w.numel() == c, "norm weight has ", w.numel(), " values, expected ", c);
  return w.as<const float>();
}

}  // namespace

// ---- embedding -----------------------------------------------------------------------------

void CudaBackend::embedding_forward(float* out, const std::int32_t* ids, const TensorView& table,
                                    i64 n, const VocabShard& shard) {
  ANVIL_CHECK(table.shape.rank() == 2 && table.dtype == DType::dtype_bf16,
              "embedding table must be a 2-D bf16 view from weight_place(), got ",
              table.shape.str(), " ", dtype_name(table.dtype));
  const i64 rows = table.shape[0], dim = table.shape[1];
  const i64 vocab = shard.total > 0 ? shard.total : rows;
  ANVIL_CHECK(shard.first >= 0 && shard.first + rows <= vocab, "vocabulary shard [", shard.first,
              ", ", shard.first + rows, ") outside [0, ", vocab, ")");
  if (n == 0) return;
  kernels::embedding_forward(out, ids, table.as<const std::uint16_t>(), n, rows, dim, shard.first,
                             vocab, &scalars_->bad_id, stream_);
  // No host wait in the step for it: lm_head_cross_entropy's readback reports a bad id.
}

void CudaBackend::embedding_backward(float* dtable, const float* dout, const std::int32_t* ids,
                                     i64 n, i64 vocab, i64 dim) {
  if (n == 0) return;
  void* ws = grow(embed_ws_, kernels::embedding_backward_workspace_bytes(n, dim));
  kernels::embedding_backward(dtable, dout, ids, n, vocab, dim, ws, stream_);
}

// ---- RMSNorm -------------------------------------------------------------------------------

void CudaBackend::rmsnorm_forward(float* out, float* rstd, const float* x, const TensorView& w,
                                  i64 n, i64 c, float eps) {
  const float* wf = norm_weight(w, c);
  if (n == 0) return;
  kernels::rmsnorm_forward(out, rstd, x, wf, n, c, eps, stream_);
}

void CudaBackend::rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x,
                                   const TensorView& w, const float* rstd, i64 n, i64 c,
                                   float beta) {
  // Norm weights are frozen in LoRA training; full fine-tuning is CPU-only for now.
  ANVIL_CHECK(dw == nullptr, "the CUDA backend makes no RMSNorm weight gradients");
  const float* wf = norm_weight(w, c);
  if (n == 0) return;
  kernels::rmsnorm_backward(dx, dout, x, wf, rstd, n, c, beta, stream_);
}

// ---- RoPE: pos and inv_freq are device buffers ---------------------------------------------

void CudaBackend::rope_forward(float* x, const std::int32_t* pos, const float* inv_freq, i64 n,
                               i64 heads, i64 head_dim) {
  ANVIL_CHECK(head_dim % 2 == 0, "rope needs an even head_dim, got ", head_dim);
  if (n == 0) return;
  kernels::rope_apply(x, pos, inv_freq, n, heads, head_dim, false, stream_);
}

void CudaBackend::rope_backward(float* dx, const std::int32_t* pos, const float* inv_freq, i64 n,
                                i64 heads, i64 head_dim) {
  ANVIL_CHECK(head_dim % 2 == 0, "rope needs an even head_dim, got ", head_dim);
  if (n == 0) return;
  kernels::rope_apply(dx, pos, inv_freq, n, heads, head_dim, true, stream_);
}

// ---- attention -----------------------------------------------------------------------------

void CudaBackend::attention_forward(float* out, float* lse, const float* q, const float* k,
                                    const float* v, const std::int32_t* segment,
                                    const AttentionShape& s) {
  check_attention_shape(s);
  if (s.batch == 0 || s.n_heads == 0) return;
  kernels::attention_forward(attention_params(out, lse, q, k, v, segment, s), stream_);
}

void CudaBackend::attention_backward(float* dq, float* dk, float* dv, const float* dout,
                                     const float* out, const float* lse, const float* q,
                                     const float* k, const float* v, const std::int32_t* segment,
                                     const AttentionShape& s) {
  check_attention_shape(s);
  if (s.batch == 0 || s.n_heads == 0) return;
  kernels::AttentionBackwardParams p;
  // The forward's out and lse are inputs here; the params struct holds them as writable.
  p.fwd = attention_params(const_cast<float*>(out), const_cast<float*>(lse), q, k, v, segment, s);
  p.dout = dout;
  p.dq = dq;
  p.dk = dk;
  p.dv = dv;
  void* ws = grow(attn_ws_, kernels::attention_backward_workspace_bytes(
                                p.fwd.batch, p.fwd.seq, p.fwd.n_heads, p.fwd.head_dim));
  kernels::attention_backward(p, ws, stream_);
}

void CudaBackend::attention_decode(float* out, const float* q, const float* k_cache,
                                   const float* v_cache, i64 len, i64 n_heads, i64 n_kv_heads,
                                   i64 head_dim) {
  ANVIL_CHECK(len > 0 && n_kv_heads > 0 && n_heads % n_kv_heads == 0, "bad decode attention shape");
  void* ws = grow(decode_ws_, kernels::attention_decode_workspace_bytes(len, n_heads));
  kernels::attention_decode(out, q, k_cache, v_cache, len, n_heads, n_kv_heads, head_dim, ws,
                            stream_);
}

// ---- SwiGLU --------------------------------------------------------------------------------

void CudaBackend::swiglu_forward(float* h, const float* gate, const float* up, i64 n) {
  if (n == 0) return;
  kernels::swiglu_forward(h, gate, up, n, stream_);
}

void CudaBackend::swiglu_backward(float* dgate, float* dup, const float* dh, const float* gate,
                                  const float* up, i64 n) {
  if (n == 0) return;
  kernels::swiglu_backward(dgate, dup, dh, gate, up, n, stream_);
}

// ---- LoRA ----------------------------------------------------------------------------------

void CudaBackend::lora_down(float* xa, const float* x, const float* a, i64 n, i64 in, i64 r,
                            const LoraDropout& drop) {
  const kernels::LoraDropoutParams d = dropout_params(drop, in);
  check_lora_rank(r);
  if (n == 0) return;
  kernels::lora_down(xa, x, a, n, in, static_cast<int>(r), d, stream_);
}

void CudaBackend::lora_up(float* y, const float* xa, const float* b, i64 n, i64 out, i64 r,
                          float scale) {
  check_lora_rank(r);
  if (n == 0) return;
  kernels::lora_up(y, xa, b, n, out, static_cast<int>(r), scale, stream_);
}

void CudaBackend::lora_backward(float* dx, float* da, float* db, const float* dy, const float* x,
                                const float* xa, const float* a, const float* b, i64 n, i64 in,
                                i64 out, i64 r, float scale, const LoraDropout& drop) {
  const kernels::LoraDropoutParams d = dropout_params(drop, in);
  ANVIL_CHECK(da && db, "LoRA backward needs both adapter gradients");
  check_lora_rank(r);
  if (n == 0) return;
  const int ri = static_cast<int>(r);
  void* ws = grow(lora_ws_, kernels::lora_backward_workspace_bytes(n, in, out, ri));
  kernels::lora_backward(dx, da, db, dy, x, xa, a, b, n, in, out, ri, scale, d, ws, stream_);
}

// ---- optimizer -----------------------------------------------------------------------------

double CudaBackend::sum_squares(const float* x, i64 n) {
  void* ws = grow(sumsq_ws_, kernels::sum_squares_workspace_bytes(n));
  kernels::sum_squares(&scalars_->sum_squares, x, n, ws, stream_);
  double total = 0.0;
  copy_to_host(&total, &scalars_->sum_squares, sizeof(total));
  return total;
}

void CudaBackend::scale(float* x, float s, i64 n) {
  if (n == 0) return;
  kernels::scale(x, s, n, stream_);
}

void CudaBackend::adamw_update(float* p, const float* g, float* m, float* v, i64 n,
                               const AdamwArgs& args) {
  ANVIL_CHECK(args.step >= 1, "AdamW step is 1-based, got ", args.step);
  kernels::AdamwParams a;
  a.lr = args.lr;
  a.beta1 = args.beta1;
  a.beta2 = args.beta2;
  a.eps = args.eps;
  a.weight_decay = args.weight_decay;
  a.step = args.step;
  kernels::adamw_update(p, g, m, v, n, a, stream_);
}

}  // namespace anvil::backend
