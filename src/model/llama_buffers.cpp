// LlamaModel's buffers: every activation, gradient and routing buffer of a micro-batch
// carved from one arena (the planner sizes runs with the same carve, arena_bytes_for), and
// the backend's scratch limits.
#include <algorithm>

#include "core/error.h"
#include "model/llama.h"

namespace anvil::model {

backend::BackendLimits LlamaModel::backend_limits_for(const ModelSpec& local, const ModelLimits& limits) {
  backend::BackendLimits bl;
  bl.max_tokens = limits.micro_batch * limits.seq_len;
  bl.max_seq = limits.seq_len;
  bl.max_heads = local.num_attention_heads;
  bl.max_head_dim = local.head_dim;
  bl.max_width = std::max({local.hidden_size, local.intermediate_size, local.moe.intermediate_size,
                           local.num_attention_heads * local.head_dim});
  bl.vocab = local.vocab_size;
  bl.hidden = local.hidden_size;
  return bl;
}

std::size_t LlamaModel::arena_bytes_for(const ModelSpec& local, const LoraLayout& lora, const ModelLimits& limits,
                                        DType activations) {
  Arena plan;
  Buffers unused;
  carve(plan, local, lora, limits, activations, unused);
  return plan.used();
}

void LlamaModel::carve(Arena& arena, const ModelSpec& local, const LoraLayout& lora, const ModelLimits& limits,
                       DType activations, Buffers& out) {
  const std::int64_t N = limits.micro_batch * limits.seq_len, C = local.hidden_size;
  // Llama 4's shared expert shares the dense MLP's buffers (its width can be the larger).
  const std::int64_t F = std::max(local.intermediate_size, local.is_llama4() ? local.moe.intermediate_size : 0);
  const bool qk_pre = local.qk_norm || local.is_llama4();  // q, k kept before their norm
  const std::int64_t HD = local.num_attention_heads * local.head_dim;
  const std::int64_t KV = local.num_key_value_heads * local.head_dim;
  const std::int64_t L = local.num_hidden_layers;
  const std::int64_t r = lora.spec().rank;
  // Activations and their gradients in `activations`; the model computes in f32, so only
  // plan mode (null pointers) may ask for another size. Norm statistics, the attention
  // log-sum-exp and the adapter stay f32.
  const auto act_size = static_cast<std::int64_t>(dtype_size(activations));
  ANVIL_CHECK(act_size == 4 || !arena.allocated(), "the model's activations are f32");
  auto act = [&](std::int64_t n) { return reinterpret_cast<float*>(arena.take<std::byte>(n * act_size)); };
  out.lora_params = arena.take<float>(lora.size());
  out.lora_grads = arena.take<float>(lora.size());
  out.ids = arena.take<std::int32_t>(N);
  out.targets = arena.take<std::int32_t>(N);
  out.positions = arena.take<std::int32_t>(N);
  out.segments = arena.take<std::int32_t>(N);
  out.inv_freq = arena.take<float>(local.head_dim / 2);

  const std::int64_t E = local.moe.num_experts, K = local.moe.top_k, R = N * K;
  const std::int64_t Fe = local.moe.intermediate_size;
  // Under ep this rank's experts may receive every ep rank's rows (dropless): Rl of them.
  const std::int64_t ep = local.is_moe() ? E / local.moe.experts_held() : 1;
  const std::int64_t Rl = MoeDispatch::local_rows_max(R, static_cast<int>(ep));
  bool any_dense = false, any_sparse = false;
  for (std::int64_t l = 0; l < L; ++l) {
    any_sparse = any_sparse || local.layer_is_moe(l);
    any_dense = any_dense || local.layer_has_mlp(l);
  }
  auto take_block = [&](LayerActs& a, bool dense, bool sparse) {
    a.xn1 = act(N * C);
    a.rstd1 = arena.take<float>(N);
    a.q = act(N * HD);
    a.k = act(N * KV);
    a.v = act(N * KV);
    a.att = act(N * HD);
    a.lse = arena.take<float>(N * local.num_attention_heads);
    a.x_mid = act(N * C);
    a.xn2 = act(N * C);
    a.rstd2 = arena.take<float>(N);
    if (qk_pre) {
      a.q_pre = act(N * HD);
      a.k_pre = act(N * KV);
      a.rstd_q = arena.take<float>(N * local.num_attention_heads);
      a.rstd_k = arena.take<float>(N * local.num_key_value_heads);
    }
    if (dense) {
      a.gate = act(N * F);
      a.up = act(N * F);
      a.h = act(N * F);
    }
    if (sparse) {
      a.xs = act(Rl * C);
      a.egate = act(Rl * Fe);
      a.eup = act(Rl * Fe);
      a.eh = act(Rl * Fe);
      a.ye = act(Rl * C);
      if (ep > 1) a.ye_home = act(R * C);
    }
    for (int p = 0; p < kProjCount; ++p) {
      const bool expert = proj_is_expert(static_cast<Proj>(p));
      const bool used = p < static_cast<int>(Proj::proj_gate) || (expert ? sparse : dense);
      a.xa[p] = lora.spec().targets[p] && used ? act((expert ? Rl : N) * r) : nullptr;
    }
  };
  out.acts.assign(static_cast<std::size_t>(L), LayerActs{});
  LayerActs shared{};
  if (limits.activation_checkpointing) take_block(shared, any_dense, any_sparse);
  for (std::int64_t l = 0; l < L; ++l) {
    LayerActs& a = out.acts[static_cast<std::size_t>(l)];
    if (limits.activation_checkpointing) a = shared;
    else take_block(a, local.layer_has_mlp(l), local.layer_is_moe(l));
    a.x_in = act(N * C);
  }
  // Every sparse layer's routing is kept (the load-balancing loss reads them all).
  out.routes.assign(static_cast<std::size_t>(L), MoeRoute{});
  for (std::int64_t l = 0; l < L; ++l) {
    if (!local.layer_is_moe(l)) continue;
    MoeRoute& rt = out.routes[static_cast<std::size_t>(l)];
    rt.probs = arena.take<float>(N * E);
    rt.expert = arena.take<std::int32_t>(R);
    rt.weight = arena.take<float>(R);
    rt.row = arena.take<std::int32_t>(R);
    rt.token = arena.take<std::int32_t>(R);
    rt.offsets = arena.take<std::int64_t>(E + 1);
  }
  out.x_final = act(N * C);
  out.xf = act(N * C);
  out.rstdf = arena.take<float>(N);
  out.d_res = act(N * C);
  out.d_xn = act(N * C);
  out.d_q = act(N * HD);
  out.d_att = act(N * HD);
  out.d_k = act(N * KV);
  out.d_v = act(N * KV);
  if (any_dense) {
    out.d_gate = act(N * F);
    out.d_up = act(N * F);
    out.d_h = act(N * F);
  }
  if (qk_pre) {
    out.d_qn = act(N * HD);
    out.d_kn = act(N * KV);
  }
  if (local.is_llama4()) {
    out.ones = arena.take<float>(local.head_dim);
    out.chunk_segments = arena.take<std::int32_t>(N);
  }
  if (any_sparse) {
    out.logits = arena.take<float>(N * E);
    out.moe_out = act(N * C);
    out.dweight = arena.take<float>(R);
    out.d_ye = act(Rl * C);
    out.d_xs = act(Rl * C);
    out.d_egate = act(Rl * Fe);
    out.d_eup = act(Rl * Fe);
    out.d_eh = act(Rl * Fe);
    if (ep > 1) out.ep_home = act(R * C);
    out.moe_aux = arena.take<double>(3 * E);
  }
}

}  // namespace anvil::model
