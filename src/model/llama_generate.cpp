#include "model/llama_generate.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "model/llama.h"
#include "model/llama4_ops.h"

namespace anvil::model {

Generator::Generator(const ModelSpec& spec, const BaseWeights& base, const LoraLayout* lora,
                     const float* lora_params, backend::Backend& backend, std::int64_t max_len)
    : spec_(spec),
      base_(base),
      lora_(lora_params ? lora : nullptr),
      lora_params_(lora_params),
      be_(backend),
      max_len_(max_len),
      inv_freq_(rope_inv_freq(spec)) {
  ANVIL_CHECK(max_len > 0, "generation length must be positive");
  const auto C = static_cast<std::size_t>(spec.hidden_size);
  const auto F = static_cast<std::size_t>(spec.intermediate_size);
  const auto HD = static_cast<std::size_t>(spec.num_attention_heads * spec.head_dim);
  const auto KV = static_cast<std::size_t>(spec.num_key_value_heads * spec.head_dim);
  const auto cache = static_cast<std::size_t>(spec.num_hidden_layers * max_len) * KV;
  k_cache_.assign(cache, 0.0f);
  v_cache_.assign(cache, 0.0f);
  x_.resize(C);
  xn_.resize(C);
  q_.resize(HD);
  k_.resize(KV);
  v_.resize(KV);
  att_.resize(HD);
  gate_.resize(F);
  up_.resize(F);
  h_.resize(F);
  xa_.resize(static_cast<std::size_t>(lora_ ? lora_->spec().rank : 1));
  logits_.resize(static_cast<std::size_t>(spec.vocab_size));
  rstd_heads_.resize(static_cast<std::size_t>(spec.num_attention_heads));
  if (spec.is_moe()) {
    const auto E = static_cast<std::size_t>(spec.moe.num_experts), K = static_cast<std::size_t>(spec.moe.top_k);
    const auto Fe = static_cast<std::size_t>(spec.moe.intermediate_size);
    router_.resize(E);
    probs_.resize(E);
    weight_.resize(K);
    expert_.resize(K);
    row_.resize(K);
    token_.resize(K);
    offsets_.resize(E + 1);
    gate_.resize(std::max(F, Fe));
    up_.resize(std::max(F, Fe));
    h_.resize(std::max(F, Fe));
    y_.resize(C);
  }
  if (spec.is_llama4()) {
    ones_.assign(static_cast<std::size_t>(spec.head_dim), 1.0f);
    xs_.resize(C);
  }
}

void Generator::experts_forward(std::int64_t l) {
  const LayerWeights& w = base_.layers[static_cast<std::size_t>(l)];
  const std::int64_t C = spec_.hidden_size, E = spec_.moe.num_experts, K = spec_.moe.top_k;
  be_.linear_forward(router_.data(), xn_.data(), w.router, nullptr, 1, 0.0f);  // (1, E)
  const MoeRoute r{probs_.data(), expert_.data(), weight_.data(), row_.data(), token_.data(), offsets_.data()};
  moe_route(router_.data(), 1, E, K, spec_.moe.norm_topk_prob, r);
  // Llama 4 scales each expert's input by sigmoid(logit) and sums the outputs.
  const bool llama4 = spec_.is_llama4();
  if (llama4) llama4_route_scores(router_.data(), r, 1, E, K);
  for (std::int64_t j = 0; j < K; ++j) {  // in choice order, as the training forward combines
    const std::int64_t e = expert_[static_cast<std::size_t>(j)];
    const float* x = xn_.data();
    if (llama4) {
      const float sj = weight_[static_cast<std::size_t>(j)];
      for (std::size_t i = 0; i < xs_.size(); ++i) xs_[i] = xn_[i] * sj;
      x = xs_.data();
    }
    auto shard = [&](Proj p) { return linear_shard(base_, lora_, lora_params_, nullptr, l, p, e); };
    linear_forward_local(be_, shard(Proj::proj_expert_gate), gate_.data(), x, xa_.data(), 1, 0.0f, {});
    linear_forward_local(be_, shard(Proj::proj_expert_up), up_.data(), x, xa_.data(), 1, 0.0f, {});
    be_.swiglu_forward(h_.data(), gate_.data(), up_.data(), spec_.moe.intermediate_size);
    linear_forward_local(be_, shard(Proj::proj_expert_down), y_.data(), h_.data(), xa_.data(), 1, 0.0f, {});
    const float wj = llama4 ? 1.0f : weight_[static_cast<std::size_t>(j)];
    for (std::int64_t i = 0; i < C; ++i) x_[static_cast<std::size_t>(i)] += wj * y_[static_cast<std::size_t>(i)];
  }
}

std::int64_t Generator::llama4_qk(std::int64_t l, float* k_row) {
  const std::int64_t D = spec_.head_dim, H = spec_.num_attention_heads, Hkv = spec_.num_key_value_heads;
  const Llama4Spec& f = spec_.llama4;
  const auto pos = static_cast<std::int32_t>(pos_);
  if (!spec_.layer_uses_rope(l)) {  // NoPE: causal over everything, q warmed by its position
    if (f.temperature_tuning)
      llama4_temperature(q_.data(), &pos, 1, H * D, static_cast<float>(f.floor_scale),
                         static_cast<float>(f.attn_scale));
    return 0;
  }
  const TensorView ones{ones_.data(), DType::dtype_f32, Shape{D}};
  const float eps = static_cast<float>(spec_.rms_norm_eps);
  // The cache holds k as the attention reads it: pairs split, rotated, normed.
  auto rotate = [&](float* x, float* scratch, std::int64_t heads) {
    llama4_pairs_split(scratch, x, heads, D);
    be_.rope_forward(scratch, &pos, inv_freq_.data(), 1, heads, D);
    if (f.qk_norm) be_.rmsnorm_forward(x, rstd_heads_.data(), scratch, ones, heads, D, eps);
    else std::copy_n(scratch, heads * D, x);
  };
  rotate(q_.data(), att_.data(), H);
  rotate(k_row, k_.data(), Hkv);
  return f.chunk > 0 ? pos_ / f.chunk * f.chunk : 0;
}

void Generator::project(std::int64_t layer, Proj p, float* y, const float* x, float beta) {
  project_forward(be_, base_, lora_, lora_params_, layer, p, y, x, xa_.data(), 1, beta, {});
}

const float* Generator::step(std::int32_t token) {
  ANVIL_CHECK_INPUT(pos_ < max_len_, "generation reached its limit of ", max_len_, " tokens");
  ANVIL_CHECK_INPUT(token >= 0 && token < spec_.vocab_size, "token id ", token,
                    " is outside the model's vocabulary of ", spec_.vocab_size);
  const std::int64_t C = spec_.hidden_size, D = spec_.head_dim;
  const std::int64_t H = spec_.num_attention_heads, Hkv = spec_.num_key_value_heads;
  const std::int64_t KV = Hkv * D;
  const float eps = static_cast<float>(spec_.rms_norm_eps);
  const auto pos = static_cast<std::int32_t>(pos_);
  float rstd;
  be_.embedding_forward(x_.data(), &token, base_.embed, 1);  // (1, C)
  for (std::int64_t l = 0; l < spec_.num_hidden_layers; ++l) {
    const LayerWeights& w = base_.layers[static_cast<std::size_t>(l)];
    float* kc = k_cache_.data() + l * max_len_ * KV;  // (max_len, Hkv*D)
    float* vc = v_cache_.data() + l * max_len_ * KV;
    be_.rmsnorm_forward(xn_.data(), &rstd, x_.data(), w.attn_norm, 1, C, eps);
    project(l, Proj::proj_q, q_.data(), xn_.data(), 0.0f);         // (1, H*D)
    project(l, Proj::proj_k, kc + pos_ * KV, xn_.data(), 0.0f);    // into the cache
    project(l, Proj::proj_v, vc + pos_ * KV, xn_.data(), 0.0f);
    std::int64_t first = 0;  // the first cached position the query sees
    if (spec_.is_llama4()) {
      first = llama4_qk(l, kc + pos_ * KV);
    } else {
      if (spec_.qk_norm) {  // each head over its D channels (the norm reads and writes in place)
        be_.rmsnorm_forward(q_.data(), rstd_heads_.data(), q_.data(), w.q_norm, H, D, eps);
        be_.rmsnorm_forward(kc + pos_ * KV, rstd_heads_.data(), kc + pos_ * KV, w.k_norm, Hkv, D, eps);
      }
      be_.rope_forward(q_.data(), &pos, inv_freq_.data(), 1, H, D);
      be_.rope_forward(kc + pos_ * KV, &pos, inv_freq_.data(), 1, Hkv, D);
    }
    be_.attention_decode(att_.data(), q_.data(), kc + first * KV, vc + first * KV, pos_ + 1 - first, H, Hkv,
                         D);                                       // (1, H*D)
    project(l, Proj::proj_o, x_.data(), att_.data(), 1.0f);        // residual
    be_.rmsnorm_forward(xn_.data(), &rstd, x_.data(), w.mlp_norm, 1, C, eps);
    if (spec_.layer_is_moe(l)) experts_forward(l);
    if (!spec_.layer_has_mlp(l)) continue;
    // the dense MLP, or Llama 4's shared expert
    project(l, Proj::proj_gate, gate_.data(), xn_.data(), 0.0f);
    project(l, Proj::proj_up, up_.data(), xn_.data(), 0.0f);
    be_.swiglu_forward(h_.data(), gate_.data(), up_.data(), spec_.mlp_rows(l));
    project(l, Proj::proj_down, x_.data(), h_.data(), 1.0f);       // residual
  }
  be_.rmsnorm_forward(xn_.data(), &rstd, x_.data(), base_.final_norm, 1, C, eps);
  be_.linear_forward(logits_.data(), xn_.data(), base_.lm_head, nullptr, 1, 0.0f);  // (1, V)
  ++pos_;
  return logits_.data();
}

const float* Generator::prefill(std::span<const std::int32_t> tokens) {
  ANVIL_CHECK(!tokens.empty(), "prefill of no tokens");
  if (spec_.is_moe()) {  // the experts' path routes one token at a time
    const float* logits = nullptr;
    for (const std::int32_t t : tokens) logits = step(t);
    return logits;
  }
  ANVIL_CHECK_INPUT(pos_ + static_cast<std::int64_t>(tokens.size()) <= max_len_, "generation reached its limit of ",
                    max_len_, " tokens");
  const std::int64_t C = spec_.hidden_size, D = spec_.head_dim, F = spec_.intermediate_size;
  const std::int64_t H = spec_.num_attention_heads, Hkv = spec_.num_key_value_heads;
  const std::int64_t HD = H * D, KV = Hkv * D;
  const float eps = static_cast<float>(spec_.rms_norm_eps);
  constexpr std::int64_t kChunk = 128;  // rows per pass: bounds the buffers, keeps the GEMMs wide
  const std::int64_t rows_max = std::min<std::int64_t>(kChunk, static_cast<std::int64_t>(tokens.size()));
  auto size = [&](std::vector<float>& b, std::int64_t per_row) { b.resize(static_cast<std::size_t>(rows_max * per_row)); };
  size(px_, C), size(pxn_, C), size(pq_, HD), size(patt_, HD), size(pgate_, F), size(pup_, F), size(ph_, F);
  size(pxa_, lora_ ? lora_->spec().rank : 1), size(prstd_, H);
  ppos_.resize(static_cast<std::size_t>(rows_max));
  for (std::size_t first = 0; first < tokens.size(); first += static_cast<std::size_t>(kChunk)) {
    const std::int64_t n = std::min<std::int64_t>(kChunk, static_cast<std::int64_t>(tokens.size() - first));
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int32_t t = tokens[first + static_cast<std::size_t>(i)];
      ANVIL_CHECK_INPUT(t >= 0 && t < spec_.vocab_size, "token id ", t, " is outside the model's vocabulary of ",
                        spec_.vocab_size);
      ppos_[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(pos_ + i);
    }
    be_.embedding_forward(px_.data(), tokens.data() + first, base_.embed, n);  // (n, C)
    for (std::int64_t l = 0; l < spec_.num_hidden_layers; ++l) {
      const LayerWeights& w = base_.layers[static_cast<std::size_t>(l)];
      float* kc = k_cache_.data() + l * max_len_ * KV;  // (max_len, Hkv*D): rows pos_.. are this chunk's
      float* vc = v_cache_.data() + l * max_len_ * KV;
      auto proj = [&](Proj p, float* y, const float* x, float beta) {
        project_forward(be_, base_, lora_, lora_params_, l, p, y, x, pxa_.data(), n, beta, {});
      };
      be_.rmsnorm_forward(pxn_.data(), prstd_.data(), px_.data(), w.attn_norm, n, C, eps);
      proj(Proj::proj_q, pq_.data(), pxn_.data(), 0.0f);         // (n, H*D)
      proj(Proj::proj_k, kc + pos_ * KV, pxn_.data(), 0.0f);     // (n, Hkv*D) into the cache
      proj(Proj::proj_v, vc + pos_ * KV, pxn_.data(), 0.0f);
      if (spec_.qk_norm) {  // each head over its D channels, in place
        for (std::int64_t i = 0; i < n; ++i) {
          be_.rmsnorm_forward(pq_.data() + i * HD, prstd_.data(), pq_.data() + i * HD, w.q_norm, H, D, eps);
          float* k = kc + (pos_ + i) * KV;
          be_.rmsnorm_forward(k, prstd_.data(), k, w.k_norm, Hkv, D, eps);
        }
      }
      be_.rope_forward(pq_.data(), ppos_.data(), inv_freq_.data(), n, H, D);
      be_.rope_forward(kc + pos_ * KV, ppos_.data(), inv_freq_.data(), n, Hkv, D);
      for (std::int64_t i = 0; i < n; ++i)  // row i sees the cache up to its own position
        be_.attention_decode(patt_.data() + i * HD, pq_.data() + i * HD, kc, vc, pos_ + i + 1, H, Hkv, D);
      proj(Proj::proj_o, px_.data(), patt_.data(), 1.0f);        // residual
      be_.rmsnorm_forward(pxn_.data(), prstd_.data(), px_.data(), w.mlp_norm, n, C, eps);
      proj(Proj::proj_gate, pgate_.data(), pxn_.data(), 0.0f);   // (n, F)
      proj(Proj::proj_up, pup_.data(), pxn_.data(), 0.0f);
      be_.swiglu_forward(ph_.data(), pgate_.data(), pup_.data(), n * F);
      proj(Proj::proj_down, px_.data(), ph_.data(), 1.0f);       // residual
    }
    pos_ += n;
  }
  // The logits of the last row only: the next token's.
  const std::int64_t last = static_cast<std::int64_t>((tokens.size() - 1) % static_cast<std::size_t>(kChunk));
  float rstd;
  be_.rmsnorm_forward(xn_.data(), &rstd, px_.data() + last * C, base_.final_norm, 1, C, eps);
  be_.linear_forward(logits_.data(), xn_.data(), base_.lm_head, nullptr, 1, 0.0f);  // (1, V)
  return logits_.data();
}

std::vector<std::int32_t> Generator::generate(std::span<const std::int32_t> prompt,
                                              const GenerateOptions& opt) {
  ANVIL_CHECK_INPUT(!prompt.empty(), "the prompt is empty (no tokens)");
  ANVIL_CHECK_INPUT(static_cast<std::int64_t>(prompt.size()) < max_len_, "the prompt has ",
                    prompt.size(), " tokens; the limit is ", max_len_ - 1);
  reset();
  const float* logits = prefill(prompt);
  std::vector<std::int32_t> out;
  while (static_cast<std::int64_t>(out.size()) < opt.max_new_tokens) {
    const std::int64_t n = opt.vocab_limit > 0 ? std::min(opt.vocab_limit, spec_.vocab_size) : spec_.vocab_size;
    const auto next = static_cast<std::int32_t>(std::max_element(logits, logits + n) - logits);
    if (std::find(opt.stop_ids.begin(), opt.stop_ids.end(), next) != opt.stop_ids.end()) break;
    out.push_back(next);
    if (pos_ >= max_len_) break;
    logits = step(next);
  }
  return out;
}

}  // namespace anvil::model
