// GGUF tokenizer metadata → tokenizer.json / tokenizer_config.json, laid out as Hugging
// Face's own byte-level BPE tokenizers of the same families are.
#include "import/gguf_tokenizer.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/files.h"

namespace anvil::importing {

namespace {

using json = nlohmann::json;

// llama.cpp's token types (llama_token_type): control tokens are HF's special added
// tokens, user-defined ones its non-special added tokens.
constexpr std::uint64_t kTokenControl = 3;
constexpr std::uint64_t kTokenUserDefined = 4;

// The split regexes of the Llama-3 and Qwen2 tokenizers (they differ only in how many
// digits one piece takes).
constexpr const char* kLlama3Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kQwen2Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

json byte_level(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

json split_then_bytes(const char* pattern) {
  return {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"}, {"invert", false}},
            byte_level(false)}}};
}

// tokenizer.ggml.pre → HF pre_tokenizer; null for a name anvil does not know.
json pre_tokenizer(const std::string& pre) {
  if (pre == "gpt2") return byte_level(true);
  if (pre == "llama-bpe") return split_then_bytes(kLlama3Pattern);
  if (pre == "qwen2") return split_then_bytes(kQwen2Pattern);
  if (pre == "smollm")
    return {{"type", "Sequence"},
            {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, byte_level(true)}}};
  return nullptr;
}

std::string pre_name(const io::GgufFile& g) {
  return g.find("tokenizer.ggml.pre") ? g.get_string("tokenizer.ggml.pre") : "gpt2";
}

bool flag(const io::GgufFile& g, const std::string& key, bool fallback) {
  const io::GgufValue* v = g.find(key);
  return v == nullptr ? fallback : v->type == io::GgufValueType::gguf_bool && v->u == 1;
}

const std::string& token_at(const io::GgufFile& g, const std::vector<io::GgufValue>& tokens,
                            const std::string& key) {
  const std::uint64_t id = g.get_u64(key);
  ANVIL_CHECK_INPUT(id < tokens.size(), g.path(), ": ", key, " ", id, " is not a token id (", tokens.size(),
                    " tokens)");
  return tokens[id].s;
}

json bpe_model(const io::GgufFile& g, const std::vector<io::GgufValue>& tokens) {
  json vocab = json::object();
  for (std::size_t i = 0; i < tokens.size(); ++i) vocab[tokens[i].s] = i;
  json merges = json::array();
  if (g.find("tokenizer.ggml.merges"))
    for (const io::GgufValue& m : g.get_array("tokenizer.ggml.merges")) merges.push_back(m.s);
  return {{"type", "BPE"},          {"dropout", nullptr},        {"unk_token", nullptr},
          {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr}, {"fuse_unk", false},
          {"byte_fallback", false}, {"ignore_merges", pre_name(g) == "llama-bpe"}, {"vocab", std::move(vocab)},
          {"merges", std::move(merges)}};
}

