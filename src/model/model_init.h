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
  // Norm weights 1 + N(0, norm_std) instead of ones (0): tests that must see whether a norm's
  // weights are applied, and where (a per-head qk-norm commutes with RoPE only at ones).
  double norm_std = 0.0;
};

// Writes the model files into `dir` (which must exist). Weights: N(0, initializer_range) for linear
// layers and embeddings (HF's initializer_range), ones for norms (or 1 + N(0, norm_std)),
// zeros for biases. Each
// value depends only on (seed, tensor name, element index), not on write order or sharding.
void model_init_write(const ModelSpec& spec, const std::string& dir, const InitOptions& options);

// config.json (torch_dtype from `dtype`) and generation_config.json (greedy; the spec's
// bos/eos ids) into `dir`.
void model_config_write(const ModelSpec& spec, DType dtype, const std::string& dir);

// Bytes of the weights in `dtype`.
std::uint64_t model_weight_bytes(const ModelSpec& spec, DType dtype);

}  // namespace anvil::model
