#include "model/lora.h"

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/philox.h"
#include "io/files.h"
#include "io/safetensors.h"

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

LoraAdapter lora_load_peft(const std::string& dir, const ModelSpec& model) {
  const std::string config_path = dir + "/adapter_config.json";
  const auto cfg = nlohmann::json::parse(io::read_text_file(config_path), nullptr, false);
  ANVIL_CHECK_INPUT(cfg.is_object(), config_path, ": not a JSON object");
  auto need = [&](const char* key) -> const nlohmann::json& {
    ANVIL_CHECK_INPUT(cfg.contains(key), config_path, ": missing '", key, "'");
    return cfg[key];
  };
  ANVIL_CHECK_INPUT(need("peft_type") == "LORA", config_path, ": peft_type is not LORA");
  for (const char* unsupported : {"use_dora", "lora_bias", "rank_pattern", "alpha_pattern"}) {
    if (!cfg.contains(unsupported) || cfg[unsupported].is_null()) continue;
    const auto& v = cfg[unsupported];
    ANVIL_CHECK_INPUT(v == false || (v.is_object() && v.empty()), config_path, ": '",
                      unsupported, "' is not supported");
  }
  LoraAdapter out;
  ANVIL_CHECK_INPUT(need("r").is_number_integer() && cfg["r"].get<int>() > 0, config_path,
                    ": 'r' must be a positive integer");
  ANVIL_CHECK_INPUT(need("lora_alpha").is_number(), config_path, ": 'lora_alpha' must be a number");
  out.spec.rank = cfg["r"].get<int>();
  out.spec.alpha = cfg["lora_alpha"].get<double>();
  out.spec.rslora = cfg.value("use_rslora", false);
  out.spec.dropout = cfg.value("lora_dropout", 0.0);
  const auto& targets = need("target_modules");
  ANVIL_CHECK_INPUT(targets.is_array(), config_path,
                    ": 'target_modules' must be a list of module names");
  std::vector<std::string> names;
  for (const auto& t : targets) {
    ANVIL_CHECK_INPUT(t.is_string(), config_path, ": 'target_modules' must hold strings");
    names.push_back(t.get<std::string>());
  }
  out.spec.targets = lora_targets_from_names(names, config_path + ": target_modules");

  const std::string weights_path = dir + "/adapter_model.safetensors";
  const auto file = io::SafetensorsFile::open(weights_path);
  const LoraLayout layout(model, out.spec);
  out.params.assign(static_cast<std::size_t>(layout.size()), 0.0f);
  std::size_t matched = 0;
  for (const auto& s : layout.slots()) {
    for (char which : {'A', 'B'}) {
      const std::string name = LoraLayout::peft_name(s, which);
      const io::TensorInfo* t = file.find(name);
      ANVIL_CHECK_INPUT(t != nullptr, weights_path, ": missing tensor ", name);
      const Shape want = which == 'A' ? Shape{out.spec.rank, s.in} : Shape{s.out, out.spec.rank};
      ANVIL_CHECK_INPUT(t->shape == want, weights_path, ": ", name, " has shape ", t->shape.str(),
                        ", expected ", want.str());
      ANVIL_CHECK_INPUT(dtype_is_float(t->dtype), weights_path, ": ", name,
                        " is not a floating-point tensor");
      const TensorView v = file.view(*t);
      float* dst = out.params.data() + (which == 'A' ? s.a_offset : s.b_offset);
      for (std::int64_t i = 0; i < want.numel(); ++i)
        dst[i] = static_cast<float>(dtype_load_as_f64(v.data, v.dtype, static_cast<std::size_t>(i)));
      ++matched;
    }
  }
  ANVIL_CHECK_INPUT(matched == file.tensors().size(), weights_path, ": holds ",
                    file.tensors().size(), " tensors, but the adapter config names ", matched,
                    " (other layers or modules are not supported)");
  return out;
}

void lora_save_peft(const std::string& dir, const LoraLayout& layout, const float* params,
                    const std::string& base_model) {
  std::filesystem::create_directories(dir);
  const LoraSpec& spec = layout.spec();
  nlohmann::json targets = nlohmann::json::array();
  for (int p = 0; p < kProjCount; ++p)
    if (spec.targets[p]) targets.push_back(kProjNames[p]);
  const nlohmann::json cfg = {
      {"peft_type", "LORA"},        {"task_type", "CAUSAL_LM"},
      {"base_model_name_or_path", base_model},
      {"r", spec.rank},             {"lora_alpha", spec.alpha},
      {"lora_dropout", spec.dropout}, {"use_rslora", spec.rslora},
      {"target_modules", targets},  {"bias", "none"},
      {"fan_in_fan_out", false},    {"inference_mode", true},
      {"init_lora_weights", true},  {"use_dora", false},
      {"modules_to_save", nullptr}, {"layers_to_transform", nullptr},
      {"rank_pattern", nlohmann::json::object()}, {"alpha_pattern", nlohmann::json::object()}};
  io::SafetensorsWriter w(dir + "/adapter_model.safetensors");
  for (const auto& s : layout.slots()) {
    w.declare(LoraLayout::peft_name(s, 'A'), DType::dtype_f32, Shape{spec.rank, s.in});
    w.declare(LoraLayout::peft_name(s, 'B'), DType::dtype_f32, Shape{s.out, spec.rank});
  }
  for (const auto& s : layout.slots()) {
    w.append(params + s.a_offset, static_cast<std::size_t>(spec.rank * s.in) * sizeof(float));
    w.append(params + s.b_offset, static_cast<std::size_t>(spec.rank * s.out) * sizeof(float));
  }
  w.finish();
  io::write_text_file_atomic(dir + "/adapter_config.json", cfg.dump(2) + "\n");
}

}  // namespace anvil::model
