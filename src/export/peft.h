// A PEFT adapter directory: adapter_config.json + adapter_model.safetensors, the format
// `anvil export --format peft` and the end of `anvil train` write, and `anvil generate
// --adapter` reads.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "model/lora.h"
#include "model/model_spec.h"

namespace anvil::exporting {

struct PeftAdapter {
  model::LoraSpec spec;
  std::vector<float> params;  // in the layout of LoraLayout(model spec, spec)
};
// Reads a PEFT adapter for a model of shape `model`; user errors name the file and tensor.
PeftAdapter peft_load(const std::string& dir, const model::ModelSpec& model);
// Writes a PEFT adapter (atomic per file); `base_model` goes into adapter_config.json.
// With a Llama 4 `spec` the routed experts' adapters take PEFT's fused target_parameters
// form (export/peft_llama4.h); without a spec, anvil's per-expert names (which peft_load reads).
// `text_prefix` is where the adapted text model sits in the base ("language_model." in a
// multimodal Llama 4 checkpoint): it goes into every tensor name after "base_model.model.",
// and target_modules becomes a regular expression over that text model only (PEFT's
// fullmatch form), so that PEFT leaves the vision tower's projections of the same names alone.
// Returns the number of tensors written.
std::size_t peft_save(const std::string& dir, const model::LoraLayout& layout, const float* params,
                      const std::string& base_model, const model::ModelSpec* spec = nullptr,
                      const std::string& text_prefix = "");

}  // namespace anvil::exporting
