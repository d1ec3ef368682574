// The tokenizer of a Hugging Face model directory as llama.cpp's GGUF metadata (the
// tokenizer.* keys), written as llama.cpp's convert_hf_to_gguf.py writes them, so that
// llama.cpp and Ollama tokenize as tokenizer.json does. The inverse of
// import/gguf_tokenizer.h:
//   - byte-level BPE (no byte fallback): tokenizer.ggml.model "gpt2", the pre-tokenizer's
//     llama.cpp name (data/hf_pre_tokenizers.h), tokens, token types and merges;
//   - SentencePiece-style BPE (byte fallback behind Metaspace, or behind the legacy
//     Prepend/Replace normalizer): "llama", tokens, scores and token types; the scores rank
//     tokens in the order tokenizer.json's merges make them, which is how llama.cpp's
//     SentencePiece tokenizer picks its merges.
// Then bos/eos/unk/sep/pad ids, add_bos/add_eos/add_sep and the chat template, found in
// tokenizer_config.json, the post-processor and config.json as gguf-py's SpecialVocab finds
// them.
#pragma once

#include <string>
#include <vector>

#include "io/gguf_writer.h"

namespace anvil::exporting {

using io::GgufKv;

// The tokenizer.* metadata of the model directory `dir`, in convert_hf_to_gguf.py's key
// order. A user error naming the file and what is unsupported for anything llama.cpp could
// not load as we would write it (another model type, pre-tokenizer, normalizer or
// post-processor; malformed files).
std::vector<GgufKv> gguf_tokenizer_metadata(const std::string& dir);

}  // namespace anvil::exporting
