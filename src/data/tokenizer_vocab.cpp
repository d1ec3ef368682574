// tokenizer.json's "model" (a BPE vocabulary and its merges) and "added_tokens": builds the
// BPE model over raw bytes, the added-token matchers and the id -> token tables.
#include <nlohmann/json.hpp>

#include <algorithm>

#include "core/error.h"
#include "data/tokenizer_internal.h"

namespace anvil::data {
namespace {

using nlohmann::json;
using Vocab = std::unordered_map<std::string, std::int32_t, TokenStringHash, std::equal_to<>>;

// Ids index flat tables, so an absurd id in a broken file must not allocate gigabytes.
constexpr std::int64_t max_token_id = 1 << 24;

std::vector<std::pair<std::string, std::string>> parse_merges(const json& merges,
                                                              const std::string& file) {
  ANVIL_CHECK_INPUT(merges.is_array(), file, ": model.merges must be an array");
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(merges.size());
  for (std::size_t i = 0; i < merges.size(); ++i) {
    const json& m = merges[i];
    if (m.is_string()) {
      // The older spelling, "left right"; merges.txt's "#version" header may survive.
      const std::string& line = m.get_ref<const std::string&>();
      if (line.starts_with("#version")) continue;
      const std::size_t space = line.find(' ');
      ANVIL_CHECK_INPUT(
          space != std::string::npos && line.find(' ', space + 1) == std::string::npos, file,
          ": model.merges[", i, "] '", line, "' must be two tokens separated by one space");
      out.emplace_back(line.substr(0, space), line.substr(space + 1));
    } else {
      ANVIL_CHECK_INPUT(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(), file,
                        ": model.merges[", i, "] must be \"a b\" or [\"a\", \"b\"]");
      out.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    }
  }
  return out;
}

void check_bpe_options(const json& model, const std::string& file, bool byte_level) {
  auto is_set = [&](const char* key) {
    const auto it = model.find(key);
    return it != model.end() && !it->is_null();
  };
  ANVIL_CHECK_INPUT(!byte_level || !model.value("byte_fallback", false), file,
                    ": model.byte_fallback = true is not supported with a ByteLevel "
                    "pre-tokenizer (byte_fallback is for SentencePiece-style BPE)");
  if (is_set("dropout")) {
    ANVIL_CHECK_INPUT(model.at("dropout").get<double>() == 0.0, file,
                      ": model.dropout is not supported (BPE dropout makes encoding random)");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (is_set(key)) {
      ANVIL_CHECK_INPUT(model.at(key).get<std::string>().empty(), file, ": model.", key,
                        " is not supported");
    }
  }
}

}  // namespace

void Tokenizer::Impl::load_vocab(const json& root, const std::string& file) {
  const auto model_it = root.find("model");
  ANVIL_CHECK_INPUT(model_it != root.end() && model_it->is_object(), file,
                    ": model must be an object");
  const json& model = *model_it;
  std::string type = model.value("type", "");
  if (type.empty() && model.contains("merges")) type = "BPE";  // older files omit the type
  if (type != "BPE") {
    throw_user_error(file, ": model type '", type,
                     "' is not supported: anvil reads BPE tokenizers (byte-level: GPT-2, "
                     "Llama-3, Qwen2, SmolLM2; SentencePiece-style: Llama-2, Mistral, "
                     "TinyLlama); Unigram and WordPiece models are not");
  }
  check_bpe_options(model, file, byte_level);

  const json& vocab_json = model.at("vocab");
  ANVIL_CHECK_INPUT(vocab_json.is_object(), file, ": model.vocab must be an object");
  Vocab vocab;
  vocab.reserve(vocab_json.size());
  std::int64_t max_id = -1;
  for (const auto& [spelling, id_json] : vocab_json.items()) {
    ANVIL_CHECK_INPUT(id_json.is_number_integer(), file, ": model.vocab['", spelling,
                      "'] must be an integer id");
    const auto id = id_json.get<std::int64_t>();
    ANVIL_CHECK_INPUT(id >= 0 && id < max_token_id, file, ": model.vocab['", spelling, "'] has id ",
                      id, ", outside [0, ", max_token_id, ")");
    vocab.emplace(spelling, static_cast<std::int32_t>(id));
    max_id = std::max(max_id, id);
  }

  std::vector<AddedToken> added;
  if (const auto it = root.find("added_tokens"); it != root.end() && !it->is_null()) {
    for (std::size_t i = 0; i < it->size(); ++i) {
      const json& t = (*it)[i];
      AddedToken token;
      token.content = t.at("content").get<std::string>();
      if (token.content.empty()) continue;  // HF ignores empty added tokens
      const auto id = t.at("id").get<std::int64_t>();
      ANVIL_CHECK_INPUT(id >= 0 && id < max_token_id, file, ": added_tokens[", i, "] has id ", id,
                        ", outside [0, ", max_token_id, ")");
      // A content already in the vocabulary keeps the vocabulary's id, as in HF.
      const auto in_vocab = vocab.find(token.content);
      token.id = in_vocab != vocab.end() ? in_vocab->second : static_cast<std::int32_t>(id);
      token.single_word = t.value("single_word", false);
      token.lstrip = t.value("lstrip", false);
      token.rstrip = t.value("rstrip", false);
      token.special = t.value("special", false);
      token.normalized = t.value("normalized", !token.special);
      max_id = std::max<std::int64_t>(max_id, token.id);
      added.push_back(std::move(token));
    }
  }

  // How the decoder turns one token into text: a byte-level spelling back into its bytes,
  // any other spelling as it is (HF's ByteLevel decoder does the same per token). The
  // decoder chain of SentencePiece-style tokenizers starts from the spellings.
  auto decoded_form = [this](const std::string& spelling) {
    if (decoder == DecoderKind::decoder_byte_level) {
      if (auto bytes = byte_level_to_bytes(spelling)) return *std::move(bytes);
    }
    return spelling;
  };
  const auto table_size = static_cast<std::size_t>(max_id + 1);
  token_of.assign(table_size, std::string());
  decoded_of.assign(table_size, std::string());
  has_token.assign(table_size, 0);
  special.assign(table_size, 0);
  for (const auto& [spelling, id] : vocab) {
    token_of[id] = spelling;
    decoded_of[id] = decoded_form(spelling);
    has_token[id] = 1;
    id_of.emplace(spelling, id);
  }
  for (const AddedToken& token : added) {
    std::string pattern = token.content;
    if (token.normalized && !normalizer.empty()) normalizer.apply(token.content, pattern);
    token_of[token.id] = token.content;
    // HF decodes a normalized added token from its normalized form.
    decoded_of[token.id] = decoded_form(pattern);
    has_token[token.id] = 1;
    special[token.id] = token.special ? 1 : 0;
    id_of.insert_or_assign(token.content, token.id);
    (token.normalized ? normalized_matcher : raw_matcher).add(pattern, token);
  }

  // Byte-level BPE works on raw bytes (see bpe_model.h); SentencePiece-style BPE on the
  // characters of the vocabulary's own spelling.
  BpeAlphabet alphabet;
  alphabet.by_char = !byte_level;
  alphabet.byte_fallback = model.value("byte_fallback", false);
  std::vector<std::int32_t> token_bytes(table_size, -1);
  for (int b = 0; b < 256; ++b) {
    const std::string spelling = byte_level ? bytes_to_byte_level(std::string(1, static_cast<char>(b)))
                                            : str_cat("<0x", "0123456789ABCDEF"[b >> 4],
                                                      "0123456789ABCDEF"[b & 15], ">");
    const auto it = vocab.find(spelling);
    alphabet.byte_ids[b] = it == vocab.end() ? -1 : it->second;
  }
  std::vector<std::pair<std::string, std::int32_t>> raw_vocab;
  BpeOptions options;
  options.ignore_merges = model.value("ignore_merges", false);
  for (const auto& [spelling, id] : vocab) {
    std::optional<std::string> bytes = spelling;
    if (byte_level) bytes = byte_level_to_bytes(spelling);
    if (!bytes) continue;
    token_bytes[id] = static_cast<std::int32_t>(bytes->size());
    if (!byte_level) {
      std::size_t i = 0;
      const char32_t ch = utf8_next(*bytes, i);
      if (i == bytes->size()) alphabet.char_ids.emplace(ch, id);
    }
    if (options.ignore_merges) raw_vocab.emplace_back(*std::move(bytes), id);
  }
  if (!byte_level) {
    // A <0xNN> token stands for one byte of the piece.
    for (const std::int32_t id : alphabet.byte_ids) {
      if (id >= 0) token_bytes[id] = 1;
    }
  }
  if (const auto it = model.find("unk_token"); it != model.end() && !it->is_null()) {
    const std::string unk = it->get<std::string>();
    const auto unk_it = vocab.find(unk);
    ANVIL_CHECK_INPUT(unk_it != vocab.end(), file, ": model.unk_token '", unk,
                      "' is not in model.vocab");
    options.unk_id = unk_it->second;
  }
  options.fuse_unk = model.value("fuse_unk", false);

  const auto merges = parse_merges(model.at("merges"), file);
  MergeTable table;
  table.build(merges.size());
  for (std::size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const auto l = vocab.find(left);
    const auto r = vocab.find(right);
    const auto m = vocab.find(left + right);
    ANVIL_CHECK_INPUT(l != vocab.end() && r != vocab.end() && m != vocab.end(), file,
                      ": model.merges[", rank, "] ('", left, "', '", right, "'): ",
                      l == vocab.end()   ? left
                      : r == vocab.end() ? right
                                         : left + right,
                      " is not in model.vocab");
    table.insert(l->second, r->second, static_cast<std::int32_t>(rank), m->second);
  }
  bpe = std::make_unique<BpeModel>(std::move(alphabet), std::move(raw_vocab), std::move(table),
                                   std::move(token_bytes), options);
}

}  // namespace anvil::data
