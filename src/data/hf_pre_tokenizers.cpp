// llama.cpp pre-tokenizer names ↔ Hugging Face pre_tokenizer objects, laid out as the HF
// tokenizers of each family are (Llama 3, Qwen2, SmolLM2, GPT-2).
#include "data/hf_pre_tokenizers.h"

namespace anvil::data {

namespace {

using json = nlohmann::json;

// The split regexes of the Llama-3 and Qwen2 tokenizers (they differ only in how many
// digits one piece takes).
constexpr const char* kLlama3Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kQwen2Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// Llama 4's (GPT-4o's o200k split, which transformers' Llama 4 converter writes into
// tokenizer.json): cased words keep a leading capital run with their lower-case tail,
// combining marks stay with their letters, "/" and newlines follow punctuation.
constexpr const char* kLlama4Pattern =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*"
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// llama.cpp's names, each family once, in the order a match is looked for.
constexpr const char* kNames[] = {"llama-bpe", "qwen2", "smollm", "gpt-2", "llama4"};

json byte_level(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

json split_then_bytes(const char* pattern) {
  return {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"}, {"invert", false}},
            byte_level(false)}}};
}

// `j` without the fields that do not change which tokens come out.
json without_offsets(json j) {
  if (j.is_object()) {
    j.erase("trim_offsets");
    for (auto& [key, value] : j.items()) value = without_offsets(value);
  } else if (j.is_array()) {
    for (auto& value : j) value = without_offsets(value);
  }
  return j;
}

}  // namespace

const char* hf_pre_tokenizer_names() { return "llama-bpe, qwen2, smollm, gpt-2 and llama4"; }

json hf_pre_tokenizer(std::string_view pre) {
  if (pre == "gpt-2" || pre == "gpt2") return byte_level(true);
  if (pre == "llama-bpe") return split_then_bytes(kLlama3Pattern);
  if (pre == "qwen2") return split_then_bytes(kQwen2Pattern);
  // llama.cpp splits "gpt-4o" and "llama4" alike; a match is named "llama4".
  if (pre == "llama4" || pre == "gpt-4o") return split_then_bytes(kLlama4Pattern);
  if (pre == "smollm")
    return {{"type", "Sequence"},
            {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, byte_level(true)}}};
  return nullptr;
}

std::string llama_cpp_pre_name(const json& pre_tokenizer) {
  const json wanted = without_offsets(pre_tokenizer);
  for (const char* name : kNames)
    if (without_offsets(hf_pre_tokenizer(name)) == wanted) return name;
  return "";
}

}  // namespace anvil::data
