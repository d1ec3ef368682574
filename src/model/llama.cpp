#include "model/llama.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>

#include "core/error.h"
#include "model/llama4_ops.h"

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
      } else if (wavelen >= high_wavelen && r.high_freq_factor > r.low_freq_factor) {
        const double smooth = (old_len / wavelen - r.low_freq_factor) /
                              (r.high_freq_factor - r.low_freq_factor);
        f = (1.0 - smooth) * f / r.factor + smooth * f;
      }
    }
    out[static_cast<std::size_t>(i)] = static_cast<float>(f);
  }
  return out;
}

LinearShard linear_shard(const BaseWeights& base, const LoraLayout* lora, const float* params,
                         float* grads, std::int64_t layer, Proj p, std::int64_t expert) {
  const LayerWeights& w = base.layers[static_cast<std::size_t>(layer)];
  const int pi = static_cast<int>(p);
  LinearShard l;
  if (proj_is_expert(p)) {
    // lw.experts holds this rank's block of experts (all of them unless ep splits them).
    const std::int64_t held = expert - base.shard.expert_first;
    ANVIL_CHECK(held >= 0 && held < static_cast<std::int64_t>(w.experts.size()), "expert ", expert,
                " is not held by this rank");
    l.w = w.experts[static_cast<std::size_t>(held)][static_cast<std::size_t>(pi - static_cast<int>(Proj::proj_expert_gate))];
  } else {
    l.w = w.proj[pi];
    l.bias = w.bias[pi].data ? w.bias[pi].as<float>() : nullptr;
  }
  if (!lora) return l;
  if (const LoraSlot* s = lora->find(layer, p, expert)) {
    ANVIL_CHECK(s->in == l.in() && s->out == l.out(), "adapter ", LoraLayout::peft_name(*s, 'A'),
                " does not match its weight ", l.w.shape.str());
    l.a = params + s->a_offset;
    l.b = params + s->b_offset;
    if (grads) {
      l.da = grads + s->a_offset;
      l.db = grads + s->b_offset;
    }
    l.r = lora->spec().rank;
    l.scale = lora->spec().scale();
  }
  return l;
}

void project_forward(backend::Backend& be, const BaseWeights& base, const LoraLayout* lora,
                     const float* lora_params, std::int64_t layer, Proj p, float* y,
                     const float* x, float* xa, std::int64_t n, float beta,
                     const LoraDropout& drop) {
  linear_forward_local(be, linear_shard(base, lora, lora_params, nullptr, layer, p), y, x, xa, n,
                       beta, drop);
}

namespace {

// `base` where `be`'s ops read it (Backend::weight_place): the same views on the CPU, device
// copies for a device backend. A tied LM head stays one copy.
BaseWeights weights_place(backend::Backend& be, BaseWeights base) {
  if (!be.on_device()) return base;
  auto place = [&](TensorView& w) {
    if (w.data) w = be.weight_place(w);
  };
  const bool tied = base.lm_head.data == base.embed.data;
  place(base.embed);
  if (tied) base.lm_head = base.embed;
  else place(base.lm_head);
  place(base.final_norm);
  for (LayerWeights& l : base.layers) {
    place(l.attn_norm);
    place(l.mlp_norm);
    for (TensorView& w : l.proj) place(w);
    for (TensorView& w : l.bias) place(w);
    place(l.q_norm);
    place(l.k_norm);
    place(l.router);
    for (auto& expert : l.experts)
      for (TensorView& w : expert) place(w);
  }
  base.owner.reset();  // the host copies and the mapping are no longer read
  return base;
}

}  // namespace

TpGroup tp_single(const ModelSpec& spec) {
  TpGroup g;
  g.shard = tp_shard(spec, 0, 1);
  return g;
}

LlamaModel::LlamaModel(ModelSpec spec, BaseWeights base, LoraLayout lora, ModelLimits limits,
                       backend::Backend& backend, std::uint64_t dropout_seed)
    : LlamaModel(spec, std::move(base), std::move(lora), limits, backend, dropout_seed,
                 tp_single(spec)) {}

