// A byte-level BPE tokenizer.json (Hugging Face `tokenizers` format) for generated models:
// the 256 byte symbols of the GPT-2 byte-to-unicode map as ids 0..255, then the special
// tokens. No merges: every byte is a token. Real models bring their own tokenizer.json.
#pragma once

#include <cstdint>
#include <string>

namespace anvil::data {

struct ByteLevelTokenizerIds {
  std::int64_t bos = 256;  // <|begin_of_text|>
  std::int64_t eos = 257;  // <|end_of_text|>
  std::int64_t pad = 258;  // <|pad|>
};

inline constexpr std::int64_t kByteLevelTokenizerSize = 259;

// Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json into `dir`.
ByteLevelTokenizerIds write_bytelevel_tokenizer(const std::string& dir, std::int64_t model_max_length);

}  // namespace anvil::data
