// GGUF tokenizer metadata → tokenizer.json / tokenizer_config.json, laid out as Hugging
// Face's own tokenizers of the same families are: byte-level BPE for "gpt2" files, and for
// SentencePiece-style "llama" files what transformers' GGUF loader builds (its
// LlamaTokenizer: BPE with byte fallback behind a Metaspace pre-tokenizer).
#include "import/gguf_tokenizer.h"

#include <algorithm>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/hf_pre_tokenizers.h"
#include "data/tokenizer_utf8.h"
#include "io/files.h"

namespace anvil::importing {

namespace {

using json = nlohmann::json;

// llama.cpp's token types (llama_token_type): control tokens are HF's special added
// tokens, user-defined ones its non-special added tokens.
constexpr std::uint64_t kTokenControl = 3;
constexpr std::uint64_t kTokenUserDefined = 4;

// The bos/eos/unk/pad ids a file may name: transformers makes each a special token.
constexpr const char* kSpecialIdKeys[] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                                          "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id"};

bool is_sentencepiece(const io::GgufFile& g) { return g.get_string("tokenizer.ggml.model") == "llama"; }

std::string pre_name(const io::GgufFile& g) {
  return g.find("tokenizer.ggml.pre") ? g.get_string("tokenizer.ggml.pre") : "gpt2";
}

bool flag(const io::GgufFile& g, const std::string& key, bool fallback) {
  const io::GgufValue* v = g.find(key);
  return v == nullptr ? fallback : v->type == io::GgufValueType::gguf_bool && v->u == 1;
}

// llama.cpp adds BOS to a SentencePiece vocabulary whose file does not say otherwise, and
// transformers' GGUF loader follows it; byte-level files add it only when asked.
bool add_bos(const io::GgufFile& g) { return flag(g, "tokenizer.ggml.add_bos_token", is_sentencepiece(g)); }

const std::string& token_at(const io::GgufFile& g, const std::vector<io::GgufValue>& tokens,
                            const std::string& key) {
  const std::uint64_t id = g.get_u64(key);
  ANVIL_CHECK_INPUT(id < tokens.size(), g.path(), ": ", key, " ", id, " is not a token id (", tokens.size(),
                    " tokens)");
  return tokens[id].s;
}

// The merges a SentencePiece vocabulary implies, as transformers derives them
// (generate_merges with the scores): every split of a token into two tokens, at a code
// point boundary, is a merge ranked by the whole token's score; higher scores first, ties
// broken by the longer left piece, then the longer right piece, then the order they were
// found in (tokens in file order, a token's splits by the ids of their pieces).
json sentencepiece_merges(const io::GgufFile& g, const std::vector<io::GgufValue>& tokens) {
  const auto& scores = g.get_array("tokenizer.ggml.scores");
  std::unordered_map<std::string_view, std::size_t> id;  // a repeated token: its last id
  for (std::size_t i = 0; i < tokens.size(); ++i) id[tokens[i].s] = i;
  struct Merge {
    std::size_t left_id, right_id, left_len, right_len;  // lengths in code points
    double score;
  };
  std::vector<Merge> merges;
  std::vector<Merge> local;
  std::unordered_set<std::string_view> seen;
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    const std::string& t = tokens[i].s;
    if (!seen.insert(t).second) continue;  // a repeated token: split once, with its last score
    const double score = scores[id[t]].f;
    const std::size_t length = std::count_if(t.begin(), t.end(), [](char c) { return (c & 0xC0) != 0x80; });
    local.clear();
    std::size_t left_len = 0;
    for (std::size_t b = 1; b < t.size(); ++b) {
      if ((t[b] & 0xC0) == 0x80) continue;  // inside a code point
      ++left_len;
      const auto l = id.find(std::string_view(t).substr(0, b));
      const auto r = id.find(std::string_view(t).substr(b));
      if (l != id.end() && r != id.end()) local.push_back({l->second, r->second, left_len, length - left_len, score});
    }
    std::sort(local.begin(), local.end(), [](const Merge& a, const Merge& b) {
      return std::pair(a.left_id, a.right_id) < std::pair(b.left_id, b.right_id);
    });
    merges.insert(merges.end(), local.begin(), local.end());
  }
  std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) {
    return std::tuple(a.score, a.left_len, a.right_len) > std::tuple(b.score, b.left_len, b.right_len);
  });
  json out = json::array();
  for (const Merge& m : merges) out.push_back({tokens[m.left_id].s, tokens[m.right_id].s});
  return out;
}

