#include "model/llama.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>

#include "core/error.h"

namespace anvil::model {

using backend::AttentionShape;
using backend::LoraDropout;

std::vector<float> rope_inv_freq(const ModelSpec& spec) {
  const std::int64_t half = spec.head_dim / 2;
  const RopeSpec& r = spec.rope;
  std::vector<float> out(static_cast<std::size_t>(half));
  for (std::int64_t i = 0; i < half; ++i) {
    // HF: 1 / theta^(2i/D), in fp32.
    double f = 1.0 / std::pow(r.theta, static_cast<double>(2 * i) / static_cast<double>(spec.head_dim));
    f = static_cast<float>(f);
    if (r.scaling == RopeScalingType::rope_linear) {
      f /= r.factor;
    } else if (r.scaling == RopeScalingType::rope_llama3) {
      // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, and the band
      // between them interpolated smoothly.
      const double old_len = static_cast<double>(r.original_max_position);
      const double low_wavelen = old_len / r.low_freq_factor;
      const double high_wavelen = old_len / r.high_freq_factor;
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen > low_wavelen) {
        f /= r.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (old_len / wavelen - r.low_freq_factor) /
                              (r.high_freq_factor - r.low_freq_factor);
        f = (1.0 - smooth) * f / r.factor + smooth * f;
      }
    }
    out[static_cast<std::size_t>(i)] = static_cast<float>(f);
  }
  return out;
}

void project_forward(backend::Backend& be, const BaseWeights& base, const LoraLayout* lora,
                     const float* lora_params, std::int64_t layer, Proj p, float* y,
                     const float* x, float* xa, std::int64_t n, float beta,
                     const LoraDropout& drop) {
  const LayerWeights& w = base.layers[static_cast<std::size_t>(layer)];
  const int pi = static_cast<int>(p);
  be.linear_forward(y, x, w.proj[pi], w.bias[pi].data ? w.bias[pi].as<float>() : nullptr, n, beta);
  if (!lora) return;
  if (const LoraSlot* s = lora->find(layer, p)) {
    be.lora_forward(y, xa, x, lora_params + s->a_offset, lora_params + s->b_offset, n, s->in,
                    s->out, lora->spec().rank, lora->spec().scale(), drop);
  }
}

LlamaModel::LlamaModel(ModelSpec spec, BaseWeights base, LoraLayout lora, ModelLimits limits,
                       backend::Backend& backend, std::uint64_t dropout_seed)
    : spec_(std::move(spec)),
      base_(std::move(base)),
      lora_(std::move(lora)),
      limits_(limits),
      be_(backend),
      dropout_seed_(dropout_seed),
      inv_freq_(rope_inv_freq(spec_)) {
  ANVIL_CHECK(limits_.micro_batch > 0 && limits_.seq_len > 0, "model limits not set");
  ANVIL_CHECK(spec_.head_dim % 2 == 0, "head_dim must be even for rotary embeddings");
  n_max_ = limits_.micro_batch * limits_.seq_len;
  carve(arena_);
  arena_.allocate();
  carve(arena_);
  backend::BackendLimits bl;
  bl.max_tokens = n_max_;
  bl.max_seq = limits_.seq_len;
  bl.max_heads = spec_.num_attention_heads;
  bl.max_head_dim = spec_.head_dim;
  bl.max_width = std::max({spec_.hidden_size, spec_.intermediate_size,
                           spec_.num_attention_heads * spec_.head_dim});
  bl.vocab = spec_.vocab_size;
  bl.hidden = spec_.hidden_size;
  be_.reserve(bl);
}

