// Tokenizer: encode and decode over the parts tokenizer_load.cpp builds.
#include "data/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "core/error.h"
#include "data/tokenizer_internal.h"
#include "io/files.h"

namespace anvil::data {
namespace {

// Hands each pre-token to BPE, appending ids to one output vector.
class BpeSink final : public PieceSink {
 public:
  BpeSink(const BpeModel& bpe, std::vector<std::int32_t>& out) : bpe_(bpe), out_(out) {}
  void on_piece(std::string_view piece) override { bpe_.encode_piece(piece, out_); }

 private:
  const BpeModel& bpe_;
  std::vector<std::int32_t>& out_;
};

// Buffers of one encode call, kept per thread so a stream of short texts does not
// allocate for each.
struct EncodeScratch {
  std::vector<AddedSplit> raw_splits;
  std::vector<AddedSplit> normalized_splits;
  std::string normalized;
};

EncodeScratch& encode_scratch() {
  thread_local EncodeScratch scratch;
  return scratch;
}

std::string read_if_present(const std::filesystem::path& path) {
  return std::filesystem::exists(path) ? io::read_text_file(path.string()) : std::string();
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::string& model_dir) {
  const std::filesystem::path dir(model_dir);
  ANVIL_CHECK_INPUT(std::filesystem::is_directory(dir), model_dir, ": not a directory");
  const auto tokenizer_json = dir / "tokenizer.json";
  if (!std::filesystem::exists(tokenizer_json)) {
    const bool sentencepiece = std::filesystem::exists(dir / "tokenizer.model");
    throw_user_error(model_dir, ": has no tokenizer.json",
                     sentencepiece ? " (only a SentencePiece tokenizer.model, which anvil does "
                                     "not read: it needs a Hugging Face fast tokenizer)"
                                   : "");
  }
  return from_json(io::read_text_file(tokenizer_json.string()), read_if_present(dir / "tokenizer_config.json"),
                   read_if_present(dir / "special_tokens_map.json"), model_dir);
}

Tokenizer Tokenizer::from_json(std::string_view tokenizer_json,
                               std::string_view tokenizer_config_json,
                               std::string_view special_tokens_map_json, const std::string& label) {
  return Tokenizer(
      Impl::from_json(tokenizer_json, tokenizer_config_json, special_tokens_map_json, label));
}

std::vector<std::int32_t> Tokenizer::encode(std::string_view text, bool add_special) const {
  std::vector<std::int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  encode_append(text, add_special, ids);
  return ids;
}

void Tokenizer::encode_append(std::string_view text, bool add_special,
                              std::vector<std::int32_t>& out) const {
  const Impl& t = *impl_;
  ANVIL_CHECK_INPUT(text.size() < std::numeric_limits<std::uint32_t>::max(),
                    "text to tokenize is larger than 4 GiB");
  const std::size_t bad = utf8_find_invalid(text);
  ANVIL_CHECK_INPUT(bad == std::string_view::npos, "text to tokenize is not valid UTF-8 (byte ",
                    bad, ")");
  if (add_special) out.insert(out.end(), t.prefix_ids.begin(), t.prefix_ids.end());

  EncodeScratch& scratch = encode_scratch();
  BpeSink sink(*t.bpe, out);
  scratch.raw_splits.clear();
  t.raw_matcher.split(text, scratch.raw_splits);
  for (const AddedSplit& raw : scratch.raw_splits) {
    if (raw.id >= 0) {
      out.push_back(raw.id);
      continue;
    }
    std::string_view piece = text.substr(raw.begin, raw.end - raw.begin);
    if (!t.normalizer.empty()) {
      t.normalizer.apply(piece, scratch.normalized);
      piece = scratch.normalized;
    }
    if (t.normalized_matcher.empty()) {
      t.pre_tokenizer.run(piece, sink);
      continue;
    }
    scratch.normalized_splits.clear();
    t.normalized_matcher.split(piece, scratch.normalized_splits);
    for (const AddedSplit& split : scratch.normalized_splits) {
      if (split.id >= 0) {
        out.push_back(split.id);
      } else {
        t.pre_tokenizer.run(piece.substr(split.begin, split.end - split.begin), sink);
      }
    }
  }
  if (add_special) out.insert(out.end(), t.suffix_ids.begin(), t.suffix_ids.end());
}

std::string Tokenizer::decode(std::span<const std::int32_t> ids, bool skip_special) const {
  const Impl& t = *impl_;
  std::string bytes;
  bool first = true;
  for (const std::int32_t id : ids) {
    ANVIL_CHECK_INPUT(
        id >= 0 && static_cast<std::size_t>(id) < t.has_token.size() && t.has_token[id],
        "cannot decode id ", id, ": the tokenizer of ", t.label, " has no token with that id");
    if (skip_special && t.special[id]) continue;
    if (t.decoder == DecoderKind::decoder_none && !first) bytes.push_back(' ');
    bytes += t.decoded_of[id];
    first = false;
  }
  std::string text;
  text.reserve(bytes.size());
  utf8_append_lossy(bytes, text);
  return text;
}

std::optional<std::int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<std::int32_t> Tokenizer::eos_id() const { return impl_->eos; }
std::optional<std::int32_t> Tokenizer::pad_id() const { return impl_->pad; }

bool Tokenizer::adds_bos() const {
  return impl_->bos && !impl_->prefix_ids.empty() && impl_->prefix_ids.front() == *impl_->bos;
}
bool Tokenizer::adds_eos() const {
  return impl_->eos && !impl_->suffix_ids.empty() && impl_->suffix_ids.back() == *impl_->eos;
}

std::size_t Tokenizer::vocab_size() const { return impl_->has_token.size(); }

std::optional<std::int32_t> Tokenizer::token_to_id(std::string_view token) const {
  const auto it = impl_->id_of.find(token);
  if (it == impl_->id_of.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> Tokenizer::id_to_token(std::int32_t id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= impl_->has_token.size() || !impl_->has_token[id]) {
    return std::nullopt;
  }
  return impl_->token_of[id];
}

bool Tokenizer::is_special(std::int32_t id) const {
  return id >= 0 && static_cast<std::size_t>(id) < impl_->special.size() && impl_->special[id];
}

}  // namespace anvil::data