LlamaModel::LlamaModel(ModelSpec spec, BaseWeights base, LoraLayout lora, ModelLimits limits,
                       backend::Backend& backend, std::uint64_t dropout_seed, TpGroup tp)
    : spec_(std::move(spec)),
      local_(tp_local_spec(spec_, tp.shard)),
      base_(weights_place(backend, std::move(base))),
      lora_(std::move(lora)),
      limits_(limits),
      be_(backend),
      dropout_seed_(dropout_seed),
      tp_(tp) {
  ANVIL_CHECK(limits_.micro_batch > 0 && limits_.seq_len > 0, "model limits not set");
  ANVIL_CHECK(spec_.head_dim % 2 == 0, "head_dim must be even for rotary embeddings");
  const int group = tp_.comm ? tp_.comm->size() : 1;
  ANVIL_CHECK(group == tp_.shard.size && (!tp_.comm || tp_.comm->rank() == tp_.shard.rank),
              "TP group (", group, " ranks) does not match the shard (rank ", tp_.shard.rank, " of ",
              tp_.shard.size, ")");
  ANVIL_CHECK(tp_.shard.kv_replicas == 1 || (tp_.kv_comm && tp_.kv_comm->size() == tp_.shard.kv_replicas),
              "replicated KV heads need the group of their ", tp_.shard.kv_replicas, " ranks");
  ANVIL_CHECK(LoraLayout(local_, lora_.spec()).size() == lora_.size(),
              "the LoRA layout is not this rank's (build it from tp_local_spec)");
  if (spec_.is_moe()) {
    const bool expert_adapters = lora_.spec().targets[static_cast<int>(Proj::proj_expert_gate)] ||
                                 lora_.spec().targets[static_cast<int>(Proj::proj_expert_up)] ||
                                 lora_.spec().targets[static_cast<int>(Proj::proj_expert_down)];
    ANVIL_CHECK(!expert_adapters || lora_.spec().dropout == 0.0, "LoRA dropout on experts is not supported");
  }
  if (tp_.ep_comm && tp_.ep_comm->size() > 1) {
    ANVIL_CHECK(spec_.is_moe() && tp_.ep_comm->size() == tp_.shard.ep_size, "the ep group (",
                tp_.ep_comm->size(), " ranks) does not match the shard's ", tp_.shard.ep_size);
    ep_ = std::make_unique<MoeDispatch>(*tp_.ep_comm, be_, spec_.moe.num_experts,
                                        limits_.micro_batch * limits_.seq_len * spec_.moe.top_k,
                                        spec_.hidden_size, spec_.num_hidden_layers);
    ep_stage_ = std::unique_ptr<float, BackendFree>(
        static_cast<float*>(be_.memory_alloc(sizeof(float) * static_cast<std::size_t>(std::max<std::int64_t>(lora_.size(), 1)))),
        BackendFree{&be_});
  }
  parts_ = lora_tp_parts(tp_.shard, lora_);
  std::int64_t staged = 0;
  for (const LoraPart& part : parts_)
    if (part.grad != GradReduce::grad_reduce_none) staged += part.count;
  tp_stage_ = std::unique_ptr<float, BackendFree>(
      static_cast<float*>(be_.memory_alloc(sizeof(float) * static_cast<std::size_t>(std::max<std::int64_t>(staged, 1)))),
      BackendFree{&be_});
  tp_scalar_ = std::unique_ptr<double, BackendFree>(static_cast<double*>(be_.memory_alloc(sizeof(double))),
                                                    BackendFree{&be_});
  n_max_ = limits_.micro_batch * limits_.seq_len;
  if (spec_.is_llama4()) chunk_host_.reserve(static_cast<std::size_t>(n_max_));  // no allocation per step
  carve(arena_, local_, lora_, limits_, DType::dtype_f32, buf_);
  arena_.allocate([this](std::size_t bytes) { return be_.memory_alloc(bytes); },
                  [be = &be_](void* p) { be->memory_free(p); });
  carve(arena_, local_, lora_, limits_, DType::dtype_f32, buf_);
  const std::vector<float> inv_freq = rope_inv_freq(spec_);  // (D/2)
  be_.copy_from_host(buf_.inv_freq, inv_freq.data(), sizeof(float) * inv_freq.size());
  if (buf_.ones) {
    const std::vector<float> ones(static_cast<std::size_t>(spec_.head_dim), 1.0f);  // (D)
    be_.copy_from_host(buf_.ones, ones.data(), sizeof(float) * ones.size());
  }
  be_.reserve(backend_limits_for(local_, limits_));
}

void LlamaModel::zero_grads() {
  be_.fill_zero(buf_.lora_grads, sizeof(float) * static_cast<std::size_t>(lora_.size()));
}

