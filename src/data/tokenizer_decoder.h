// The decoders of SentencePiece-style tokenizers (Llama-2, Mistral): Hugging Face applies a
// chain of them to the list of token strings, each step seeing the previous one's list.
// (Byte-level tokenizers decode each token on its own; that is tokenizer.cpp's fast path.)
#pragma once

#include <string>
#include <vector>

namespace anvil::data {

enum class DecodeStepKind {
  decode_replace,        // each token: the literal `pattern` -> `content`
  decode_byte_fallback,  // runs of <0xNN> tokens -> their bytes (U+FFFD each if not UTF-8)
  decode_fuse,           // all tokens -> one
  decode_strip,          // each token: up to `start` leading, `stop` trailing `content`s off
  decode_metaspace,      // each token: `pattern` -> ' ', except in the first token, where
                         // it is dropped when `prepend` (prepend_scheme not "never")
};

struct DecodeStep {
  DecodeStepKind kind = DecodeStepKind::decode_fuse;
  std::string pattern;
  std::string content;
  std::size_t start = 0;
  std::size_t stop = 0;
  bool prepend = true;
};

// Applies the chain to `tokens` in place.
void decode_chain(const std::vector<DecodeStep>& steps, std::vector<std::string>& tokens);

}  // namespace anvil::data
