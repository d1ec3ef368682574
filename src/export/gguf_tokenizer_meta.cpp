// tokenizer.json → llama.cpp's tokenizer.* metadata, as convert_hf_to_gguf.py writes it:
// _set_vocab_gpt2 for byte-level BPE, and for SentencePiece-style BPE what
// _create_vocab_sentencepiece writes for the tokenizer.model such a tokenizer.json comes from.
#include "export/gguf_tokenizer_meta.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string_view>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/hf_pre_tokenizers.h"
#include "export/gguf_special_vocab.h"
#include "io/files.h"

namespace anvil::exporting {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// llama.cpp's token types (llama_token_type).
enum TokenType : std::int32_t {
  token_type_normal = 1,
  token_type_unknown = 2,
  token_type_control = 3,
  token_type_user_defined = 4,
  token_type_unused = 5,
  token_type_byte = 6,
};

// SentencePiece's space, which llama.cpp wants as a plain space in user-defined tokens.
constexpr std::string_view kMetaspace = "\u2581";

json read_json(const std::string& path) {
  try {
    return json::parse(io::read_text_file(path));
  } catch (const json::parse_error& e) {
    throw_user_error(path, ": not valid JSON: ", e.what());
  }
}

TokenizerFiles read_files(const std::string& dir) {
  TokenizerFiles f;
  f.dir = dir;
  f.tokenizer_path = (fs::path(dir) / "tokenizer.json").string();
  f.config_path = (fs::path(dir) / "tokenizer_config.json").string();
  ANVIL_CHECK_INPUT(fs::is_regular_file(f.tokenizer_path), dir,
                    ": has no tokenizer.json (the GGUF export needs the tokenizer)");
  f.tokenizer = read_json(f.tokenizer_path);
  ANVIL_CHECK_INPUT(f.tokenizer.is_object(), f.tokenizer_path, ": must be a JSON object");
  if (fs::is_regular_file(f.config_path)) f.config = read_json(f.config_path);
  const std::string model_config = (fs::path(dir) / "config.json").string();
  if (fs::is_regular_file(model_config)) f.model_config = read_json(model_config);
  return f;
}

// "Sequence[Split(<regex>), ByteLevel]" for a message.
std::string describe(const json& p) {
  if (!p.is_object()) return p.dump();
  const json& type_field = json_field(p, "type");
  const std::string type = type_field.is_string() ? type_field.get<std::string>() : "?";
  if (type == "Sequence") {
    std::string s = "Sequence[";
    const json& items = json_field(p, "pretokenizers").is_array() ? p["pretokenizers"] : json_field(p, "normalizers");
    for (std::size_t i = 0; items.is_array() && i < items.size(); ++i) s += (i ? ", " : "") + describe(items[i]);
    return s + "]";
  }
  if (type == "Split") return "Split(" + json_field(p, "pattern").dump() + ")";
  return type;
}

// The converter also re-encodes an added token that is not normalized and writes what
// decoding gives back; for the added tokens of these tokenizers that is the token itself.
struct AddedToken {
  bool special = false;
};

// The vocabulary by id: the BPE model's tokens with the added tokens over them, padded to
// config.json's vocab_size as the converter pads (ids with no token are unused "[PADi]").
struct Vocab {
  std::vector<std::optional<std::string>> tokens;
  std::unordered_map<std::size_t, AddedToken> added;
  std::unordered_map<std::string, std::size_t> ids;
};

Vocab read_vocab(const TokenizerFiles& f) {
  const json& vocab = json_field(json_field(f.tokenizer, "model"), "vocab");
  ANVIL_CHECK_INPUT(vocab.is_object(), f.tokenizer_path, ": model.vocab must be an object of token ids");
  std::vector<std::pair<std::size_t, std::string>> entries;
  std::unordered_map<std::size_t, AddedToken> added;
  for (const auto& [token, id] : vocab.items()) {
    ANVIL_CHECK_INPUT(id.is_number_unsigned(), f.tokenizer_path, ": model.vocab['", token, "'] is not a token id");
    entries.emplace_back(id.get<std::size_t>(), token);
  }
  const json added_tokens = f.tokenizer.value("added_tokens", json::array());
  ANVIL_CHECK_INPUT(added_tokens.is_array(), f.tokenizer_path, ": added_tokens must be a list");
  for (const json& a : added_tokens) {
    ANVIL_CHECK_INPUT(json_field(a, "id").is_number_unsigned() && json_field(a, "content").is_string(), f.tokenizer_path,
                      ": added_tokens entries need an id and a content");
    const std::size_t id = a["id"].get<std::size_t>();
    entries.emplace_back(id, a["content"].get<std::string>());
    added[id] = {json_field(a, "special") == true};
  }
  std::size_t max_id = 0;
  for (const auto& e : entries) max_id = std::max(max_id, e.first);
  std::size_t size = entries.empty() ? 0 : max_id + 1;
  if (const json& vs = json_field(f.model_config, "vocab_size"); vs.is_number_unsigned()) {
    ANVIL_CHECK_INPUT(entries.empty() || max_id < vs.get<std::size_t>(), f.tokenizer_path, ": token id ", max_id,
                      " is not below config.json's vocab_size ", vs.get<std::size_t>());
    size = vs.get<std::size_t>();
  }
  ANVIL_CHECK_INPUT(size <= std::size_t{INT32_MAX}, f.dir, ": a vocabulary of ", size,
                    " ids (tokenizer.json, config.json) is more than llama.cpp's int32 token ids reach");
  Vocab v;
  v.tokens.resize(size);
  for (const auto& [id, token] : entries) v.tokens[id] = token;  // added tokens last: they win
  v.added = std::move(added);
  for (std::size_t i = 0; i < size; ++i)
    if (v.tokens[i]) v.ids[*v.tokens[i]] = i;
  return v;
}

// Tokens some models add without marking them special (the converter's list).
bool looks_special(std::string_view t) {
  const auto wraps = [&](std::string_view open, std::string_view close) {
    return t.starts_with(open) && t.ends_with(close);
  };
  return t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]" || wraps("<|", "|>") ||
         wraps("<\uFF5C", "\uFF5C>") || wraps("<unused", ">");
}

