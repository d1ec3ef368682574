#include "export/peft.h"

#include <algorithm>
#include <array>
#include <filesystem>
#include <string_view>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "export/peft_llama4.h"
#include "io/files.h"
#include "io/safetensors.h"

namespace anvil::exporting {

PeftAdapter peft_load(const std::string& dir, const model::ModelSpec& model) {
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
  PeftAdapter out;
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
  // PEFT matches names as module suffixes: on a mixture-of-experts model "gate_proj" (Mixtral:
  // "w1") adapts the dense MLPs and the experts alike; the tensors in the file say which.
  std::vector<std::string> names;
  std::vector<model::Proj> experts;
  for (const auto& t : targets) {
    ANVIL_CHECK_INPUT(t.is_string(), config_path, ": 'target_modules' must hold strings");
    const std::string name = t.get<std::string>();
    const auto expert = model::expert_proj_from_leaf(model, name);
    if (expert) experts.push_back(*expert);
    if (!expert || model::proj_from_name(name)) names.push_back(name);
  }
  out.spec.targets = model::lora_targets_from_names(names, config_path + ": target_modules");
  for (const model::Proj p : experts) out.spec.targets[static_cast<int>(p)] = true;

  const std::string weights_path = dir + "/adapter_model.safetensors";
  const auto file = io::SafetensorsFile::open(weights_path);
  auto file_has = [&](const model::LoraSlot& s, char which) {
    return file.find(model::LoraLayout::peft_name(s, which)) != nullptr;
  };
  // A name that could mean the dense MLP or the experts adapts what the file holds.
  std::array<bool, model::kProjCount> in_file{};
  const model::LoraLayout candidates(model, out.spec);
  for (const auto& s : candidates.slots())
    if (file_has(s, 'A')) in_file[static_cast<std::size_t>(s.proj)] = true;
  for (const model::Proj dense : {model::Proj::proj_gate, model::Proj::proj_up, model::Proj::proj_down}) {
    const auto d = static_cast<std::size_t>(dense), e = d + 3;  // proj_expert_gate = proj_gate + 3, ...
    if (!out.spec.targets[d] || !out.spec.targets[e]) continue;
    if (!in_file[d]) out.spec.targets[d] = false;
    else if (!in_file[e]) out.spec.targets[e] = false;
  }
  const model::LoraLayout layout(model, out.spec);
  out.params.assign(static_cast<std::size_t>(layout.size()), 0.0f);
  std::size_t matched = 0;
  for (const auto& s : layout.slots()) {
    for (char which : {'A', 'B'}) {
      const std::string name = model::LoraLayout::peft_name(s, which);
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

std::size_t peft_save(const std::string& dir, const model::LoraLayout& layout, const float* params,
                      const std::string& base_model, const model::ModelSpec* model, const std::string& text_prefix) {
  std::filesystem::create_directories(dir);
  const model::LoraSpec& spec = layout.spec();
  const bool fused = model != nullptr && model->is_llama4();
  auto per_slot = [&](const model::LoraSlot& s) { return !fused || s.expert < 0; };
  // The HF leaf names of the adapted modules ("q_proj", ..., an expert's "gate_proj" or "w1").
  nlohmann::json targets = nlohmann::json::array();
  for (const auto& s : layout.slots()) {
    if (!per_slot(s)) continue;
    const std::string leaf = s.module.substr(s.module.rfind('.') + 1);
    if (std::find(targets.begin(), targets.end(), leaf) == targets.end()) targets.push_back(leaf);
  }
  // "base_model.model.X" → "base_model.model.<text_prefix>X"
  static constexpr std::string_view kRoot = "base_model.model.";
  const auto named = [&](const std::string& name) {
    return str_cat(kRoot, text_prefix, std::string_view(name).substr(kRoot.size()));
  };
  if (!text_prefix.empty()) {
    std::string any;
    for (const auto& leaf : targets) any += str_cat(any.empty() ? "" : "|", leaf.get<std::string>());
    std::string escaped;
    for (const char c : text_prefix) escaped += c == '.' ? std::string("\\.") : std::string(1, c);
    targets = str_cat(escaped, ".*\\.(", any, ")");
  }
  nlohmann::json cfg = {
      {"peft_type", "LORA"},        {"task_type", "CAUSAL_LM"},
      {"base_model_name_or_path", base_model},
      {"r", spec.rank},             {"lora_alpha", spec.alpha},
      {"lora_dropout", spec.dropout}, {"use_rslora", spec.rslora},
      {"target_modules", targets},  {"bias", "none"},
      {"fan_in_fan_out", false},    {"inference_mode", true},
      {"init_lora_weights", true},  {"use_dora", false},
      {"modules_to_save", nullptr}, {"layers_to_transform", nullptr},
      {"rank_pattern", nlohmann::json::object()}, {"alpha_pattern", nlohmann::json::object()}};
  const std::vector<FusedLora> experts = fused ? peft_llama4_experts(*model, layout, params) : std::vector<FusedLora>{};
  if (fused) {
    cfg["target_parameters"] = peft_llama4_target_parameters(layout);
    for (const auto& p : cfg["target_parameters"])
      if (p == "feed_forward.experts.gate_up_proj") {  // gate and up side by side: rank 2r, the same scale
        cfg["rank_pattern"]["gate_up_proj"] = 2 * spec.rank;
        cfg["alpha_pattern"]["gate_up_proj"] = 2 * spec.alpha;
      }
  }
  io::SafetensorsWriter w(dir + "/adapter_model.safetensors");
  for (const auto& s : layout.slots()) {
    if (!per_slot(s)) continue;
    w.declare(named(model::LoraLayout::peft_name(s, 'A')), DType::dtype_f32, Shape{spec.rank, s.in});
    w.declare(named(model::LoraLayout::peft_name(s, 'B')), DType::dtype_f32, Shape{s.out, spec.rank});
  }
  for (const auto& t : experts) w.declare(named(t.name), DType::dtype_f32, t.shape);
  for (const auto& s : layout.slots()) {
    if (!per_slot(s)) continue;
    w.append(params + s.a_offset, static_cast<std::size_t>(spec.rank * s.in) * sizeof(float));
    w.append(params + s.b_offset, static_cast<std::size_t>(spec.rank * s.out) * sizeof(float));
  }
  for (const auto& t : experts) w.append(t.values.data(), t.values.size() * sizeof(float));
  w.finish();
  io::write_text_file_atomic(dir + "/adapter_config.json", cfg.dump(2) + "\n");
  std::size_t written = experts.size();
  for (const auto& s : layout.slots()) written += per_slot(s) ? 2 : 0;
  return written;
}

}  // namespace anvil::exporting
