// The mixture-of-experts layer of LlamaModel (Qwen3-MoE, Mixtral, Llama 4): route, sort the
// token choices by expert, one GEMM per expert over its contiguous rows, combine in choice
// order; under expert parallelism the rows travel to their experts and back
// (moe_dispatch.h). The routing, row moves and Llama 4's score steps (backend/llama4_ops.h)
// are Backend ops. Also the load-balancing loss and the expert loads.
#include <vector>

#include "core/error.h"
#include "model/llama.h"

namespace anvil::model {

namespace {

// The expert row blocks size the expert GEMMs on the host: a sparse layer's one copy from
// the backend, (E + 1) offsets (a memcpy on the CPU backend, a stream sync on a device).
std::vector<std::int64_t> expert_offsets(backend::Backend& be, const MoeRoute& rt, std::int64_t E) {
  std::vector<std::int64_t> out(static_cast<std::size_t>(E + 1));
  be.copy_to_host(out.data(), rt.offsets, sizeof(std::int64_t) * out.size());
  return out;
}

backend::ExpertLinear expert_linear(const LinearShard& s) { return {s.w, s.a, s.b, s.da, s.db, s.r, s.scale}; }

// This rank's experts [first, first + held) with their rows, offsets (held + 1) into the
// layer's expert-ordered buffers, and their adapters (gradients too when grads is not null).
std::vector<backend::MoeExpert> expert_blocks(const BaseWeights& base, const LoraLayout& lora, const float* params,
                                              float* grads, std::int64_t l, std::int64_t first, std::int64_t held,
                                              const std::int64_t* offsets) {
  std::vector<backend::MoeExpert> out(static_cast<std::size_t>(held));
  for (std::int64_t j = 0; j < held; ++j) {
    auto shard = [&](Proj p) { return expert_linear(linear_shard(base, &lora, params, grads, l, p, first + j)); };
    backend::MoeExpert& e = out[static_cast<std::size_t>(j)];
    e.gate = shard(Proj::proj_expert_gate);
    e.up = shard(Proj::proj_expert_up);
    e.down = shard(Proj::proj_expert_down);
    e.row0 = offsets[j];
    e.rows = offsets[j + 1] - offsets[j];
  }
  return out;
}

// The layer's expert buffers (Acts: LlamaModel's LayerActs) as the experts' ops take them.
template <typename Acts>
backend::MoeExpertActs expert_acts(const Acts& a, std::int64_t c, std::int64_t fe, std::int64_t r) {
  return {.c = c,
          .fe = fe,
          .r = r,
          .xs = a.xs,
          .gate = a.egate,
          .up = a.eup,
          .h = a.eh,
          .y = a.ye,
          .xa_gate = a.xa[static_cast<int>(Proj::proj_expert_gate)],
          .xa_up = a.xa[static_cast<int>(Proj::proj_expert_up)],
          .xa_down = a.xa[static_cast<int>(Proj::proj_expert_down)]};
}

}  // namespace

void LlamaModel::moe_forward(std::int64_t l, LayerActs& a, float* x_out, const TokenBatch& b) {
  const LayerWeights& w = base_.layers[static_cast<std::size_t>(l)];
  const MoeRoute& rt = buf_.routes[static_cast<std::size_t>(l)];
  const std::int64_t N = b.batch * b.seq, C = local_.hidden_size, Fe = local_.moe.intermediate_size;
  const std::int64_t E = spec_.moe.num_experts, K = spec_.moe.top_k, r = lora_.spec().rank;
  be_.linear_forward(buf_.logits, a.xn2, w.router, nullptr, N, 0.0f);  // (N, E), the same on every TP rank
  be_.moe_route(buf_.logits, N, E, K, spec_.moe.norm_topk_prob, rt);
  // Llama 4: the chosen experts' sigmoid scores replace the softmax weights and scale each
  // expert's input.
  if (spec_.is_llama4()) be_.llama4_route_scores(buf_.logits, rt, N, E, K);
  // This rank's experts [first, first + held) and their rows' offsets (held + 1) in a.xs:
  // every expert's rows here (one copy of the route's E + 1 from the backend), or under ep
  // the rows every ep rank sent (moe_dispatch.h).
  const std::int64_t first = local_.moe.expert_first, held = local_.moe.experts_held();
  const std::vector<std::int64_t> route_offsets = expert_offsets(be_, rt, E);
  const std::int64_t* offsets = route_offsets.data();
  float* home = ep_ ? buf_.ep_home : a.xs;
  be_.moe_gather(home, a.xn2, rt, N, K, C);  // (R, C) in expert order
  // Llama 4's rows leave scaled: an expert on another ep rank needs no scores.
  if (spec_.is_llama4()) be_.llama4_scale_rows(home, rt, N, K, C);
  if (ep_) {
    offsets = ep_->plan(l, route_offsets.data());
    ep_->send(l, home, a.xs);  // (rows received, C), expert-major
  }
  // The experts (none dropped out: checked at construction), side by side where the backend can.
  const std::vector<backend::MoeExpert> experts =
      expert_blocks(base_, lora_, buf_.lora_params, nullptr, l, first, held, offsets);
  be_.moe_experts_forward(experts.data(), held, expert_acts(a, C, Fe, r));  // ye (R, C), partial over TP
  float* ye = a.ye;  // (R, C) this rank's rows' expert outputs
  if (ep_) {
    ye = a.ye_home;
    ep_->send_back(l, a.ye, ye);  // backward reads them too: also when recomputing
  }
  if (!x_out) return;
  // Llama 4's scores went in front: its outputs are summed with weight 1 in choice order,
  // the sum moe_scatter makes of a token's rows.
  if (spec_.is_llama4()) be_.moe_scatter(buf_.moe_out, ye, rt, N, K, C);
  else be_.moe_combine(buf_.moe_out, ye, rt, N, K, C);
  tp_allreduce(tp_.comm, buf_.moe_out, N * C);  // the experts' down projections are row-parallel
  be_.copy(x_out, a.x_mid, sizeof(float) * static_cast<std::size_t>(N * C));
  be_.moe_residual_add(x_out, buf_.moe_out, N * C);
}

void LlamaModel::moe_backward(std::int64_t l, const LayerActs& a, const float* d_res) {
  const LayerWeights& w = base_.layers[static_cast<std::size_t>(l)];
  const MoeRoute& rt = buf_.routes[static_cast<std::size_t>(l)];
  const std::int64_t N = n_cur_, C = local_.hidden_size, Fe = local_.moe.intermediate_size;
  const std::int64_t E = spec_.moe.num_experts, K = spec_.moe.top_k, r = lora_.spec().rank;
  const std::int64_t first = local_.moe.expert_first, held = local_.moe.experts_held();
  const std::vector<std::int64_t> route_offsets = ep_ ? std::vector<std::int64_t>{} : expert_offsets(be_, rt, E);
  const std::int64_t* offsets = ep_ ? ep_->local_offsets(l) : route_offsets.data();  // (held + 1), as forward
  // The weights' gradient reads the experts' outputs, partial over the TP group: reduced.
  // Under ep the outputs' gradients go to the experts the way the rows went.
  float* d_home = ep_ ? buf_.ep_home : buf_.d_ye;  // (R, C) this rank's rows' output gradients
  if (spec_.is_llama4()) {
    be_.moe_gather(d_home, d_res, rt, N, K, C);  // outputs summed with weight 1
  } else {
    be_.moe_combine_backward(buf_.dweight, d_home, d_res, ep_ ? a.ye_home : a.ye, rt, N, K, C);
    tp_allreduce(tp_.comm, buf_.dweight, N * K);
  }
  if (ep_) ep_->send(l, d_home, buf_.d_ye);
  const std::vector<backend::MoeExpert> experts =
      expert_blocks(base_, lora_, buf_.lora_params, buf_.lora_grads, l, first, held, offsets);
  const backend::MoeExpertGrads g{
      .dy = buf_.d_ye, .dh = buf_.d_eh, .dgate = buf_.d_egate, .dup = buf_.d_eup, .dxs = buf_.d_xs};
  be_.moe_experts_backward(experts.data(), held, expert_acts(a, C, Fe, r), g);  // d_xs (R, C)
  float* d_xs_home = ep_ ? buf_.ep_home : buf_.d_xs;  // (R, C) the scaled inputs' gradients, home
  if (ep_) ep_->send_back(l, buf_.d_xs, d_xs_home);
  // Llama 4: the scores' gradients from the home rows and the unscaled input a.xn2, partial
  // over TP as the rows' gradients are (the experts' gate/up are column-parallel).
  if (spec_.is_llama4()) {
    be_.llama4_scale_backward(buf_.dweight, d_xs_home, a.xn2, rt, N, K, C);
    tp_allreduce(tp_.comm, buf_.dweight, N * K);
  }
  be_.moe_scatter(buf_.d_xn, d_xs_home, rt, N, K, C);
  tp_allreduce(tp_.comm, buf_.d_xn, N * C);  // the experts' gate/up are column-parallel
  // The router (replicated): its input gradient is complete on every rank.
  if (spec_.is_llama4())
    be_.llama4_router_backward(buf_.logits, buf_.dweight, rt, N, E, K);
  else
    be_.moe_router_backward(buf_.logits, buf_.dweight, rt, N, E, K, spec_.moe.norm_topk_prob,
                            aux_grad_.empty() ? nullptr : buf_.moe_aux + 2 * E);
  be_.linear_backward_input(buf_.d_xn, buf_.logits, w.router, N, 1.0f);
}

void LlamaModel::aux_loss_compute(std::int64_t n) {
  aux_loss_ = 0.0;
  aux_grad_.clear();
  if (!spec_.is_moe() || !spec_.moe.aux_loss) return;
  const std::int64_t E = spec_.moe.num_experts, K = spec_.moe.top_k;
  // The statistics are summed where the routes live; the few scalars of the loss on the host.
  be_.fill_zero(buf_.moe_aux, sizeof(double) * static_cast<std::size_t>(2 * E));
  std::int64_t sparse = 0;
  for (std::int64_t l = 0; l < spec_.num_hidden_layers; ++l) {
    if (!spec_.layer_is_moe(l)) continue;
    be_.moe_aux_accumulate(buf_.moe_aux, buf_.moe_aux + E, buf_.routes[static_cast<std::size_t>(l)], n, E, K);
    ++sparse;
  }
  std::vector<double> stats(static_cast<std::size_t>(2 * E));  // (2, E) count, prob_sum
  be_.copy_to_host(stats.data(), buf_.moe_aux, sizeof(double) * stats.size());
  const double* count = stats.data();
  const double* prob_sum = stats.data() + E;
  const double rows = static_cast<double>(n * sparse);
  aux_grad_.assign(static_cast<std::size_t>(E), 0.0);
  for (std::int64_t e = 0; e < E; ++e) {
    const auto i = static_cast<std::size_t>(e);
    aux_loss_ += static_cast<double>(E) * (count[i] / rows) * (prob_sum[i] / rows);
    aux_grad_[i] = static_cast<double>(aux_weight_) * static_cast<double>(E) * count[i] / (rows * rows);
  }
  be_.copy_from_host(buf_.moe_aux + 2 * E, aux_grad_.data(), sizeof(double) * aux_grad_.size());  // for backward
}

std::vector<std::int64_t> LlamaModel::last_expert_load() const {
  std::vector<std::int64_t> out;
  for (std::int64_t l = 0; l < spec_.num_hidden_layers; ++l) {
    if (!spec_.layer_is_moe(l)) continue;
    const std::vector<std::int64_t> o =
        expert_offsets(be_, buf_.routes[static_cast<std::size_t>(l)], spec_.moe.num_experts);
    for (std::size_t e = 0; e + 1 < o.size(); ++e) out.push_back(o[e + 1] - o[e]);
  }
  return out;
}

}  // namespace anvil::model
