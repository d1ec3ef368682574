// The byte-level pre-tokenizers anvil carries between llama.cpp and Hugging Face: each
// tokenizer.ggml.pre name llama.cpp gives one, and the tokenizer.json pre_tokenizer that
// splits text the same way. `anvil import` builds tokenizer.json from the name; the GGUF
// export finds the name from tokenizer.json. One table, so the two stay inverses.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace anvil::data {

// The names, in the order llama_cpp_pre_name prefers them, for messages.
const char* hf_pre_tokenizer_names();

// The HF pre_tokenizer of a tokenizer.ggml.pre name; null for a name anvil does not know.
// "gpt2" (what anvil import has always accepted) is read as llama.cpp's "gpt-2".
nlohmann::json hf_pre_tokenizer(std::string_view llama_cpp_pre);

// The tokenizer.ggml.pre name of an HF pre_tokenizer; empty when none matches. Fields that
// change only offsets (ByteLevel's trim_offsets) are not compared.
std::string llama_cpp_pre_name(const nlohmann::json& pre_tokenizer);

}  // namespace anvil::data