void LlamaModel::carve(Arena& arena) {
  const std::int64_t N = n_max_, C = spec_.hidden_size, F = spec_.intermediate_size;
  const std::int64_t HD = spec_.num_attention_heads * spec_.head_dim;
  const std::int64_t KV = spec_.num_key_value_heads * spec_.head_dim;
  const std::int64_t L = spec_.num_hidden_layers;
  const std::int64_t r = lora_.spec().rank;
  lora_params_ = arena.take<float>(lora_.size());
  lora_grads_ = arena.take<float>(lora_.size());

  auto take_block = [&](LayerActs& a) {
    a.xn1 = arena.take<float>(N * C);
    a.rstd1 = arena.take<float>(N);
    a.q = arena.take<float>(N * HD);
    a.k = arena.take<float>(N * KV);
    a.v = arena.take<float>(N * KV);
    a.att = arena.take<float>(N * HD);
    a.lse = arena.take<float>(N * spec_.num_attention_heads);
    a.x_mid = arena.take<float>(N * C);
    a.xn2 = arena.take<float>(N * C);
    a.rstd2 = arena.take<float>(N);
    a.gate = arena.take<float>(N * F);
    a.up = arena.take<float>(N * F);
    a.h = arena.take<float>(N * F);
    for (int p = 0; p < kProjCount; ++p)
      a.xa[p] = lora_.spec().targets[p] ? arena.take<float>(N * r) : nullptr;
  };
  acts_.assign(static_cast<std::size_t>(L), LayerActs{});
  LayerActs shared{};
  if (limits_.activation_checkpointing) take_block(shared);
  for (auto& a : acts_) {
    if (limits_.activation_checkpointing) a = shared;
    else take_block(a);
    a.x_in = arena.take<float>(N * C);
  }
  x_final_ = arena.take<float>(N * C);
  xf_ = arena.take<float>(N * C);
  rstdf_ = arena.take<float>(N);
  d_res_ = arena.take<float>(N * C);
  d_xn_ = arena.take<float>(N * C);
  d_q_ = arena.take<float>(N * HD);
  d_att_ = arena.take<float>(N * HD);
  d_k_ = arena.take<float>(N * KV);
  d_v_ = arena.take<float>(N * KV);
  d_gate_ = arena.take<float>(N * F);
  d_up_ = arena.take<float>(N * F);
  d_h_ = arena.take<float>(N * F);
  x_discard_ = limits_.activation_checkpointing ? arena.take<float>(N * C) : nullptr;
}

void LlamaModel::zero_grads() {
  std::fill(lora_grads_, lora_grads_ + lora_.size(), 0.0f);
}

void LlamaModel::check_batch(const TokenBatch& b, bool need_targets) const {
  ANVIL_CHECK(b.batch > 0 && b.seq > 0 && b.batch * b.seq <= n_max_ && b.seq <= limits_.seq_len,
              "batch (", b.batch, " x ", b.seq, ") exceeds the model's limits (",
              limits_.micro_batch, " x ", limits_.seq_len, ")");
  ANVIL_CHECK(b.ids && b.positions, "batch without ids or positions");
  ANVIL_CHECK(!need_targets || b.targets, "batch without targets");
}

LoraDropout LlamaModel::dropout_for(std::int64_t layer, Proj p, const TokenBatch& b) const {
  LoraDropout d;
  if (!dropout_on_ || lora_.spec().dropout <= 0) return d;
  d.p = static_cast<float>(lora_.spec().dropout);
  d.stream = philox_stream(dropout_seed_, step_, static_cast<std::uint32_t>(layer),
                           static_cast<std::uint32_t>(p));
  d.row_offset = b.row_offset * b.seq;
  d.row_stride = proj_shape(spec_, p)[1];
  return d;
}

void LlamaModel::project(std::int64_t layer, Proj p, float* y, const float* x, float* xa,
                         const TokenBatch& b, float beta) {
  project_forward(be_, base_, &lora_, lora_params_, layer, p, y, x, xa, b.batch * b.seq, beta,
                  dropout_for(layer, p, b));
}

