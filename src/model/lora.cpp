#include "model/lora.h"

#include <cmath>

#include "core/error.h"
#include "core/philox.h"

namespace anvil::model {

namespace {

constexpr const char* kProjNames[kProjCount] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                "gate_proj", "up_proj", "down_proj"};

// Philox stream slot of LoRA initialisation, apart from the dropout slots (0..6).
constexpr std::uint32_t kInitSlot = 0x80;

}  // namespace

const char* proj_name(Proj p) { return kProjNames[static_cast<int>(p)]; }

const char* proj_module(Proj p) { return p <= Proj::proj_o ? "self_attn" : "mlp"; }

std::string proj_module_path(std::int64_t layer, Proj p) {
  return str_cat("model.layers.", layer, ".", proj_module(p), ".", proj_name(p));
}

std::optional<Proj> proj_from_name(const std::string& name) {
  for (int i = 0; i < kProjCount; ++i)
    if (name == kProjNames[i]) return static_cast<Proj>(i);
  return std::nullopt;
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
    auto p = proj_from_name(n);
    ANVIL_CHECK_INPUT(p.has_value(), key, ": unknown LoRA target '", n,
                      "' (expected q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj or "
                      "down_proj)");
    out[static_cast<int>(*p)] = true;
  }
  return out;
}

LoraLayout::LoraLayout(const ModelSpec& spec, const LoraSpec& lora) : lora_(lora) {
  ANVIL_CHECK(lora.rank > 0, "LoRA rank must be positive");
  index_.assign(static_cast<std::size_t>(spec.num_hidden_layers * kProjCount), -1);
  for (std::int64_t l = 0; l < spec.num_hidden_layers; ++l) {
    for (int p = 0; p < kProjCount; ++p) {
      if (!lora.targets[p]) continue;
      auto [out, in] = proj_shape(spec, static_cast<Proj>(p));
      LoraSlot s{l, static_cast<Proj>(p), in, out, size_, 0};
      s.b_offset = s.a_offset + lora.rank * in;
      size_ = s.b_offset + out * lora.rank;
      index_[static_cast<std::size_t>(l * kProjCount + p)] = static_cast<std::int64_t>(slots_.size());
      slots_.push_back(s);
    }
  }
}

const LoraSlot* LoraLayout::find(std::int64_t layer, Proj p) const {
  const std::size_t i = static_cast<std::size_t>(layer * kProjCount + static_cast<int>(p));
  if (i >= index_.size() || index_[i] < 0) return nullptr;
  return &slots_[static_cast<std::size_t>(index_[i])];
}

std::string LoraLayout::peft_name(const LoraSlot& s, char which) {
  return str_cat("base_model.model.", proj_module_path(s.layer, s.proj), ".lora_", which, ".weight");
}

void lora_init(const LoraLayout& layout, std::uint64_t seed, float* params) {
  const std::int64_t r = layout.spec().rank;
  for (const auto& s : layout.slots()) {
    const PhiloxStream stream = philox_stream(seed, 0, static_cast<std::uint32_t>(s.layer),
                                              kInitSlot + static_cast<std::uint32_t>(s.proj));
    const float bound = 1.0f / std::sqrt(static_cast<float>(s.in));
    float* a = params + s.a_offset;
    for (std::int64_t i = 0; i < r * s.in; ++i)
      a[i] = (2.0f * philox_uniform(stream, static_cast<std::uint64_t>(i)) - 1.0f) * bound;
    std::fill(params + s.b_offset, params + s.b_offset + s.out * r, 0.0f);
  }
}

}  // namespace anvil::model
