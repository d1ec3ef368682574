// anvil import: a llama.cpp GGUF file as a Hugging Face model directory (config.json,
// generation_config.json, safetensors shards with HF tensor names, and tokenizer.json +
// tokenizer_config.json when the file has a tokenizer).
#pragma once

#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "model/model_spec.h"

namespace anvil::importing {

struct ImportOptions {
  DType dtype = DType::dtype_f32;  // f32, bf16 or f16
  bool force = false;              // replace an existing model directory
  std::uint64_t max_shard_bytes = 5'000'000'000ull;
};

// Converts `gguf_path` into the directory `out`. Everything is checked before anything
// is written (architecture, tensor names and shapes, supported quant types); the
// directory is staged and appears whole by one rename, so an error leaves nothing behind.
// Tensors are dequantized one at a time: memory stays near one tensor in f32.
// The model is written as transformers reads it even where anvil cannot train it yet
// (Qwen2's q/k/v biases: generate uses them, train refuses them with its own message).
// Returns the spec it wrote.
model::ModelSpec gguf_import(const std::string& gguf_path, const std::string& out, const ImportOptions& options);

}  // namespace anvil::importing
