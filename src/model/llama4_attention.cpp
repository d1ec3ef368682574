// Llama 4's q and k between their projections and the attention (Backend::llama4_* ops,
// backend/llama4_ops.h):
//   RoPE layer:  q_pre = pairs_split(q), rope(q_pre), q = l2norm(q_pre) (use_qk_norm)
//   NoPE layer:  q *= temperature(pos) (attn_temperature_tuning); k as projected
// and the same for k, backward in reverse.
#include "core/error.h"
#include "model/llama.h"

namespace anvil::model {

void LlamaModel::llama4_qk_forward(std::int64_t l, LayerActs& a, const TokenBatch& b) {
  const std::int64_t N = b.batch * b.seq, D = local_.head_dim;
  const std::int64_t H = local_.num_attention_heads, Hkv = local_.num_key_value_heads;
  const Llama4Spec& f = spec_.llama4;
  if (!spec_.layer_uses_rope(l)) {
    if (f.temperature_tuning)
      be_.llama4_temperature(a.q, b.positions, N, H * D, static_cast<float>(f.floor_scale),
                             static_cast<float>(f.attn_scale));  // (N, H*D)
    return;
  }
  const float eps = static_cast<float>(spec_.rms_norm_eps);
  const TensorView ones{buf_.ones, DType::dtype_f32, Shape{D}};
  auto rotate = [&](float* x, float* pre, float* rstd, std::int64_t heads) {
    be_.llama4_pairs_split(pre, x, N * heads, D);  // (N, heads*D), halves
    be_.rope_forward(pre, b.positions, buf_.inv_freq, N, heads, D);
    if (f.qk_norm) be_.rmsnorm_forward(x, rstd, pre, ones, N * heads, D, eps);  // weightless
    else be_.copy(x, pre, sizeof(float) * static_cast<std::size_t>(N * heads * D));
  };
  rotate(a.q, a.q_pre, a.rstd_q, H);
  rotate(a.k, a.k_pre, a.rstd_k, Hkv);
}

void LlamaModel::llama4_qk_backward(std::int64_t l, const LayerActs& a, const TokenBatch& b) {
  const std::int64_t N = b.batch * b.seq, D = local_.head_dim;
  const std::int64_t H = local_.num_attention_heads, Hkv = local_.num_key_value_heads;
  const Llama4Spec& f = spec_.llama4;
  if (!spec_.layer_uses_rope(l)) {
    if (f.temperature_tuning)
      be_.llama4_temperature(buf_.d_q, b.positions, N, H * D, static_cast<float>(f.floor_scale),
                             static_cast<float>(f.attn_scale));
    return;
  }
  const TensorView ones{buf_.ones, DType::dtype_f32, Shape{D}};
  // d (N, heads*D) w.r.t. the final q or k becomes the gradient of the projection's output.
  auto unrotate = [&](float* d, float* scratch, const float* pre, const float* rstd, std::int64_t heads) {
    if (f.qk_norm) be_.rmsnorm_backward(scratch, nullptr, d, pre, ones, rstd, N * heads, D, 0.0f);
    else be_.copy(scratch, d, sizeof(float) * static_cast<std::size_t>(N * heads * D));
    be_.rope_backward(scratch, b.positions, buf_.inv_freq, N, heads, D);
    be_.llama4_pairs_join(d, scratch, N * heads, D);
  };
  unrotate(buf_.d_q, buf_.d_qn, a.q_pre, a.rstd_q, H);
  unrotate(buf_.d_k, buf_.d_kn, a.k_pre, a.rstd_k, Hkv);
}

}  // namespace anvil::model