void LlamaModel::project_backward(std::int64_t layer, Proj p, float* dx, const float* dy,
                                  const float* x, const float* xa, const TokenBatch& b,
                                  float beta) {
  const LayerWeights& w = base_.layers[static_cast<std::size_t>(layer)];
  const std::int64_t N = b.batch * b.seq;
  be_.linear_backward_input(dx, dy, w.proj[static_cast<int>(p)], N, beta);
  if (const LoraSlot* s = lora_.find(layer, p)) {
    be_.lora_backward(dx, lora_grads_ + s->a_offset, lora_grads_ + s->b_offset, dy, x, xa,
                      lora_params_ + s->a_offset, lora_params_ + s->b_offset, N, s->in, s->out,
                      lora_.spec().rank, lora_.spec().scale(), dropout_for(layer, p, b));
  }
}

void LlamaModel::block_forward(std::int64_t l, LayerActs& a, float* x_out, const TokenBatch& b) {
  const LayerWeights& w = base_.layers[static_cast<std::size_t>(l)];
  const std::int64_t N = b.batch * b.seq, C = spec_.hidden_size;
  const std::int64_t H = spec_.num_attention_heads, Hkv = spec_.num_key_value_heads;
  const std::int64_t D = spec_.head_dim;
  const float eps = static_cast<float>(spec_.rms_norm_eps);
  auto xa = [&](Proj p) { return a.xa[static_cast<int>(p)]; };

  // attention
  be_.rmsnorm_forward(a.xn1, a.rstd1, a.x_in, w.attn_norm, N, C, eps);  // (N, C)
  project(l, Proj::proj_q, a.q, a.xn1, xa(Proj::proj_q), b, 0.0f);      // (N, H*D)
  project(l, Proj::proj_k, a.k, a.xn1, xa(Proj::proj_k), b, 0.0f);      // (N, Hkv*D)
  project(l, Proj::proj_v, a.v, a.xn1, xa(Proj::proj_v), b, 0.0f);      // (N, Hkv*D)
  be_.rope_forward(a.q, b.positions, inv_freq_.data(), N, H, D);
  be_.rope_forward(a.k, b.positions, inv_freq_.data(), N, Hkv, D);
  const AttentionShape shape{b.batch, b.seq, H, Hkv, D};
  be_.attention_forward(a.att, a.lse, a.q, a.k, a.v, b.segments, shape);  // (N, H*D)
  std::memcpy(a.x_mid, a.x_in, sizeof(float) * static_cast<std::size_t>(N * C));
  project(l, Proj::proj_o, a.x_mid, a.att, xa(Proj::proj_o), b, 1.0f);  // residual (N, C)

  // MLP
  be_.rmsnorm_forward(a.xn2, a.rstd2, a.x_mid, w.mlp_norm, N, C, eps);        // (N, C)
  project(l, Proj::proj_gate, a.gate, a.xn2, xa(Proj::proj_gate), b, 0.0f);  // (N, F)
  project(l, Proj::proj_up, a.up, a.xn2, xa(Proj::proj_up), b, 0.0f);        // (N, F)
  be_.swiglu_forward(a.h, a.gate, a.up, N * spec_.intermediate_size);       // (N, F)
  std::memcpy(x_out, a.x_mid, sizeof(float) * static_cast<std::size_t>(N * C));
  project(l, Proj::proj_down, x_out, a.h, xa(Proj::proj_down), b, 1.0f);  // residual (N, C)
}

