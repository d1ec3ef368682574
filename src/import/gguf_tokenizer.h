// The tokenizer of a GGUF file as Hugging Face files: tokenizer.json and
// tokenizer_config.json (bos/eos/unk/pad, add_bos_token, chat_template). A "gpt2" file is
// byte-level BPE from tokenizer.ggml.tokens / merges / token_type with the pre-tokenizer
// named by tokenizer.ggml.pre; a SentencePiece-style "llama" file is BPE with byte
// fallback behind a Metaspace pre-tokenizer, its merges derived from tokenizer.ggml.scores
// when the file has none, as transformers' GGUF loader builds it.
#pragma once

#include <string>

#include "io/gguf.h"

namespace anvil::importing {

// Throws a user error naming the key when the file's tokenizer cannot be written:
// tokenizer.ggml.model other than "gpt2" and "llama", a "gpt2" pre-tokenizer other than
// llama-bpe, smollm, qwen2 or gpt2, or malformed lists (scores included).
// Called before anything is written.
void gguf_tokenizer_check(const io::GgufFile& g);

// Writes DIR/tokenizer.json and DIR/tokenizer_config.json.
void gguf_tokenizer_write(const io::GgufFile& g, const std::string& dir, std::int64_t model_max_length);

}  // namespace anvil::importing