TokenBatch LlamaModel::stage_batch(const TokenBatch& b) {
  // Llama 4's chunks come from the host's positions and segments, one pass over B*T ints
  // (a memcpy's worth on the CPU backend); the attention reads them in backend memory.
  if (spec_.is_llama4() && spec_.llama4.chunk > 0) {
    chunk_host_.resize(static_cast<std::size_t>(b.batch * b.seq));
    llama4_chunk_segments(chunk_host_.data(), b.segments, b.positions, b.batch, b.seq, spec_.llama4.chunk);
    be_.copy_from_host(buf_.chunk_segments, chunk_host_.data(), sizeof(std::int32_t) * chunk_host_.size());
  }
  if (!be_.on_device()) return b;
  const auto bytes = sizeof(std::int32_t) * static_cast<std::size_t>(b.batch * b.seq);
  TokenBatch d = b;
  auto stage = [&](const std::int32_t* host, std::int32_t* dev) -> const std::int32_t* {
    if (!host) return nullptr;
    be_.copy_from_host(dev, host, bytes);
    return dev;
  };
  d.ids = stage(b.ids, buf_.ids);
  d.targets = stage(b.targets, buf_.targets);
  d.positions = stage(b.positions, buf_.positions);
  d.segments = stage(b.segments, buf_.segments);
  return d;
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
  d.row_stride = proj_shape_at(spec_, layer, p)[1];  // the whole layer's input width
  if (proj_row_parallel(p)) d.col_offset = tp_proj_slice_at(spec_, tp_.shard, layer, p).start;
  return d;
}

void LlamaModel::project(std::int64_t layer, Proj p, float* y, const float* x, float* xa,
                         const TokenBatch& b, float beta) {
  const LinearShard l = linear_shard(base_, &lora_, buf_.lora_params, buf_.lora_grads, layer, p);
  const std::int64_t N = b.batch * b.seq;
  if (proj_row_parallel(p)) row_parallel_forward(be_, tp_.comm, l, y, x, xa, N, beta, dropout_for(layer, p, b));
  else linear_forward_local(be_, l, y, x, xa, N, beta, dropout_for(layer, p, b));  // column-parallel
}

void LlamaModel::project_backward(std::int64_t layer, Proj p, float* dx, const float* dy,
                                  const float* x, const float* xa, const TokenBatch& b,
                                  float beta) {
  const LinearShard l = linear_shard(base_, &lora_, buf_.lora_params, buf_.lora_grads, layer, p);
  linear_backward_local(be_, l, dx, dy, x, xa, b.batch * b.seq, beta, dropout_for(layer, p, b));
}

void LlamaModel::block_forward(std::int64_t l, LayerActs& a, float* x_out, const TokenBatch& b) {
  // x_out null: the recompute of activation checkpointing, which needs everything but the
  // block's output (the next block's input is kept): down_proj then only makes its xa.
  const LayerWeights& w = base_.layers[static_cast<std::size_t>(l)];
  const std::int64_t N = b.batch * b.seq, C = local_.hidden_size;
  const std::int64_t H = local_.num_attention_heads, Hkv = local_.num_key_value_heads;
  const std::int64_t D = local_.head_dim;
  const float eps = static_cast<float>(spec_.rms_norm_eps);
  auto xa = [&](Proj p) { return a.xa[static_cast<int>(p)]; };

  // attention
  be_.rmsnorm_forward(a.xn1, a.rstd1, a.x_in, w.attn_norm, N, C, eps);  // (N, C)
  qkv_forward(l, a, b);
  const AttentionShape shape{b.batch, b.seq, H, Hkv, D};
  be_.attention_forward(a.att, a.lse, a.q, a.k, a.v, attention_segments(l, b), shape);  // (N, H*D)
  be_.copy(a.x_mid, a.x_in, sizeof(float) * static_cast<std::size_t>(N * C));
  project(l, Proj::proj_o, a.x_mid, a.att, xa(Proj::proj_o), b, 1.0f);  // residual (N, C), reduced

  // MLP, or the routed experts
  be_.rmsnorm_forward(a.xn2, a.rstd2, a.x_mid, w.mlp_norm, N, C, eps);        // (N, C)
  const bool sparse = spec_.layer_is_moe(l);
  if (sparse) moe_forward(l, a, x_out, b);  // x_out = x_mid + experts
  if (!spec_.layer_has_mlp(l)) return;
  // The dense MLP, or Llama 4's shared expert added to the experts
  project(l, Proj::proj_gate, a.gate, a.xn2, xa(Proj::proj_gate), b, 0.0f);  // (N, F)
  project(l, Proj::proj_up, a.up, a.xn2, xa(Proj::proj_up), b, 0.0f);        // (N, F)
  be_.swiglu_forward(a.h, a.gate, a.up, N * local_.mlp_rows(l));            // (N, F)
  if (!x_out) {
    const LinearShard down = linear_shard(base_, &lora_, buf_.lora_params, nullptr, l, Proj::proj_down);
    if (down.a) be_.lora_down(xa(Proj::proj_down), a.h, down.a, N, down.in(), down.r,
                              dropout_for(l, Proj::proj_down, b));  // (N, r)
    return;
  }
  if (!sparse) be_.copy(x_out, a.x_mid, sizeof(float) * static_cast<std::size_t>(N * C));
  project(l, Proj::proj_down, x_out, a.h, xa(Proj::proj_down), b, 1.0f);  // residual (N, C), reduced
}

