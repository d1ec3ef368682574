// Tokenizer: encode and decode over the parts tokenizer_load.cpp builds.
#include "data/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <type_traits>

#include "core/error.h"
#include "data/tokenizer_internal.h"
#include "io/files.h"

namespace anvil::data {
namespace {

// Hands each pre-token to BPE, appending ids to one output vector.
class BpeSink final : public PieceSink {
 public:
  BpeSink(const BpeModel& bpe, std::vector<std::int32_t>& out) : bpe_(bpe), out_(out) {}
  void on_piece(std::string_view piece, PieceOrigin) override { bpe_.encode_piece(piece, out_); }

 private:
  const BpeModel& bpe_;
  std::vector<std::int32_t>& out_;
};

// The same, and each id's offset in the caller's text: a byte of the piece -> its place in
// the text given to the pre-tokenizer (PieceOrigin) -> its place in the split before
// normalization (normalized_origin; null when the split was not normalized) -> + where
// that split starts in the caller's text.
class BpeOffsetSink final : public PieceSink {
 public:
  BpeOffsetSink(const BpeModel& bpe, std::vector<std::int32_t>& ids,
                std::vector<std::uint32_t>& offsets, std::vector<std::uint32_t>& starts)
      : bpe_(bpe), ids_(ids), offsets_(offsets), starts_(starts) {}

  void locate(std::uint32_t base, const std::uint32_t* normalized_origin) {
    base_ = base;
    normalized_origin_ = normalized_origin;
  }

  void on_piece(std::string_view piece, PieceOrigin origin) override {
    starts_.clear();
    bpe_.encode_piece_offsets(piece, ids_, starts_);
    for (const std::uint32_t start : starts_) {
      const std::uint32_t at = origin.at(start);
      offsets_.push_back(base_ + (normalized_origin_ ? normalized_origin_[at] : at));
    }
  }

