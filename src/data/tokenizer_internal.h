// The parts of a loaded Tokenizer, shared by the loader (tokenizer_load.cpp) and the
// encode/decode code (tokenizer.cpp). Not part of the library's interface.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/bpe_model.h"
#include "data/pretokenize.h"
#include "data/tokenizer.h"
#include "data/tokenizer_added_tokens.h"
#include "data/tokenizer_decoder.h"
#include "data/tokenizer_normalize.h"
#include "data/tokenizer_utf8.h"

namespace anvil::data {

struct TokenStringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

enum class DecoderKind {
  decoder_byte_level,  // ByteLevel: token characters back to bytes, then lossy UTF-8
  decoder_none,        // no decoder: HF joins the token strings with spaces
  decoder_chain,       // SentencePiece-style: decode_steps over the token strings
};

struct Tokenizer::Impl {
  std::string label;  // where the tokenizer came from, for error messages

  // Byte-level BPE (a ByteLevel pre-tokenizer) or SentencePiece-style BPE over characters.
  bool byte_level = true;
  Normalizer normalizer;
  AddedTokenMatcher raw_matcher;         // added tokens with normalized = false
  AddedTokenMatcher normalized_matcher;  // added tokens with normalized = true
  std::optional<MetaspaceRewrite> metaspace;  // runs before pre_tokenizer when set
  PreTokenizer pre_tokenizer;
  std::unique_ptr<BpeModel> bpe;

  // The post-processor's template for one sequence: prefix + ids + suffix.
  std::vector<std::int32_t> prefix_ids;
  std::vector<std::int32_t> suffix_ids;

  DecoderKind decoder = DecoderKind::decoder_byte_level;
  std::vector<DecodeStep> decode_steps;
  std::vector<std::string> token_of;    // spelling by id; empty where has_token is false
  std::vector<std::string> decoded_of;  // what the decoder turns each id into
  std::vector<char> has_token;
  std::vector<char> special;
  std::unordered_map<std::string, std::int32_t, TokenStringHash, std::equal_to<>> id_of;

  std::optional<std::int32_t> bos;
  std::optional<std::int32_t> eos;
  std::optional<std::int32_t> pad;

  // Parses tokenizer.json (+ configs); defined in tokenizer_load.cpp.
  static std::unique_ptr<Impl> from_json(std::string_view tokenizer_json,
                                         std::string_view tokenizer_config_json,
                                         std::string_view special_tokens_map_json,
                                         const std::string& label);

  // Reads tokenizer.json's "model" (vocab, merges, options) and "added_tokens": the BPE
  // model, the added-token matchers and the id tables. Needs normalizer and decoder set
  // first. Defined in tokenizer_vocab.cpp.
  void load_vocab(const nlohmann::json& root, const std::string& file);
};

}  // namespace anvil::data