json bpe_model(const io::GgufFile& g, const std::vector<io::GgufValue>& tokens) {
  json vocab = json::object();
  for (std::size_t i = 0; i < tokens.size(); ++i) vocab[tokens[i].s] = i;
  json merges = json::array();
  const bool sentencepiece = is_sentencepiece(g);
  if (g.find("tokenizer.ggml.merges")) {
    for (const io::GgufValue& m : g.get_array("tokenizer.ggml.merges")) merges.push_back(m.s);
  } else if (sentencepiece) {
    merges = sentencepiece_merges(g, tokens);
  }
  // A SentencePiece vocabulary spells every byte as <0xNN>, so nothing falls to unk.
  json unk = nullptr;
  if (sentencepiece && g.find("tokenizer.ggml.unknown_token_id"))
    unk = token_at(g, tokens, "tokenizer.ggml.unknown_token_id");
  return {{"type", "BPE"},
          {"dropout", nullptr},
          {"unk_token", std::move(unk)},
          {"continuing_subword_prefix", nullptr},
          {"end_of_word_suffix", nullptr},
          {"fuse_unk", sentencepiece},
          {"byte_fallback", sentencepiece},
          {"ignore_merges", pre_name(g) == "llama-bpe"},
          {"vocab", std::move(vocab)},
          {"merges", std::move(merges)}};
}