void LlamaModel::block_backward(std::int64_t l, const LayerActs& a, float* d_res,
                                const TokenBatch& b) {
  const LayerWeights& w = base_.layers[static_cast<std::size_t>(l)];
  const std::int64_t N = b.batch * b.seq, C = spec_.hidden_size;
  const std::int64_t H = spec_.num_attention_heads, Hkv = spec_.num_key_value_heads;
  const std::int64_t D = spec_.head_dim;
  auto xa = [&](Proj p) { return a.xa[static_cast<int>(p)]; };

  // MLP, in reverse
  project_backward(l, Proj::proj_down, d_h_, d_res, a.h, xa(Proj::proj_down), b, 0.0f);  // (N, F)
  be_.swiglu_backward(d_gate_, d_up_, d_h_, a.gate, a.up, N * spec_.intermediate_size);
  project_backward(l, Proj::proj_gate, d_xn_, d_gate_, a.xn2, xa(Proj::proj_gate), b, 0.0f);
  project_backward(l, Proj::proj_up, d_xn_, d_up_, a.xn2, xa(Proj::proj_up), b, 1.0f);  // (N, C)
  be_.rmsnorm_backward(d_res, nullptr, d_xn_, a.x_mid, w.mlp_norm, a.rstd2, N, C, 1.0f);

  // attention, in reverse
  project_backward(l, Proj::proj_o, d_att_, d_res, a.att, xa(Proj::proj_o), b, 0.0f);  // (N, H*D)
  const AttentionShape shape{b.batch, b.seq, H, Hkv, D};
  be_.attention_backward(d_q_, d_k_, d_v_, d_att_, a.att, a.lse, a.q, a.k, a.v, b.segments, shape);
  be_.rope_backward(d_q_, b.positions, inv_freq_.data(), N, H, D);
  be_.rope_backward(d_k_, b.positions, inv_freq_.data(), N, Hkv, D);
  project_backward(l, Proj::proj_q, d_xn_, d_q_, a.xn1, xa(Proj::proj_q), b, 0.0f);
  project_backward(l, Proj::proj_k, d_xn_, d_k_, a.xn1, xa(Proj::proj_k), b, 1.0f);
  project_backward(l, Proj::proj_v, d_xn_, d_v_, a.xn1, xa(Proj::proj_v), b, 1.0f);  // (N, C)
  be_.rmsnorm_backward(d_res, nullptr, d_xn_, a.x_in, w.attn_norm, a.rstd1, N, C, 1.0f);
}

const float* LlamaModel::forward_hidden(const TokenBatch& b) {
  const std::int64_t N = b.batch * b.seq, C = spec_.hidden_size;
  const std::int64_t L = spec_.num_hidden_layers;
  be_.embedding_forward(acts_[0].x_in, b.ids, base_.embed, N);  // (N, C)
  for (std::int64_t l = 0; l < L; ++l) {
    float* x_out = l + 1 < L ? acts_[static_cast<std::size_t>(l + 1)].x_in : x_final_;
    block_forward(l, acts_[static_cast<std::size_t>(l)], x_out, b);
  }
  be_.rmsnorm_forward(xf_, rstdf_, x_final_, base_.final_norm, N, C,
                      static_cast<float>(spec_.rms_norm_eps));  // (N, C)
  return xf_;
}

double LlamaModel::train_micro_batch(const TokenBatch& b, float grad_scale, std::uint64_t step) {
  check_batch(b, true);
  step_ = step;
  dropout_on_ = true;
  const std::int64_t N = b.batch * b.seq, C = spec_.hidden_size;
  const float* hidden = forward_hidden(b);
  // Loss and dL/d(hidden) together, a block of rows at a time.
  const double loss = be_.lm_head_cross_entropy(d_xn_, hidden, base_.lm_head, b.targets, N, grad_scale);
  be_.rmsnorm_backward(d_res_, nullptr, d_xn_, x_final_, base_.final_norm, rstdf_, N, C, 0.0f);
  for (std::int64_t l = spec_.num_hidden_layers - 1; l >= 0; --l) {
    LayerActs& a = acts_[static_cast<std::size_t>(l)];
    if (limits_.activation_checkpointing) block_forward(l, a, x_discard_, b);  // recompute
    block_backward(l, a, d_res_, b);
  }
  dropout_on_ = false;
  return loss;
}

double LlamaModel::eval_loss(const TokenBatch& b) {
  check_batch(b, true);
  dropout_on_ = false;
  const float* hidden = forward_hidden(b);
  return be_.lm_head_cross_entropy(nullptr, hidden, base_.lm_head, b.targets, b.batch * b.seq, 1.0f);
}

void LlamaModel::logits(const TokenBatch& b, float* out) {
  check_batch(b, false);
  dropout_on_ = false;
  const float* hidden = forward_hidden(b);
  be_.linear_forward(out, hidden, base_.lm_head, nullptr, b.batch * b.seq, 0.0f);  // (N, V)
}

}  // namespace anvil::model