std::string replace_metaspace(std::string_view t) {
  std::string out;
  for (std::size_t p = 0; p < t.size();) {
    if (t.substr(p).starts_with(kMetaspace)) {
      out += ' ';
      p += kMetaspace.size();
    } else {
      out += t[p++];
    }
  }
  return out;
}

// An added token's type and text: control for special ones, else user-defined with
// SentencePiece's spaces made plain.
std::int32_t added_token_type(const AddedToken& a, std::string& token) {
  if (a.special || looks_special(token)) return token_type_control;
  token = replace_metaspace(token);
  return token_type_user_defined;
}

// Tokens and their types by id; an id with no token is the converter's unused "[PAD<id>]".
// type_of(id, token) gives a present token's type and may rewrite its text.
template <typename TypeOf>
std::pair<std::vector<std::string>, std::vector<std::int32_t>> token_list(const Vocab& v, TypeOf type_of) {
  std::vector<std::string> tokens(v.tokens.size());
  std::vector<std::int32_t> types(v.tokens.size(), token_type_unused);
  for (std::size_t i = 0; i < v.tokens.size(); ++i) {
    if (!v.tokens[i]) {
      tokens[i] = "[PAD" + std::to_string(i) + "]";
      continue;
    }
    tokens[i] = *v.tokens[i];
    types[i] = type_of(i, tokens[i]);
  }
  return {std::move(tokens), std::move(types)};
}

bool is_byte_token(std::string_view t) {
  const auto hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; };
  return t.size() == 6 && t.starts_with("<0x") && hex(t[3]) && hex(t[4]) && t[5] == '>';
}

// tokenizer.json's merges as "left right" strings; the [left, right] form (transformers
// 4.45+) with any space inside a piece written as U+0120, as SpecialVocab writes it.
std::vector<std::string> read_merges(const TokenizerFiles& f) {
  const json& merges = json_field(json_field(f.tokenizer, "model"), "merges");
  // An empty list is a byte-level vocabulary without merges (anvil init-model's); llama.cpp
  // needs the key, not entries.
  ANVIL_CHECK_INPUT(merges.is_array(), f.tokenizer_path, ": model.merges is missing (llama.cpp's BPE needs the key)");
  std::vector<std::string> out;
  out.reserve(merges.size());
  for (const json& m : merges) {
    if (m.is_string()) {
      out.push_back(m.get<std::string>());
      continue;
    }
    ANVIL_CHECK_INPUT(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(), f.tokenizer_path,
                      ": model.merges entries must be \"left right\" or [left, right]");
    std::string s;
    for (int side = 0; side < 2; ++side) {
      if (side) s += ' ';
      for (char c : m[side].get<std::string>()) s += c == ' ' ? std::string("\u0120") : std::string(1, c);
    }
    out.push_back(std::move(s));
  }
  return out;
}