json added_tokens(const io::GgufFile& g, const std::vector<io::GgufValue>& tokens) {
  json added = json::array();
  if (!g.find("tokenizer.ggml.token_type")) return added;
  const auto& types = g.get_array("tokenizer.ggml.token_type");
  for (std::size_t i = 0; i < types.size(); ++i) {
    const std::uint64_t t = types[i].u + static_cast<std::uint64_t>(types[i].i);
    if (t != kTokenControl && t != kTokenUserDefined) continue;
    added.push_back({{"id", i}, {"content", tokens[i].s}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", t == kTokenControl}});
  }
  return added;
}

// BOS before every sequence when the file asks for it, else GPT-2's plain byte-level one.
json post_processor(const io::GgufFile& g, const std::vector<io::GgufValue>& tokens) {
  if (!flag(g, "tokenizer.ggml.add_bos_token", false))
    return {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}};
  const std::string& bos = token_at(g, tokens, "tokenizer.ggml.bos_token_id");
  const json special = {{"SpecialToken", {{"id", bos}, {"type_id", 0}}}};
  return {{"type", "TemplateProcessing"},
          {"single", {special, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
          {"pair", {special, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, special,
                    {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
          {"special_tokens", {{bos, {{"id", bos}, {"ids", {g.get_u64("tokenizer.ggml.bos_token_id")}},
                                     {"tokens", {bos}}}}}}};
}

json tokenizer_config(const io::GgufFile& g, const std::vector<io::GgufValue>& tokens, std::int64_t max_length) {
  json c = {{"tokenizer_class", "PreTrainedTokenizerFast"},
            {"clean_up_tokenization_spaces", false},
            {"model_max_length", max_length},
            {"add_bos_token", flag(g, "tokenizer.ggml.add_bos_token", false)},
            {"add_eos_token", flag(g, "tokenizer.ggml.add_eos_token", false)}};
  for (const auto& [key, name] : {std::pair{"tokenizer.ggml.bos_token_id", "bos_token"},
                                  std::pair{"tokenizer.ggml.eos_token_id", "eos_token"},
                                  std::pair{"tokenizer.ggml.padding_token_id", "pad_token"},
                                  std::pair{"tokenizer.ggml.unknown_token_id", "unk_token"}})
    if (g.find(key)) c[name] = token_at(g, tokens, key);
  if (g.find("tokenizer.chat_template")) c["chat_template"] = g.get_string("tokenizer.chat_template");
  return c;
}

}  // namespace

void gguf_tokenizer_check(const io::GgufFile& g) {
  const std::string& model = g.get_string("tokenizer.ggml.model");
  ANVIL_CHECK_INPUT(model == "gpt2", g.path(), ": tokenizer.ggml.model '", model,
                    "' is not supported by anvil import (gpt2, byte-level BPE, is; SentencePiece-style "
                    "'llama' is not yet)");
  const std::string pre = pre_name(g);
  ANVIL_CHECK_INPUT(!pre_tokenizer(pre).is_null(), g.path(), ": tokenizer.ggml.pre '", pre,
                    "' is not supported by anvil import (llama-bpe, smollm, qwen2 and gpt2 are)");
  const auto& tokens = g.get_array("tokenizer.ggml.tokens");
  for (const io::GgufValue& t : tokens)
    ANVIL_CHECK_INPUT(t.type == io::GgufValueType::gguf_string, g.path(),
                      ": tokenizer.ggml.tokens must be a list of strings");
  if (g.find("tokenizer.ggml.token_type"))
    ANVIL_CHECK_INPUT(g.get_array("tokenizer.ggml.token_type").size() == tokens.size(), g.path(),
                      ": tokenizer.ggml.token_type has ", g.get_array("tokenizer.ggml.token_type").size(),
                      " entries for ", tokens.size(), " tokens");
  if (g.find("tokenizer.ggml.merges"))
    for (const io::GgufValue& m : g.get_array("tokenizer.ggml.merges"))
      ANVIL_CHECK_INPUT(m.type == io::GgufValueType::gguf_string && m.s.find(' ') != std::string::npos, g.path(),
                        ": tokenizer.ggml.merges must be strings 'left right'");
}

void gguf_tokenizer_write(const io::GgufFile& g, const std::string& dir, std::int64_t model_max_length) {
  gguf_tokenizer_check(g);
  const auto& tokens = g.get_array("tokenizer.ggml.tokens");
  const json tok = {{"version", "1.0"},
                    {"truncation", nullptr},
                    {"padding", nullptr},
                    {"added_tokens", added_tokens(g, tokens)},
                    {"normalizer", nullptr},
                    {"pre_tokenizer", pre_tokenizer(pre_name(g))},
                    {"post_processor", post_processor(g, tokens)},
                    {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true},
                                 {"use_regex", true}}},
                    {"model", bpe_model(g, tokens)}};
  io::write_text_file_atomic(dir + "/tokenizer.json", tok.dump(2) + "\n");
  io::write_text_file_atomic(dir + "/tokenizer_config.json",
                             tokenizer_config(g, tokens, model_max_length).dump(2) + "\n");
}

}  // namespace anvil::importing
