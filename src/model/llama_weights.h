// The frozen base weights of a Llama model as views: straight into the mapped safetensors
// when the file's dtype is the storage dtype, else into one converted copy made at load.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/lora.h"
#include "model/model_spec.h"

namespace anvil::model {

struct LayerWeights {
  TensorView attn_norm;                         // (C)
  std::array<TensorView, kProjCount> proj;      // by Proj, (out, in)
  std::array<TensorView, kProjCount> bias;      // q/k/v biases (Qwen2); empty views otherwise
  TensorView mlp_norm;                          // (C)
};

struct BaseWeights {
  TensorView embed;       // (V, C)
  std::vector<LayerWeights> layers;
  TensorView final_norm;  // (C)
  TensorView lm_head;     // (V, C): the embedding itself when tied
  DType storage = DType::dtype_f32;
  std::int64_t converted_bytes = 0;  // bytes copied because the file dtype differed

  // Keeps the mapping and the converted copy alive.
  std::shared_ptr<void> owner;
};

// Opens DIR's safetensors, checks them against `spec` and returns views in `storage`
// (f32 or bf16). Norm weights and biases are always f32.
BaseWeights base_weights_load(const ModelSpec& spec, const std::string& model_dir,
                              DType storage);

}  // namespace anvil::model
