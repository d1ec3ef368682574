// A byte-level BPE tokenizer.json (Hugging Face `tokenizers` format) for generated models:
// the 256 byte symbols of the GPT-2 byte-to-unicode map as ids 0..255, then the special
// tokens (BOS, EOS, pad and the three of the Llama-3 chat template, which
// tokenizer_config.json carries). No merges: every byte is a token. Real models bring
// their own tokenizer.json.
#pragma once

#include <cstdint>
#include <string>

namespace anvil::data {

struct ByteLevelTokenizerIds {
  std::int64_t bos = 256;  // <|begin_of_text|>
  std::int64_t eos = 257;  // <|end_of_text|>
  std::int64_t pad = 258;  // <|pad|>
  std::int64_t start_header = 259;  // <|start_header_id|>
  std::int64_t end_header = 260;    // <|end_header_id|>
  std::int64_t eot = 261;           // <|eot_id|>
};

inline constexpr std::int64_t kByteLevelTokenizerSize = 262;

// Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json into `dir`.
ByteLevelTokenizerIds write_bytelevel_tokenizer(const std::string& dir, std::int64_t model_max_length);

}  // namespace anvil::data
