#include "train/adapter_state.h"

#include "model/tp_shard.h"

namespace anvil::train {

AdapterState::AdapterState(model::LlamaModel& model, const model::LoraLayout& full, std::uint64_t seed)
    : model_(model),
      be_(model.backend()),
      full_(full),
      n_(model.lora_layout().size()),
      bytes_(sizeof(float) * static_cast<std::size_t>(n_)) {
  adam_m_ = static_cast<float*>(be_.memory_alloc(bytes_ * 2));  // zeroed: m then v
  if (be_.on_device()) host_.resize(static_cast<std::size_t>(3 * n_));
  // The same initial adapter on any grid: drawn in the full layout, then sliced.
  std::vector<float> whole(static_cast<std::size_t>(full.size()));
  model::lora_init(full, seed, whole.data());
  model::lora_shard_extract(model.spec(), model.tp().shard, full, model.lora_layout(), whole.data(), host().params);
  upload();
}

AdapterState::~AdapterState() { be_.memory_free(adam_m_); }

void AdapterState::adamw_step(double grad_norm, const AdamwParams& p) {
  float* grads = model_.lora_grads();
  if (p.grad_clip > 0) {
    const double coef = p.grad_clip / (grad_norm + 1e-6);
    if (coef < 1.0) be_.scale(grads, static_cast<float>(coef), n_);
  }
  backend::AdamwArgs a;
  a.lr = static_cast<float>(p.lr);
  a.beta1 = static_cast<float>(p.beta1);
  a.beta2 = static_cast<float>(p.beta2);
  a.eps = static_cast<float>(p.eps);
  a.weight_decay = static_cast<float>(p.weight_decay);
  a.step = p.step;
  be_.adamw_update(model_.lora_params(), grads, adam_m(), adam_v(), n_, a);
}

AdapterBuffers AdapterState::host() {
  if (!be_.on_device()) return {model_.lora_params(), adam_m(), adam_v()};
  return {host_.data(), host_.data() + n_, host_.data() + 2 * n_};
}

void AdapterState::upload() {
  if (!be_.on_device()) return;
  const AdapterBuffers h = host();
  be_.copy_from_host(model_.lora_params(), h.params, bytes_);
  be_.copy_from_host(adam_m(), h.adam_m, 2 * bytes_);
}

void AdapterState::download() {
  if (!be_.on_device()) return;
  const AdapterBuffers h = host();
  be_.copy_to_host(h.params, model_.lora_params(), bytes_);
  be_.copy_to_host(h.adam_m, adam_m(), 2 * bytes_);
}

std::vector<float> AdapterState::gather_full(comm::Comm& tp, comm::Comm& ep) const {
  std::vector<float> mine(static_cast<std::size_t>(n_));
  be_.copy_to_host(mine.data(), model_.lora_params(), bytes_);
  if (tp.size() == 1 && ep.size() == 1) return mine;  // this rank's layout is the whole one
  // (ep, tp, n): every rank's local adapter, in (ep rank, tp rank) order. The ep ranks'
  // layouts hold different experts but have the same size (E / ep experts each). Each
  // stage's input is let go once gathered: the plan counts the TP slices and the result.
  std::vector<float> gathered(static_cast<std::size_t>(n_ * tp.size()));
  tp.allgather(mine.data(), gathered.data(), n_, DType::dtype_f32);
  std::vector<float>().swap(mine);
  if (ep.size() > 1) {
    std::vector<float> by_ep(gathered.size() * static_cast<std::size_t>(ep.size()));
    ep.allgather(gathered.data(), by_ep.data(), n_ * tp.size(), DType::dtype_f32);
    gathered.swap(by_ep);
  }
  std::vector<float> out;
  if (tp.rank() != 0 || ep.rank() != 0) return out;
  out.resize(static_cast<std::size_t>(full_.size()));
  const model::ModelSpec& spec = model_.spec();
  for (int q = 0; q < ep.size(); ++q)
    for (int t = 0; t < tp.size(); ++t) {
      model::TpShard shard = model::tp_shard(spec, t, tp.size());
      if (ep.size() > 1) model::ep_shard_set(shard, spec, q, ep.size());
      const model::LoraLayout local(model::tp_local_spec(spec, shard), full_.spec());
      const float* block = gathered.data() + (static_cast<std::int64_t>(q) * tp.size() + t) * n_;
      model::lora_shard_insert(spec, shard, full_, local, block, out.data());
    }
  return out;
}

}  // namespace anvil::train
