#include "model/lora.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <string_view>

#include "core/error.h"
#include "core/philox.h"

namespace anvil::model {

namespace {

constexpr const char* kProjNames[kProjCount] = {
    "q_proj",   "k_proj",    "v_proj",            "o_proj",          "gate_proj",
    "up_proj",  "down_proj", "experts.gate_proj", "experts.up_proj", "experts.down_proj"};

// Philox stream slot of LoRA initialisation, apart from the dropout slots (0..6).
constexpr std::uint32_t kInitSlot = 0x80;

}  // namespace

const char* proj_name(Proj p) { return kProjNames[static_cast<int>(p)]; }

bool proj_is_expert(Proj p) { return p >= Proj::proj_expert_gate; }

const char* proj_module(Proj p) { return p <= Proj::proj_o ? "self_attn" : "mlp"; }

namespace {
constexpr const char* kExpertLeaf[3] = {"gate_proj", "up_proj", "down_proj"};
constexpr const char* kMixtralLeaf[3] = {"w1", "w3", "w2"};  // gate, up, down
const char* expert_leaf(const ModelSpec& spec, int k) {
  return spec.model_type == "mixtral" ? kMixtralLeaf[k] : kExpertLeaf[k];
}
}  // namespace

std::optional<Proj> expert_proj_from_leaf(const ModelSpec& spec, const std::string& leaf) {
  if (!spec.is_moe()) return std::nullopt;
  for (int k = 0; k < 3; ++k)
    if (leaf == expert_leaf(spec, k)) return static_cast<Proj>(static_cast<int>(Proj::proj_expert_gate) + k);
  return std::nullopt;
}

std::optional<ExpertWeight> expert_weight_from_name(const ModelSpec& spec, const std::string& name) {
  static constexpr std::string_view kLayers = "model.layers.", kExperts = ".experts.", kWeight = ".weight";
  if (!spec.is_moe() || !name.starts_with(kLayers) || !name.ends_with(kWeight)) return std::nullopt;
  const std::size_t at = name.find(kExperts), e0 = at + kExperts.size();
  const std::size_t e1 = at == std::string::npos ? at : name.find('.', e0);
  if (e1 == std::string::npos) return std::nullopt;
  auto number = [&](std::size_t from, std::size_t to, std::int64_t& out) {
    const auto [end, ec] = std::from_chars(name.data() + from, name.data() + to, out);
    return to > from && ec == std::errc() && end == name.data() + to;
  };
  ExpertWeight w;
  const std::size_t l1 = name.find('.', kLayers.size());
  const auto p = expert_proj_from_leaf(spec, name.substr(e1 + 1, name.size() - kWeight.size() - e1 - 1));
  if (!p || !number(kLayers.size(), l1, w.layer) || !number(e0, e1, w.expert)) return std::nullopt;
  w.proj = *p;
  // Only the spelling proj_module_path writes (the module between layer and experts included).
  if (proj_module_path(spec, w.layer, w.proj, w.expert) + ".weight" != name) return std::nullopt;
  return w;
}

std::string proj_module_path(const ModelSpec& spec, std::int64_t layer, Proj p, std::int64_t expert) {
  const std::string block = str_cat("model.layers.", layer, ".");
  if (p <= Proj::proj_o) return str_cat(block, "self_attn.", proj_name(p));
  if (spec.is_llama4()) {
    // The experts are fused on disk (feed_forward.experts.gate_up_proj); expert e's name is
    // anvil's own, as Qwen3-MoE spells it. gate/up/down are the shared expert's in a sparse
    // layer.
    const std::string ff = block + "feed_forward.";
    if (!proj_is_expert(p))
      return str_cat(ff, spec.layer_is_moe(layer) ? "shared_expert." : "", proj_name(p));
    const int k = static_cast<int>(p) - static_cast<int>(Proj::proj_expert_gate);
    return str_cat(ff, "experts.", expert, ".", kExpertLeaf[k]);
  }
  if (!proj_is_expert(p)) return str_cat(block, "mlp.", proj_name(p));
  ANVIL_CHECK(expert >= 0 && expert < spec.moe.num_experts, "expert ", expert, " of ", spec.moe.num_experts);
  const int k = static_cast<int>(p) - static_cast<int>(Proj::proj_expert_gate);
  return str_cat(block, spec.moe_module(), ".experts.", expert, ".", expert_leaf(spec, k));
}

std::optional<Proj> proj_from_name(const std::string& name) {
  for (int i = 0; i < kProjCount; ++i)
    if (name == kProjNames[i]) return static_cast<Proj>(i);
  return std::nullopt;
}

std::array<std::int64_t, 2> proj_shape_at(const ModelSpec& s, std::int64_t layer, Proj p) {
  auto shape = proj_shape(s, p);
  if (p == Proj::proj_gate || p == Proj::proj_up) shape[0] = s.mlp_rows(layer);
  if (p == Proj::proj_down) shape[1] = s.mlp_rows(layer);
  return shape;
}

std::array<std::int64_t, 2> proj_shape(const ModelSpec& s, Proj p) {
  const std::int64_t q = s.num_attention_heads * s.head_dim;
  const std::int64_t kv = s.num_key_value_heads * s.head_dim;
  switch (p) {
    case Proj::proj_q: return {q, s.hidden_size};
    case Proj::proj_k: return {kv, s.hidden_size};
    case Proj::proj_v: return {kv, s.hidden_size};
    case Proj::proj_o: return {s.hidden_size, q};
    case Proj::proj_gate: return {s.intermediate_size, s.hidden_size};
    case Proj::proj_up: return {s.intermediate_size, s.hidden_size};
    case Proj::proj_down: return {s.hidden_size, s.intermediate_size};
    case Proj::proj_expert_gate:
    case Proj::proj_expert_up: return {s.moe.intermediate_size, s.hidden_size};
    case Proj::proj_expert_down: return {s.hidden_size, s.moe.intermediate_size};
  }
  ANVIL_CHECK(false, "bad projection");
  return {};
}

float LoraSpec::scale() const {
  return static_cast<float>(rslora ? alpha / std::sqrt(static_cast<double>(rank)) : alpha / rank);
}

bool LoraSpec::targets_any() const {
  for (bool t : targets)
    if (t) return true;
  return false;
}

std::array<bool, kProjCount> lora_targets_from_names(const std::vector<std::string>& names,
                                                     const std::string& key) {
  std::array<bool, kProjCount> out{};
  for (const auto& n : names) {
    if (n == "experts") {
      for (const Proj p : {Proj::proj_expert_gate, Proj::proj_expert_up, Proj::proj_expert_down})
        out[static_cast<int>(p)] = true;
      continue;
    }
    if (n == "shared_expert") {  // Llama 4's shared expert is its sparse layers' gate/up/down
      for (const Proj p : {Proj::proj_gate, Proj::proj_up, Proj::proj_down}) out[static_cast<int>(p)] = true;
      continue;
    }
    auto p = proj_from_name(n);
    ANVIL_CHECK_INPUT(p.has_value(), key, ": unknown LoRA target '", n,
                      "' (expected q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, "
                      "experts, shared_expert, or one expert projection: experts.gate_proj, experts.up_proj, "
                      "experts.down_proj)");
    out[static_cast<int>(*p)] = true;
  }
  return out;
}

LoraLayout::LoraLayout(const ModelSpec& spec, const LoraSpec& lora) : lora_(lora) {
  ANVIL_CHECK(lora.rank > 0, "LoRA rank must be positive");
  index_.assign(static_cast<std::size_t>(spec.num_hidden_layers * kProjCount), -1);
  for (std::int64_t l = 0; l < spec.num_hidden_layers; ++l) {
    const bool sparse = spec.layer_is_moe(l);
    for (int p = 0; p < kProjCount; ++p) {
      const Proj proj = static_cast<Proj>(p);
      const bool used = proj_is_expert(proj) ? sparse : proj < Proj::proj_gate || spec.layer_has_mlp(l);
      if (!lora.targets[p] || !used) continue;
      auto [out, in] = proj_shape_at(spec, l, proj);
      index_[static_cast<std::size_t>(l * kProjCount + p)] = static_cast<std::int64_t>(slots_.size());
      // Under ep only this rank's experts (MoeSpec::expert_first ...), by their model index.
      const bool expert = proj_is_expert(proj);
      const std::int64_t first = expert ? spec.moe.expert_first : 0;
      const std::int64_t experts = expert ? spec.moe.experts_held() : 1;
      for (std::int64_t e = first; e < first + experts; ++e) {
        LoraSlot s{l, proj, in, out, size_, 0, expert ? e : -1, ""};
        s.module = proj_module_path(spec, l, proj, s.expert);
        s.b_offset = s.a_offset + lora.rank * in;
        size_ = s.b_offset + out * lora.rank;
        slots_.push_back(std::move(s));
      }
    }
  }
}

const LoraSlot* LoraLayout::find(std::int64_t layer, Proj p, std::int64_t expert) const {
  const std::size_t i = static_cast<std::size_t>(layer * kProjCount + static_cast<int>(p));
  if (layer < 0 || i >= index_.size() || index_[i] < 0) return nullptr;
  ANVIL_CHECK(proj_is_expert(p) == (expert >= 0), "LoRA lookup: expert ", expert, " of ", proj_name(p));
  // The slots of an expert projection are consecutive experts from the layout's first.
  const LoraSlot& first = slots_[static_cast<std::size_t>(index_[i])];
  const std::int64_t slot = index_[i] + (expert >= 0 ? expert - first.expert : 0);
  if (expert >= 0 && (slot >= static_cast<std::int64_t>(slots_.size()) || slots_[static_cast<std::size_t>(slot)].layer != layer ||
                      slots_[static_cast<std::size_t>(slot)].proj != p || expert < first.expert))
    return nullptr;  // an expert another ep rank holds
  return &slots_[static_cast<std::size_t>(slot)];
}

std::string LoraLayout::peft_name(const LoraSlot& s, char which) {
  return str_cat("base_model.model.", s.module, ".lora_", which, ".weight");
}

void lora_init(const LoraLayout& layout, std::uint64_t seed, float* params) {
  const std::int64_t r = layout.spec().rank;
  for (const auto& s : layout.slots()) {
    // Expert e's stream is step e + 1 of the init slots (dropout uses the slots below them),
    // so a dense model's values stay what they were.
    const PhiloxStream stream = philox_stream(seed, static_cast<std::uint64_t>(s.expert + 1),
                                              static_cast<std::uint32_t>(s.layer),
                                              kInitSlot + static_cast<std::uint32_t>(s.proj));
    const float bound = 1.0f / std::sqrt(static_cast<float>(s.in));
    float* a = params + s.a_offset;
    for (std::int64_t i = 0; i < r * s.in; ++i)
      a[i] = (2.0f * philox_uniform(stream, static_cast<std::uint64_t>(i)) - 1.0f) * bound;
    std::fill(params + s.b_offset, params + s.b_offset + s.out * r, 0.0f);
  }
}

}  // namespace anvil::model