void LlamaModel::block_backward(std::int64_t l, const LayerActs& a, float* d_res,
                                const TokenBatch& b) {
  const LayerWeights& w = base_.layers[static_cast<std::size_t>(l)];
  const std::int64_t N = b.batch * b.seq, C = local_.hidden_size;
  const std::int64_t H = local_.num_attention_heads, Hkv = local_.num_key_value_heads;
  const std::int64_t D = local_.head_dim;
  auto xa = [&](Proj p) { return a.xa[static_cast<int>(p)]; };

  // MLP (or the experts), in reverse
  const bool sparse = spec_.layer_is_moe(l);
  if (sparse) moe_backward(l, a, d_res);  // complete d_xn
  if (spec_.layer_has_mlp(l)) {  // the dense MLP, or Llama 4's shared expert (adds to d_xn)
    // The shared expert's partial sums meet in d_xs (free again) before they join the
    // experts' d_xn, which is complete already.
    float* d_in = sparse ? buf_.d_xs : buf_.d_xn;  // (N, C)
    project_backward(l, Proj::proj_down, buf_.d_h, d_res, a.h, xa(Proj::proj_down), b, 0.0f);  // (N, F)
    be_.swiglu_backward(buf_.d_gate, buf_.d_up, buf_.d_h, a.gate, a.up, N * local_.mlp_rows(l));
    project_backward(l, Proj::proj_gate, d_in, buf_.d_gate, a.xn2, xa(Proj::proj_gate), b, 0.0f);
    project_backward(l, Proj::proj_up, d_in, buf_.d_up, a.xn2, xa(Proj::proj_up), b, 1.0f);  // (N, C)
    tp_allreduce(tp_.comm, d_in, N * C);  // column-parallel input: the partial sums meet
    if (sparse) be_.moe_residual_add(buf_.d_xn, d_in, N * C);
  }
  be_.rmsnorm_backward(d_res, nullptr, buf_.d_xn, a.x_mid, w.mlp_norm, a.rstd2, N, C, 1.0f);

  // attention, in reverse
  project_backward(l, Proj::proj_o, buf_.d_att, d_res, a.att, xa(Proj::proj_o), b, 0.0f);  // (N, H*D)
  const AttentionShape shape{b.batch, b.seq, H, Hkv, D};
  be_.attention_backward(buf_.d_q, buf_.d_k, buf_.d_v, buf_.d_att, a.att, a.lse, a.q, a.k, a.v,
                         attention_segments(l, b), shape);
  qkv_backward(l, a, b);  // (N, C)
  tp_allreduce(tp_.comm, buf_.d_xn, N * C);  // column-parallel input: the partial sums meet
  be_.rmsnorm_backward(d_res, nullptr, buf_.d_xn, a.x_in, w.attn_norm, a.rstd1, N, C, 1.0f);
}

