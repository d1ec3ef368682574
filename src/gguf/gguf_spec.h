// What a llama.cpp GGUF file says about its model, in Hugging Face terms: the ModelSpec
// from the `<arch>.*` metadata, and each GGUF tensor's HF name.
#pragma once

#include <optional>
#include <string>

#include "io/gguf.h"
#include "model/model_spec.h"

namespace anvil::importing {

// config.json's fields from the metadata of a `llama` or `qwen2` file (other architectures
// are refused by name): sizes, heads, kv heads, rope theta and scaling (linear from the
// metadata, Llama 3's recovered from the rope_freqs.weight tensor), rms eps,
// context length, vocabulary (from the token list), bos/eos, and tied embeddings when the
// file has no output.weight. Missing or mistyped keys are user errors naming them.
model::ModelSpec gguf_model_spec(const io::GgufFile& g);

// "blk.3.attn_q.weight" → "model.layers.3.self_attn.q_proj.weight", "token_embd.weight" →
// "model.embed_tokens.weight", ...; nullopt for a name llama.cpp's llama/qwen2 layout does
// not have.
std::optional<std::string> gguf_tensor_hf_name(const std::string& gguf_name);

// llama.cpp's converter interleaves the two rotary halves of each head of q_proj and
// k_proj in llama-architecture files (row h·d + 2j + s holds HF row h·d + s·d/2 + j, d the
// head dim). For an HF tensor name: the number of heads whose rows to put back, or 0 when
// the tensor is stored as HF has it.
std::int64_t gguf_permuted_heads(const model::ModelSpec& spec, const std::string& hf_name);

}  // namespace anvil::importing
