// llama.cpp's GGUF models in Hugging Face terms, both ways: the ModelSpec from the
// `<arch>.*` metadata (import) and that metadata from a ModelSpec (export), each tensor's
// name in either convention, and the q/k row order of llama-architecture files.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "model/model_spec.h"

namespace anvil::gguf {

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

// The GGUF row of HF row `hf_row` of a q/k projection with `rows` rows over `heads` heads
// (gguf_permuted_heads); `hf_row` itself when heads is 0.
std::int64_t gguf_permuted_row(std::int64_t hf_row, std::int64_t rows, std::int64_t heads);

// The inverse of gguf_tensor_hf_name (and a sparse layer's router → "blk.N.ffn_gate_inp.weight",
// Llama 4's feed_forward.* → ffn_*, its shared expert → ffn_*_shexp); nullopt for a tensor
// llama.cpp's layout of these families does not have.
std::optional<std::string> gguf_tensor_name(const std::string& hf_name);

// llama.cpp stacks a layer's routed experts into one 3-D tensor per projection (ggml dims
// [in, out, E]): "model.layers.3.mlp.experts.5.gate_proj.weight" (Mixtral's
// "block_sparse_moe.experts.5.w1.weight") is expert 5 of "blk.3.ffn_gate_exps.weight".
struct GgufExpertSlice {
  std::string name;  // the stacked GGUF tensor
  std::int64_t expert = 0;
};
std::optional<GgufExpertSlice> gguf_expert_tensor(const model::ModelSpec& spec, const std::string& hf_name);

// llama.cpp's architecture for the model: "llama" (Llama, Mistral, Mixtral), "qwen2", "qwen3",
// "qwen3moe", "llama4". Any other family, a mixture-of-experts layout llama.cpp's architecture
// cannot hold (dense layers between sparse ones, top-k weights not renormalised), or a Llama 4
// that differs from what llama.cpp's llama4 fixes (chunk size, NoPE layers, temperature
// tuning, qk-norm) is a user error naming it.
std::string gguf_architecture(const model::ModelSpec& spec);

// The general.* and `<arch>.*` metadata convert_hf_to_gguf.py writes for the model, in its
// order, up to general.file_type (the caller appends the tokenizer and
// general.quantization_version after it). `name` is general.name.
std::vector<io::GgufKv> gguf_model_metadata(const model::ModelSpec& spec, const std::string& name,
                                            std::uint32_t file_type);

// Llama 3 rope scaling as llama.cpp takes it: the rope_freqs.weight tensor (head_dim / 2
// factors, one per rotary frequency); empty for any other rope.
std::vector<float> gguf_rope_freqs(const model::ModelSpec& spec);

}  // namespace anvil::gguf