void LlamaModel::qkv_forward(std::int64_t l, LayerActs& a, const TokenBatch& b) {
  const LayerWeights& w = base_.layers[static_cast<std::size_t>(l)];
  const std::int64_t N = b.batch * b.seq, D = local_.head_dim;
  const std::int64_t H = local_.num_attention_heads, Hkv = local_.num_key_value_heads;
  const float eps = static_cast<float>(spec_.rms_norm_eps);
  auto xa = [&](Proj p) { return a.xa[static_cast<int>(p)]; };
  const bool norm = spec_.qk_norm;
  project(l, Proj::proj_q, norm ? a.q_pre : a.q, a.xn1, xa(Proj::proj_q), b, 0.0f);  // (N, H*D)
  project(l, Proj::proj_k, norm ? a.k_pre : a.k, a.xn1, xa(Proj::proj_k), b, 0.0f);  // (N, Hkv*D)
  project(l, Proj::proj_v, a.v, a.xn1, xa(Proj::proj_v), b, 0.0f);                   // (N, Hkv*D)
  if (spec_.is_llama4()) {
    llama4_qk_forward(l, a, b);
    return;
  }
  if (norm) {  // each head over its D channels
    be_.rmsnorm_forward(a.q, a.rstd_q, a.q_pre, w.q_norm, N * H, D, eps);
    be_.rmsnorm_forward(a.k, a.rstd_k, a.k_pre, w.k_norm, N * Hkv, D, eps);
  }
  be_.rope_forward(a.q, b.positions, buf_.inv_freq, N, H, D);
  be_.rope_forward(a.k, b.positions, buf_.inv_freq, N, Hkv, D);
}

void LlamaModel::qkv_backward(std::int64_t l, const LayerActs& a, const TokenBatch& b) {
  const LayerWeights& w = base_.layers[static_cast<std::size_t>(l)];
  const std::int64_t N = b.batch * b.seq, D = local_.head_dim;
  const std::int64_t H = local_.num_attention_heads, Hkv = local_.num_key_value_heads;
  auto xa = [&](Proj p) { return a.xa[static_cast<int>(p)]; };
  const float* d_q = buf_.d_q;
  const float* d_k = buf_.d_k;
  if (spec_.is_llama4()) {
    llama4_qk_backward(l, a, b);
  } else {
    be_.rope_backward(buf_.d_q, b.positions, buf_.inv_freq, N, H, D);
    be_.rope_backward(buf_.d_k, b.positions, buf_.inv_freq, N, Hkv, D);
  }
  if (spec_.qk_norm) {
    be_.rmsnorm_backward(buf_.d_qn, nullptr, buf_.d_q, a.q_pre, w.q_norm, a.rstd_q, N * H, D, 0.0f);
    be_.rmsnorm_backward(buf_.d_kn, nullptr, buf_.d_k, a.k_pre, w.k_norm, a.rstd_k, N * Hkv, D, 0.0f);
    d_q = buf_.d_qn;
    d_k = buf_.d_kn;
  }
  project_backward(l, Proj::proj_q, buf_.d_xn, d_q, a.xn1, xa(Proj::proj_q), b, 0.0f);
  project_backward(l, Proj::proj_k, buf_.d_xn, d_k, a.xn1, xa(Proj::proj_k), b, 1.0f);
  project_backward(l, Proj::proj_v, buf_.d_xn, buf_.d_v, a.xn1, xa(Proj::proj_v), b, 1.0f);  // (N, C)
}

const float* LlamaModel::forward_hidden(const TokenBatch& b) {
  const std::int64_t N = b.batch * b.seq, C = spec_.hidden_size;
  const std::int64_t L = spec_.num_hidden_layers;
  n_cur_ = N;
  vocab_parallel_embedding(be_, tp_.comm, buf_.acts[0].x_in, b.ids, base_.embed, N, vocab_shard());  // (N, C)
  for (std::int64_t l = 0; l < L; ++l) {
    float* x_out = l + 1 < L ? buf_.acts[static_cast<std::size_t>(l + 1)].x_in : buf_.x_final;
    block_forward(l, buf_.acts[static_cast<std::size_t>(l)], x_out, b);
  }
  be_.rmsnorm_forward(buf_.xf, buf_.rstdf, buf_.x_final, base_.final_norm, N, C,
                      static_cast<float>(spec_.rms_norm_eps));  // (N, C)
  return buf_.xf;
}

double LlamaModel::train_micro_batch(const TokenBatch& host_batch, float grad_scale, std::uint64_t step) {
  check_batch(host_batch, true);
  const TokenBatch b = stage_batch(host_batch);
  step_ = step;
  dropout_on_ = true;
  const std::int64_t N = b.batch * b.seq, C = spec_.hidden_size;
  const float* hidden = forward_hidden(b);
  aux_loss_compute(N);
  // Loss and dL/d(hidden) together, a block of rows at a time.
  const double loss = vocab_parallel_cross_entropy(be_, tp_.comm, buf_.d_xn, hidden, base_.lm_head,
                                                   b.targets, N, grad_scale, vocab_shard());
  be_.rmsnorm_backward(buf_.d_res, nullptr, buf_.d_xn, buf_.x_final, base_.final_norm, buf_.rstdf, N, C, 0.0f);
  for (std::int64_t l = spec_.num_hidden_layers - 1; l >= 0; --l) {
    LayerActs& a = buf_.acts[static_cast<std::size_t>(l)];
    if (limits_.activation_checkpointing) block_forward(l, a, nullptr, b);  // recompute
    block_backward(l, a, buf_.d_res, b);
  }
  dropout_on_ = false;
  return loss;
}

