// Tokenizer: a Hugging Face BPE tokenizer loaded from a model directory's tokenizer.json,
// giving the ids the model's own tokenizer gives, in process. Two kinds:
//  - byte-level BPE (GPT-2, Llama-3, Qwen2, SmolLM2 families): a ByteLevel pre-tokenizer,
//    merges over bytes;
//  - SentencePiece-style BPE (Llama-2, Mistral, TinyLlama families): "▁" for spaces (a
//    Prepend + Replace normalizer, or a Metaspace pre-tokenizer), merges over characters,
//    <0xNN> byte tokens for characters the vocabulary lacks (byte_fallback), and the
//    Replace / ByteFallback / Fuse / Strip or Metaspace decoders.
//
// The pipeline is HF's: added tokens are cut out of the raw text, the rest is normalized
// (NFC, Prepend, ...), added tokens marked "normalized" are cut out of that, pre-tokenizers
// split it into words, BPE merges each word, and the post-processor's template adds BOS
// and the like when asked. Anything else (Unigram and WordPiece models, other normalizers,
// pre-tokenizers and decoders) is refused at load time with a user error naming the
// component and the file.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace anvil::data {

class Tokenizer {
 public:
  // Reads MODEL_DIR/tokenizer.json, plus tokenizer_config.json and special_tokens_map.json
  // when present (bos/eos/pad tokens; add_bos_token / add_eos_token, which override the
  // post-processor template as transformers does).
  static Tokenizer load(const std::string& model_dir);

  // The same from JSON text; empty strings stand for absent config files. `label` names
  // the source in errors (a path, or a test's name).
  static Tokenizer from_json(std::string_view tokenizer_json,
                             std::string_view tokenizer_config_json,
                             std::string_view special_tokens_map_json, const std::string& label);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Token ids of `text`, which must be UTF-8 (a user error says where it is not).
  // add_special: apply the post-processor template (BOS for Llama-3, nothing for GPT-2).
  // Thread safe: several threads may encode with one Tokenizer.
  std::vector<std::int32_t> encode(std::string_view text, bool add_special) const;
  // Appends the ids to `out`: lets a caller reuse one buffer for many texts.
  void encode_append(std::string_view text, bool add_special, std::vector<std::int32_t>& out) const;
  // encode_append, and for each id appended the byte offset in `text` where the text it
  // stands for begins (HF's offsets, in bytes). Ids the post-processor template adds get
  // offset 0 (prefix) or text.size() (suffix). Offsets never decrease.
  void encode_append_offsets(std::string_view text, bool add_special, std::vector<std::int32_t>& ids,
                             std::vector<std::uint32_t>& offsets) const;

  // Text of `ids`; bytes that do not form UTF-8 become U+FFFD, as in HF. An id with no
  // token is a user error. skip_special drops special tokens (BOS, <|eot_id|>, ...).
  std::string decode(std::span<const std::int32_t> ids, bool skip_special = false) const;

  std::optional<std::int32_t> bos_id() const;
  std::optional<std::int32_t> eos_id() const;
  std::optional<std::int32_t> pad_id() const;
  // Whether encode(text, true) starts with BOS / ends with EOS.
  bool adds_bos() const;
  bool adds_eos() const;

  // One more than the largest id of the vocabulary and added tokens.
  std::size_t vocab_size() const;
  // The id of a token as the vocabulary spells it ("Ġthe", "<|eot_id|>").
  std::optional<std::int32_t> token_to_id(std::string_view token) const;
  // The token's spelling in the vocabulary; nullopt for an id with no token.
  std::optional<std::string> id_to_token(std::int32_t id) const;
  bool is_special(std::int32_t id) const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace anvil::data