// The converter's LlamaModel writes tokenizer_config.json's add_prefix_space as
// add_space_prefix (first, before the vocabulary); Qwen2's does not.
bool llama_family(const TokenizerFiles& f) {
  const json& archs = json_field(f.model_config, "architectures");
  if (!archs.is_array() || archs.empty() || !archs[0].is_string()) return false;
  const std::string a = archs[0].get<std::string>();
  return a == "LlamaForCausalLM" || a == "MistralForCausalLM" || a == "MixtralForCausalLM";
}

void append_add_space_prefix(const TokenizerFiles& f, bool sentencepiece, std::vector<GgufKv>& out) {
  const json& prefix = json_field(f.config, "add_prefix_space");
  if ((llama_family(f) || sentencepiece) && prefix.is_boolean()) {
    out.push_back({"tokenizer.ggml.add_space_prefix", io::gguf_value_bool(prefix.get<bool>())});
    return;
  }
  // A Metaspace that never prepends "▁" (anvil import writes one for add_space_prefix
  // false): llama.cpp must not prepend it either, and its default is to.
  const json& pre = json_field(f.tokenizer, "pre_tokenizer");
  if (sentencepiece && json_field(pre, "prepend_scheme") == "never")
    out.push_back({"tokenizer.ggml.add_space_prefix", io::gguf_value_bool(false)});
}

void append_byte_level(const TokenizerFiles& f, const Vocab& v, std::vector<GgufKv>& out) {
  const json& pre_tokenizer = json_field(f.tokenizer, "pre_tokenizer");
  const std::string pre = data::llama_cpp_pre_name(pre_tokenizer);
  ANVIL_CHECK_INPUT(!pre.empty(), f.tokenizer_path, ": pre_tokenizer ", describe(pre_tokenizer),
                    " is not supported for GGUF export (llama.cpp's ", data::hf_pre_tokenizer_names(),
                    " are; llama.cpp would split text another way)");
  // llama.cpp skips the merges of a word found whole in the vocabulary for Llama 3 only.
  // Llama 4's tokenizer.json asks for it too (transformers' tiktoken converter sets it),
  // which llama.cpp's llama4 does not do: such a GGUF tokenizes as llama.cpp's own
  // converter's Llama 4 files do, merges applied (a word whole in the vocabulary that the
  // merges would split comes out split).
  const bool ignore_merges = json_field(json_field(f.tokenizer, "model"), "ignore_merges") == true;
  ANVIL_CHECK_INPUT(ignore_merges == (pre == "llama-bpe") || pre == "llama4", f.tokenizer_path,
                    ": model.ignore_merges ", ignore_merges ? "true" : "false", " with the ", pre,
                    " pre-tokenizer is not supported for GGUF export (llama.cpp ignores merges for llama-bpe only)");
  const json& normalizer = json_field(f.tokenizer, "normalizer");
  ANVIL_CHECK_INPUT(normalizer.is_null() || json_field(normalizer, "type") == "NFC", f.tokenizer_path, ": normalizer ",
                    describe(normalizer), " is not supported for GGUF export of a byte-level tokenizer (NFC is)");
  auto [tokens, types] = token_list(v, [&](std::size_t id, std::string& token) -> std::int32_t {
    const auto a = v.added.find(id);
    return a == v.added.end() ? token_type_normal : added_token_type(a->second, token);
  });
  out.push_back({"tokenizer.ggml.model", io::gguf_value_string("gpt2")});
  out.push_back({"tokenizer.ggml.pre", io::gguf_value_string(pre)});
  out.push_back({"tokenizer.ggml.tokens", io::gguf_value_strings(std::move(tokens))});
  out.push_back({"tokenizer.ggml.token_type", io::gguf_value_i32s(types)});
  out.push_back({"tokenizer.ggml.merges", io::gguf_value_strings(read_merges(f))});
}

// A SentencePiece-style tokenizer.json: "▁" for spaces by a Metaspace pre-tokenizer, or by
// the Prepend + Replace normalizer of older conversions; llama.cpp's SentencePiece
// tokenizer does neither more nor less.
void check_sentencepiece(const TokenizerFiles& f) {
  const json &pre = json_field(f.tokenizer, "pre_tokenizer"), &norm = json_field(f.tokenizer, "normalizer");
  const json legacy = {{"type", "Sequence"},
                       {"normalizers",
                        {{{"type", "Prepend"}, {"prepend", kMetaspace}},
                         {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kMetaspace}}}}};
  const bool metaspace = json_field(pre, "type") == "Metaspace" && json_field(pre, "replacement") == kMetaspace &&
                         json_field(pre, "split") != true && norm.is_null();
  ANVIL_CHECK_INPUT(metaspace || (pre.is_null() && norm == legacy), f.tokenizer_path,
                    ": a byte-fallback BPE tokenizer with pre_tokenizer ", describe(pre), " and normalizer ",
                    describe(norm),
                    " is not supported for GGUF export (SentencePiece-style ones are: Metaspace \"\u2581\" "
                    "without split, or the Prepend + Replace normalizer)");
  ANVIL_CHECK_INPUT(json_field(json_field(f.tokenizer, "decoder"), "type") == "Sequence", f.tokenizer_path,
                    ": a byte-fallback BPE tokenizer needs a Sequence decoder for GGUF export (llama.cpp's "
                    "converter reads only those as SentencePiece)");
}