// Control tokens are HF's special added tokens, user-defined ones its non-special added
// tokens; in a SentencePiece file the bos/eos/unk/pad tokens are special too, as
// transformers makes them (its unk token has llama.cpp's own type, not control).
json added_tokens(const io::GgufFile& g, const std::vector<io::GgufValue>& tokens) {
  std::vector<bool> special(tokens.size(), false), plain(tokens.size(), false);
  if (g.find("tokenizer.ggml.token_type")) {
    const auto& types = g.get_array("tokenizer.ggml.token_type");
    for (std::size_t i = 0; i < types.size(); ++i) {
      const std::uint64_t t = types[i].u + static_cast<std::uint64_t>(types[i].i);
      special[i] = t == kTokenControl;
      plain[i] = t == kTokenUserDefined;
    }
  }
  if (is_sentencepiece(g))
    for (const char* key : kSpecialIdKeys)
      if (g.find(key)) {
        token_at(g, tokens, key);  // checks the id
        special[g.get_u64(key)] = true;
      }
  json added = json::array();
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (!special[i] && !plain[i]) continue;
    added.push_back({{"id", i}, {"content", tokens[i].s}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", special[i]}});
  }
  return added;
}

// SentencePiece's "▁" for a space, one put before the text (transformers' LlamaTokenizer:
// prepend_scheme "first", so not again after a special token). llama.cpp leaves the
// prefix out when add_space_prefix is false; transformers ignores that key.
bool add_space_prefix(const io::GgufFile& g) { return flag(g, "tokenizer.ggml.add_space_prefix", true); }

json metaspace_pre_tokenizer(const io::GgufFile& g) {
  return {{"type", "Metaspace"},
          {"replacement", "\u2581"},
          {"prepend_scheme", add_space_prefix(g) ? "first" : "never"},
          {"split", false}};
}

json decoder(const io::GgufFile& g) {
  if (!is_sentencepiece(g))
    return {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  json steps = {{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                {{"type", "ByteFallback"}},
                {{"type", "Fuse"}}};
  if (add_space_prefix(g)) steps.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  return {{"type", "Sequence"}, {"decoders", std::move(steps)}};
}

// BOS before and EOS after every sequence where the file asks for them, laid out as
// transformers' update_post_processor does; else GPT-2's plain byte-level processor
// (nothing for SentencePiece).
json post_processor(const io::GgufFile& g, const std::vector<io::GgufValue>& tokens) {
  const bool bos = add_bos(g), eos = flag(g, "tokenizer.ggml.add_eos_token", false);
  if (!bos && !eos) {
    if (is_sentencepiece(g)) return nullptr;
    return {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}};
  }
  json single = json::array(), pair = json::array(), specials = json::object();
  const auto special = [&](const char* key, int type_id) {
    const std::string& t = token_at(g, tokens, key);
    specials[t] = {{"id", t}, {"ids", {g.get_u64(key)}}, {"tokens", {t}}};
    return json{{"SpecialToken", {{"id", t}, {"type_id", type_id}}}};
  };
  for (int seq = 0; seq < 2; ++seq) {
    json& out = seq == 0 ? single : pair;
    if (seq == 1) out = single;
    if (bos) out.push_back(special("tokenizer.ggml.bos_token_id", seq));
    out.push_back({{"Sequence", {{"id", seq == 0 ? "A" : "B"}, {"type_id", seq}}}});
    if (eos) out.push_back(special("tokenizer.ggml.eos_token_id", seq));
  }
  return {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}};
}

json tokenizer_config(const io::GgufFile& g, const std::vector<io::GgufValue>& tokens, std::int64_t max_length) {
  json c = {{"tokenizer_class", "PreTrainedTokenizerFast"},
            {"clean_up_tokenization_spaces", false},
            {"model_max_length", max_length},
            {"add_bos_token", add_bos(g)},
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
  ANVIL_CHECK_INPUT(model == "gpt2" || model == "llama", g.path(), ": tokenizer.ggml.model '", model,
                    "' is not supported by anvil import (gpt2, byte-level BPE, and llama, SentencePiece-style "
                    "BPE, are)");
  const std::string pre = pre_name(g);
  // A SentencePiece vocabulary is split by its Metaspace rule whatever `pre` says
  // ("default" in llama.cpp's files), as transformers reads it.
  ANVIL_CHECK_INPUT(is_sentencepiece(g) || !data::hf_pre_tokenizer(pre).is_null(), g.path(), ": tokenizer.ggml.pre '",
                    pre, "' is not supported by anvil import (", data::hf_pre_tokenizer_names(), " are)");
  const auto& tokens = g.get_array("tokenizer.ggml.tokens");
  // JSON holds only well-formed UTF-8 (HF reads tokens as such).
  for (std::size_t i = 0; i < tokens.size(); ++i)
    ANVIL_CHECK_INPUT(tokens[i].type == io::GgufValueType::gguf_string &&
                          data::utf8_find_invalid(tokens[i].s) == std::string_view::npos,
                      g.path(), ": tokenizer.ggml.tokens must be a list of UTF-8 strings (entry ", i, " is not)");
  if (g.find("tokenizer.chat_template"))
    ANVIL_CHECK_INPUT(data::utf8_find_invalid(g.get_string("tokenizer.chat_template")) == std::string_view::npos,
                      g.path(), ": tokenizer.chat_template is not valid UTF-8");
  if (is_sentencepiece(g) && !g.find("tokenizer.ggml.merges")) {
    // The merges are derived from the scores.
    const auto& scores = g.get_array("tokenizer.ggml.scores");
    ANVIL_CHECK_INPUT(scores.size() == tokens.size(), g.path(), ": tokenizer.ggml.scores has ", scores.size(),
                      " entries for ", tokens.size(), " tokens");
    for (const io::GgufValue& v : scores)
      ANVIL_CHECK_INPUT(v.is_float(), g.path(), ": tokenizer.ggml.scores must be a list of floats");
  }
  if (g.find("tokenizer.ggml.token_type"))
    ANVIL_CHECK_INPUT(g.get_array("tokenizer.ggml.token_type").size() == tokens.size(), g.path(),
                      ": tokenizer.ggml.token_type has ", g.get_array("tokenizer.ggml.token_type").size(),
                      " entries for ", tokens.size(), " tokens");
  if (g.find("tokenizer.ggml.merges"))
    for (const io::GgufValue& m : g.get_array("tokenizer.ggml.merges"))
      ANVIL_CHECK_INPUT(m.type == io::GgufValueType::gguf_string && m.s.find(' ') != std::string::npos &&
                            data::utf8_find_invalid(m.s) == std::string_view::npos,
                        g.path(), ": tokenizer.ggml.merges must be UTF-8 strings 'left right'");
}

void gguf_tokenizer_write(const io::GgufFile& g, const std::string& dir, std::int64_t model_max_length) {
  gguf_tokenizer_check(g);
  const auto& tokens = g.get_array("tokenizer.ggml.tokens");
  const json tok = {{"version", "1.0"},
                    {"truncation", nullptr},
                    {"padding", nullptr},
                    {"added_tokens", added_tokens(g, tokens)},
                    {"normalizer", nullptr},
                    {"pre_tokenizer", is_sentencepiece(g) ? metaspace_pre_tokenizer(g) : data::hf_pre_tokenizer(pre_name(g))},
                    {"post_processor", post_processor(g, tokens)},
                    {"decoder", decoder(g)},
                    {"model", bpe_model(g, tokens)}};
  io::write_text_file_atomic(dir + "/tokenizer.json", tok.dump(2) + "\n");
  io::write_text_file_atomic(dir + "/tokenizer_config.json",
                             tokenizer_config(g, tokens, model_max_length).dump(2) + "\n");
}

}  // namespace anvil::importing
