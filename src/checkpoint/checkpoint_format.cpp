#include "checkpoint/checkpoint_format.h"

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace anvil::checkpoint {

const char* group_name(Group g) {
  switch (g) {
    case Group::group_adapter: return "adapter";
    case Group::group_adam_m: return "adam_m";
    case Group::group_adam_v: return "adam_v";
  }
  ANVIL_CHECK(false, "bad checkpoint group");
  return "";
}

std::string stack_name(Group g, model::Proj p, char which) {
  return str_cat(group_name(g), "/", model::proj_module(p), ".", model::proj_name(p), ".lora_", which);
}

std::string stack_name(Group g, model::Proj p, char which, bool shared_expert) {
  if (!shared_expert) return stack_name(g, p, which);
  return str_cat(group_name(g), "/", model::proj_module(p), ".shared_expert.", model::proj_name(p), ".lora_", which);
}

std::string lora_spec_to_json(const model::LoraSpec& spec) {
  nlohmann::json j;
  j["r"] = spec.rank;
  j["alpha"] = spec.alpha;
  j["dropout"] = spec.dropout;
  j["rslora"] = spec.rslora;
  j["targets"] = nlohmann::json::array();
  for (int p = 0; p < model::kProjCount; ++p)
    if (spec.targets[p]) j["targets"].push_back(model::proj_name(static_cast<model::Proj>(p)));
  return j.dump();
}

model::LoraSpec lora_spec_from_json(const std::string& text, const std::string& what) {
  const auto j = nlohmann::json::parse(text, nullptr, false);
  ANVIL_CHECK_INPUT(j.is_object() && j.contains("r") && j["r"].is_number_integer() && j.contains("alpha") &&
                        j["alpha"].is_number() && j.contains("dropout") && j["dropout"].is_number() &&
                        j.contains("rslora") && j["rslora"].is_boolean() && j.contains("targets") &&
                        j["targets"].is_array(),
                    what, ": not a LoRA spec: ", text);
  model::LoraSpec s;
  s.rank = j["r"].get<int>();
  s.alpha = j["alpha"].get<double>();
  s.dropout = j["dropout"].get<double>();
  s.rslora = j["rslora"].get<bool>();
  std::vector<std::string> names;
  for (const auto& t : j["targets"]) {
    ANVIL_CHECK_INPUT(t.is_string(), what, ": a target is not a name");
    names.push_back(t.get<std::string>());
  }
  s.targets = model::lora_targets_from_names(names, what);
  ANVIL_CHECK_INPUT(s.rank > 0 && s.targets_any(), what, ": rank or targets missing");
  return s;
}

}  // namespace anvil::checkpoint
