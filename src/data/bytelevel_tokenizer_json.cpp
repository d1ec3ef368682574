#include "data/bytelevel_tokenizer_json.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/chat_template.h"

namespace anvil::data {

namespace {
using json = nlohmann::json;

// GPT-2's byte-to-unicode map: printable Latin-1 bytes stand for themselves, the other 68
// bytes (controls, space, DEL, NBSP, soft hyphen) take U+0100 onwards in byte order, so
// every byte is a visible character. Returns the 256 symbols, UTF-8 encoded, by byte.
std::vector<std::string> byte_symbols() {
  std::vector<std::string> symbols(256);
  int next_shifted = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    const int cp = printable ? b : next_shifted++;
    std::string& s = symbols[b];  // cp < 0x800: one or two UTF-8 bytes
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  return symbols;
}

json special(std::int64_t id, const char* content) {
  return {{"id", id},         {"content", content}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false},  {"normalized", false}, {"special", true}};
}

void write_json(const std::string& path, const json& j) {
  std::ofstream out(path, std::ios::binary);
  out << j.dump(2) << "\n";
  out.close();
  ANVIL_CHECK_INPUT(out.good(), path, ": write failed");
}
}  // namespace

ByteLevelTokenizerIds write_bytelevel_tokenizer(const std::string& dir, std::int64_t model_max_length) {
  const ByteLevelTokenizerIds ids;
  json vocab = json::object();
  const auto symbols = byte_symbols();
  for (int b = 0; b < 256; ++b) vocab[symbols[b]] = b;
  const json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  json tok;
  tok["version"] = "1.0";
  tok["truncation"] = nullptr;
  tok["padding"] = nullptr;
  tok["added_tokens"] = {special(ids.bos, "<|begin_of_text|>"), special(ids.eos, "<|end_of_text|>"),
                         special(ids.pad, "<|pad|>"), special(ids.start_header, "<|start_header_id|>"),
                         special(ids.end_header, "<|end_header_id|>"), special(ids.eot, "<|eot_id|>")};
  tok["normalizer"] = nullptr;
  tok["pre_tokenizer"] = byte_level;
  // Llama-3 style: BOS in front of every encoded text.
  tok["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", {{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"pair",
       {{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
        {{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 1}}}},
        {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
      {"special_tokens",
       {{"<|begin_of_text|>", {{"id", "<|begin_of_text|>"}, {"ids", {ids.bos}}, {"tokens", {"<|begin_of_text|>"}}}}}}};
  tok["decoder"] = byte_level;
  tok["model"] = {{"type", "BPE"},         {"dropout", nullptr}, {"unk_token", nullptr},
                  {"continuing_subword_prefix", nullptr},       {"end_of_word_suffix", nullptr},
                  {"fuse_unk", false},     {"byte_fallback", false}, {"ignore_merges", false},
                  {"vocab", vocab},        {"merges", json::array()}};
  write_json(dir + "/tokenizer.json", tok);
  write_json(dir + "/tokenizer_config.json",
             {{"bos_token", "<|begin_of_text|>"}, {"eos_token", "<|end_of_text|>"}, {"pad_token", "<|pad|>"},
              {"add_bos_token", true}, {"add_eos_token", false}, {"clean_up_tokenization_spaces", false},
              {"model_max_length", model_max_length}, {"tokenizer_class", "PreTrainedTokenizerFast"},
              {"chat_template", chat_template_jinja(ChatTemplate::chat_llama3)}});
  write_json(dir + "/special_tokens_map.json",
             {{"bos_token", "<|begin_of_text|>"}, {"eos_token", "<|end_of_text|>"}, {"pad_token", "<|pad|>"}});
  return ids;
}

}  // namespace anvil::data
