// The part of a GGUF's tokenizer metadata that gguf-py's SpecialVocab finds, the way it
// finds it (convert_hf_to_gguf.py uses it for every tokenizer): the bos/eos/unk/sep/pad/mask
// (and eot/eom) ids, the add_bos/add_eos/add_sep flags and the chat template(s), read from
// tokenizer.json's post-processor and added tokens, tokenizer_config.json, config.json and
// chat_template.jinja.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "export/gguf_tokenizer_meta.h"

namespace anvil::exporting {

struct TokenizerFiles {
  std::string dir;
  std::string tokenizer_path;  // DIR/tokenizer.json
  std::string config_path;     // DIR/tokenizer_config.json
  nlohmann::json tokenizer;    // tokenizer.json
  nlohmann::json config;       // tokenizer_config.json; null when there is none
  nlohmann::json model_config; // config.json; null when there is none
};

// obj[key] when obj is an object that has it, else a null value; a reference into obj, not
// a copy (tokenizer.json's model object holds the whole vocabulary and merges).
const nlohmann::json& json_field(const nlohmann::json& obj, const std::string& key);

// Appends the SpecialVocab entries to `out` in the order its add_to_gguf writes them (ids,
// add flags, chat templates). Ids at or past `n_vocab` are left out, as SpecialVocab does
// when given a vocabulary size (the SentencePiece path).
void append_special_vocab(const TokenizerFiles& files, std::optional<std::size_t> n_vocab,
                          std::vector<GgufKv>& out);

}  // namespace anvil::exporting