double LlamaModel::eval_loss(const TokenBatch& host_batch) {
  check_batch(host_batch, true);
  const TokenBatch b = stage_batch(host_batch);
  dropout_on_ = false;
  const float* hidden = forward_hidden(b);
  return vocab_parallel_cross_entropy(be_, tp_.comm, nullptr, hidden, base_.lm_head, b.targets,
                                      b.batch * b.seq, 1.0f, vocab_shard());
}

const std::int32_t* LlamaModel::attention_segments(std::int64_t l, const TokenBatch& b) const {
  const bool chunked = spec_.is_llama4() && spec_.llama4.chunk > 0 && spec_.layer_uses_rope(l);
  return chunked ? buf_.chunk_segments : b.segments;
}

backend::VocabShard LlamaModel::vocab_shard() const {
  return {tp_.shard.vocab_first, spec_.vocab_size};
}

void LlamaModel::reduce_ep_grads(comm::Comm& dp, comm::Comm& edp) {
  ANVIL_CHECK(ep_, "reduce_ep_grads without expert parallelism");
  ep_grads_allreduce(lora_, buf_.lora_grads, dp, edp, be_, ep_stage_.get());
}

void LlamaModel::reduce_tp_grads() {
  // Pack the partial gradients of each group into one buffer: one all-reduce per group.
  for (const GradReduce g : {GradReduce::grad_reduce_tp, GradReduce::grad_reduce_kv}) {
    comm::Comm* c = g == GradReduce::grad_reduce_tp ? tp_.comm : tp_.kv_comm;
    if (!c || c->size() == 1) continue;
    std::int64_t n = 0;
    for (const LoraPart& part : parts_)
      if (part.grad == g) {
        be_.copy(tp_stage_.get() + n, buf_.lora_grads + part.offset, sizeof(float) * static_cast<std::size_t>(part.count));
        n += part.count;
      }
    if (n == 0) continue;
    c->allreduce_sum(tp_stage_.get(), n);
    n = 0;
    for (const LoraPart& part : parts_)
      if (part.grad == g) {
        be_.copy(buf_.lora_grads + part.offset, tp_stage_.get() + n, sizeof(float) * static_cast<std::size_t>(part.count));
        n += part.count;
      }
  }
}

double LlamaModel::grad_sum_squares() {
  if (!ep_ && (!tp_.comm || tp_.comm->size() == 1)) return be_.sum_squares(buf_.lora_grads, lora_.size());
  double total = 0.0, experts = 0.0;
  // parts_ holds each slot's A then B, in slot order. Under ep every rank holds other
  // experts: their squares are summed over the ep group, the rest is the same on each.
  for (std::size_t i = 0; i < parts_.size(); ++i) {
    const LoraPart& part = parts_[i];
    const bool expert = ep_ && proj_is_expert(lora_.slots()[i / 2].proj);
    (expert ? experts : total) +=
        be_.sum_squares(buf_.lora_grads + part.offset, part.count) / static_cast<double>(part.replicas);
  }
  if (ep_) {
    tp_.ep_comm->allreduce_sum(&experts, 1);  // host memory: the MoE layer is CPU-only
    total += experts;
  }
  if (!tp_.comm || tp_.comm->size() == 1) return total;
  // The TP group's Comm reduces backend memory.
  be_.copy_from_host(tp_scalar_.get(), &total, sizeof total);
  tp_.comm->allreduce_sum(tp_scalar_.get(), 1);
  be_.copy_to_host(&total, tp_scalar_.get(), sizeof total);
  return total;
}

void LlamaModel::logits(const TokenBatch& host_batch, float* out) {
  check_batch(host_batch, false);
  const TokenBatch b = stage_batch(host_batch);
  ANVIL_CHECK(tp_.shard.size == 1, "logits of a tensor-parallel model are not gathered");
  dropout_on_ = false;
  const float* hidden = forward_hidden(b);
  be_.linear_forward(out, hidden, base_.lm_head, nullptr, b.batch * b.seq, 0.0f);  // (N, V)
}

}  // namespace anvil::model