 private:
  const BpeModel& bpe_;
  std::vector<std::int32_t>& ids_;
  std::vector<std::uint32_t>& offsets_;
  std::vector<std::uint32_t>& starts_;
  std::uint32_t base_ = 0;
  const std::uint32_t* normalized_origin_ = nullptr;
};

// Buffers of one encode call, kept per thread so a stream of short texts does not
// allocate for each.
struct EncodeScratch {
  std::vector<AddedSplit> raw_splits;
  std::vector<AddedSplit> normalized_splits;
  std::string normalized;
  std::string metaspaced;
  std::vector<std::uint32_t> normalized_origin;  // offsets only
  std::vector<std::uint32_t> metaspace_origin;   // offsets only
  std::vector<std::uint32_t> piece_origin;       // offsets only
  std::vector<std::uint32_t> starts;             // offsets only
};

EncodeScratch& encode_scratch() {
  thread_local EncodeScratch scratch;
  return scratch;
}

// HF's pipeline (see tokenizer.h), without the post-processor. with_offsets also appends
// each id's offset to *offsets; the plain path compiles without any of that. (Parts is
// Tokenizer::Impl, deduced: the name is private to Tokenizer.)
template <bool with_offsets, typename Parts>
void encode_pipeline(const Parts& t, std::string_view text,
                     std::vector<std::int32_t>& ids, std::vector<std::uint32_t>* offsets) {
  EncodeScratch& scratch = encode_scratch();
  using Sink = std::conditional_t<with_offsets, BpeOffsetSink, BpeSink>;
  Sink sink = [&] {
    if constexpr (with_offsets) {
      return BpeOffsetSink(*t.bpe, ids, *offsets, scratch.starts);
    } else {
      return BpeSink(*t.bpe, ids);
    }
  }();
  auto add = [&](std::int32_t id, std::uint32_t at) {
    ids.push_back(id);
    if constexpr (with_offsets) offsets->push_back(at);
  };
  // Pre-tokenizes and merges `input`, a piece of the caller's text after normalization
  // (offsets: input byte k stands at base + origin[k], or base + k when origin is null).
  // at_start: nothing of the text comes before it (Metaspace's prepend_scheme "first").
  auto run = [&](std::string_view input, std::uint32_t base, const std::uint32_t* origin,
                 bool at_start) {
    if (t.metaspace) {
      if constexpr (with_offsets) {
        t.metaspace->apply(input, at_start, scratch.metaspaced, &scratch.metaspace_origin);
        scratch.piece_origin.resize(scratch.metaspace_origin.size());
        for (std::size_t k = 0; k < scratch.piece_origin.size(); ++k) {
          const std::uint32_t at = scratch.metaspace_origin[k];
          scratch.piece_origin[k] = origin ? origin[at] : at;
        }
        origin = scratch.piece_origin.data();
      } else {
        t.metaspace->apply(input, at_start, scratch.metaspaced, nullptr);
      }
      input = scratch.metaspaced;
    }
    if constexpr (with_offsets) sink.locate(base, origin);
    t.pre_tokenizer.run(input, sink);
  };
  scratch.raw_splits.clear();
  t.raw_matcher.split(text, scratch.raw_splits);
  for (const AddedSplit& raw : scratch.raw_splits) {
    if (raw.id >= 0) {
      add(raw.id, raw.begin);
      continue;
    }
    std::string_view piece = text.substr(raw.begin, raw.end - raw.begin);
    const bool normalized = !t.normalizer.empty();
    if (normalized) {
      if constexpr (with_offsets) {
        t.normalizer.apply_mapped(piece, scratch.normalized, scratch.normalized_origin);
      } else {
        t.normalizer.apply(piece, scratch.normalized);
      }
      piece = scratch.normalized;
    }
    const std::uint32_t* origin =
        with_offsets && normalized ? scratch.normalized_origin.data() : nullptr;
    if (t.normalized_matcher.empty()) {
      if (!piece.empty()) run(piece, raw.begin, origin, raw.begin == 0);
      continue;
    }
    scratch.normalized_splits.clear();
    t.normalized_matcher.split(piece, scratch.normalized_splits);
    for (const AddedSplit& split : scratch.normalized_splits) {
      if (split.id >= 0) {
        add(split.id, raw.begin + (origin ? origin[split.begin] : split.begin));
        continue;
      }
      const bool at_start = raw.begin == 0 && split.begin == 0;
      const std::string_view part = piece.substr(split.begin, split.end - split.begin);
      if (origin) {
        run(part, raw.begin, origin + split.begin, at_start);
      } else {
        run(part, raw.begin + split.begin, nullptr, at_start);
      }
    }
  }
}

void check_text(std::string_view text) {
  ANVIL_CHECK_INPUT(text.size() < std::numeric_limits<std::uint32_t>::max(),
                    "text to tokenize is larger than 4 GiB");
  const std::size_t bad = utf8_find_invalid(text);
  ANVIL_CHECK_INPUT(bad == std::string_view::npos, "text to tokenize is not valid UTF-8 (byte ",
                    bad, ")");
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
                     sentencepiece
                         ? " (only a SentencePiece tokenizer.model, which anvil does not read: "
                           "convert it to tokenizer.json, e.g. by loading the model's tokenizer "
                           "with transformers' AutoTokenizer (use_fast=True) and calling "
                           "save_pretrained)"
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
  check_text(text);
  if (add_special) out.insert(out.end(), t.prefix_ids.begin(), t.prefix_ids.end());
  encode_pipeline<false>(t, text, out, nullptr);
  if (add_special) out.insert(out.end(), t.suffix_ids.begin(), t.suffix_ids.end());
}

void Tokenizer::encode_append_offsets(std::string_view text, bool add_special,
                                      std::vector<std::int32_t>& ids,
                                      std::vector<std::uint32_t>& offsets) const {
  const Impl& t = *impl_;
  check_text(text);
  ANVIL_CHECK(offsets.size() == ids.size(), "encode_append_offsets: ids has ", ids.size(),
              " entries but offsets ", offsets.size());
  const auto end = static_cast<std::uint32_t>(text.size());
  if (add_special) {
    ids.insert(ids.end(), t.prefix_ids.begin(), t.prefix_ids.end());
    offsets.insert(offsets.end(), t.prefix_ids.size(), 0u);
  }
  encode_pipeline<true>(t, text, ids, &offsets);
  if (add_special) {
    ids.insert(ids.end(), t.suffix_ids.begin(), t.suffix_ids.end());
    offsets.insert(offsets.end(), t.suffix_ids.size(), end);
  }
}

std::string Tokenizer::decode(std::span<const std::int32_t> ids, bool skip_special) const {
  const Impl& t = *impl_;
  std::string bytes;
  bool first = true;
  std::vector<std::string> tokens;  // decoder_chain only
  for (const std::int32_t id : ids) {
    ANVIL_CHECK_INPUT(
        id >= 0 && static_cast<std::size_t>(id) < t.has_token.size() && t.has_token[id],
        "cannot decode id ", id, ": the tokenizer of ", t.label, " has no token with that id");
    if (skip_special && t.special[id]) continue;
    if (t.decoder == DecoderKind::decoder_chain) {
      tokens.push_back(t.decoded_of[id]);
      continue;
    }
    if (t.decoder == DecoderKind::decoder_none && !first) bytes.push_back(' ');
    bytes += t.decoded_of[id];
    first = false;
  }
  if (t.decoder == DecoderKind::decoder_chain) {
    decode_chain(t.decode_steps, tokens);
    for (const std::string& token : tokens) bytes += token;
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
