// Random initialisation of a model, written as Hugging Face files (config.json,
// generation_config.json, safetensors shards), one tensor at a time.
#pragma once

#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "model/model_spec.h"

namespace anvil::model {

struct InitOptions {
  std::uint64_t seed = 0;
  DType dtype = DType::dtype_f32;
  std::uint64_t max_shard_bytes = 5'000'000'000ull;  // HF's default "5GB"
};

// Writes the model files into `dir` (which must exist). Weights: N(0, initializer_range) for linear
// layers and embeddings (HF's initializer_range), ones for norms, zeros for biases. Each
// value depends only on (seed, tensor name, element index), not on write order or sharding.
void model_init_write(const ModelSpec& spec, const std::string& dir, const InitOptions& options);

// Bytes of the weights in `dtype`.
std::uint64_t model_weight_bytes(const ModelSpec& spec, DType dtype);

}  // namespace anvil::model