// llama.cpp's SentencePiece tokenizer merges the adjacent pair whose joined token scores
// highest. tokenizer.json keeps no scores, only merges in rank order, so each token scores
// -(1 + the rank of the first merge that makes it): llama.cpp then merges in the order
// tokenizer.json does. Tokens no merge makes (characters, bytes, specials) score 0, unused
// ids -10000 as the converter pads them.
std::vector<float> merge_scores(const TokenizerFiles& f, const Vocab& v) {
  std::vector<float> scores(v.tokens.size(), 0.0f);
  std::vector<bool> made(v.tokens.size(), false);
  const std::vector<std::string> merges = read_merges(f);
  for (std::size_t r = 0; r < merges.size(); ++r) {
    const std::size_t space = merges[r].find(' ');
    ANVIL_CHECK_INPUT(space != std::string::npos, f.tokenizer_path, ": merge ", r, " is not \"left right\"");
    std::string joined = merges[r];
    joined.erase(space, 1);
    const auto it = v.ids.find(joined);
    if (it == v.ids.end() || made[it->second]) continue;
    made[it->second] = true;
    scores[it->second] = -static_cast<float>(r + 1);
  }
  for (std::size_t i = 0; i < v.tokens.size(); ++i)
    if (!v.tokens[i]) scores[i] = -10000.0f;
  return scores;
}

void append_sentencepiece(const TokenizerFiles& f, const Vocab& v, std::vector<GgufKv>& out) {
  check_sentencepiece(f);
  const json& unk = json_field(json_field(f.tokenizer, "model"), "unk_token");
  // bos/eos/unk/pad of tokenizer_config.json are special in transformers, like its
  // additional_special_tokens, whether or not tokenizer.json marks them.
  std::vector<std::string> specials;
  for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token"}) {
    json t = json_field(f.config, key);
    if (t.is_object()) t = json_field(t, "content");
    if (t.is_string()) specials.push_back(t.get<std::string>());
  }
  for (const json& t : json_field(f.config, "additional_special_tokens"))
    if (t.is_string()) specials.push_back(t.get<std::string>());
  auto [tokens, types] = token_list(v, [&](std::size_t id, std::string& token) -> std::int32_t {
    if (is_byte_token(token)) return token_type_byte;
    if (unk.is_string() && unk == token) return token_type_unknown;
    if (std::find(specials.begin(), specials.end(), token) != specials.end()) return token_type_control;
    const auto a = v.added.find(id);
    return a == v.added.end() ? token_type_normal : added_token_type(a->second, token);
  });
  out.push_back({"tokenizer.ggml.model", io::gguf_value_string("llama")});
  out.push_back({"tokenizer.ggml.pre", io::gguf_value_string("default")});
  out.push_back({"tokenizer.ggml.tokens", io::gguf_value_strings(std::move(tokens))});
  out.push_back({"tokenizer.ggml.scores", io::gguf_value_f32s(merge_scores(f, v))});
  out.push_back({"tokenizer.ggml.token_type", io::gguf_value_i32s(types)});
}

}  // namespace

std::vector<GgufKv> gguf_tokenizer_metadata(const std::string& dir) {
  const TokenizerFiles f = read_files(dir);
  const json& model = json_field(f.tokenizer, "model");
  const json& type = json_field(model, "type");
  ANVIL_CHECK_INPUT(type == "BPE", f.tokenizer_path, ": model.type ", type.dump(),
                    " is not supported for GGUF export (BPE is: byte-level, or SentencePiece-style with byte "
                    "fallback)");
  const bool sentencepiece = json_field(model, "byte_fallback") == true;
  const Vocab v = read_vocab(f);
  std::vector<GgufKv> out;
  append_add_space_prefix(f, sentencepiece, out);
  if (sentencepiece) {
    append_sentencepiece(f, v, out);
    append_special_vocab(f, v.tokens.size(), out);
  } else {
    append_byte_level(f, v, out);
    append_special_vocab(f, std::nullopt, out);
  }
  return out;
}

}  // namespace anvil::exporting
