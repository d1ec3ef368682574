// Pre-tokenizers of byte-level BPE tokenizers: Split (regex or literal), Digits, ByteLevel,
// and Sequence (a chain of those). They cut normalized text into the pieces ("words")
// that BPE merges independently.
//
// Pieces stay raw UTF-8 bytes: the ByteLevel byte-to-character mapping is not applied
// here, because the BPE model works on bytes directly (see bpe_model.h). That is why
// ByteLevel must be the last step of a chain.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "data/pretokenize_regex.h"

namespace anvil::data {

// How a Split step treats the matched delimiters (HF SplitDelimiterBehavior).
enum class SplitBehavior {
  split_removed,
  split_isolated,
  split_merged_with_previous,
  split_merged_with_next,
  split_contiguous,
};

enum class PreTokenizeKind {
  // Split: a regex, `behavior`, `invert`. Digits is loaded as a Split on single \p{N}
  // characters (isolated or contiguous): that is exactly how HF defines it.
  pretok_split,
  // ByteLevel: optional prefix space, then optionally a split by the GPT-2 regex.
  pretok_byte_level,
};

struct PreTokenizeStep {
  PreTokenizeKind kind = PreTokenizeKind::pretok_split;
  std::shared_ptr<const Regex> regex;  // null for ByteLevel with use_regex = false
  SplitBehavior behavior = SplitBehavior::split_isolated;
  bool invert = false;
  bool add_prefix_space = false;  // ByteLevel only
};

// The text rewrite of a Metaspace pre-tokenizer (SentencePiece-style tokenizers): every
// space becomes `replacement` ("▁"), and a replacement is put in front of a text that
// does not start with one: always, never, or only for the text at the very start of
// what is encoded ("first": not after an added token). Its split (merged with next, on
// the replacement) is a Split step of the chain; this runs before the chain.
struct MetaspaceRewrite {
  enum class Prepend { prepend_always, prepend_first, prepend_never };
  std::string replacement = "\xE2\x96\x81";
  Prepend prepend = Prepend::prepend_always;

  // out = the rewritten text; origin (when not null) = for each byte of out, the byte of
  // `text` it comes from (a prepended replacement: byte 0).
  void apply(std::string_view text, bool at_start, std::string& out,
             std::vector<std::uint32_t>* origin) const;
};

// The GPT-2 pattern that ByteLevel splits with when use_regex is true.
extern const char* const gpt2_pretokenize_pattern;

// Where a piece's bytes stand in the text given to PreTokenizer::run. Piece byte i is at
// offset + (i - lead), or at offset for the `lead` bytes the pre-tokenizer put in front of
// the text (ByteLevel's prefix space).
struct PieceOrigin {
  std::uint32_t offset = 0;
  std::uint32_t lead = 0;

  std::uint32_t at(std::size_t i) const {
    return offset + (i < lead ? 0u : static_cast<std::uint32_t>(i) - lead);
  }
  // The origin of the sub-piece that starts at byte `begin` of this piece.
  PieceOrigin sub(std::uint32_t begin) const {
    return begin < lead ? PieceOrigin{offset, lead - begin} : PieceOrigin{offset + begin - lead, 0};
  }
};

// Receives the final pieces of a pre-tokenizer chain, in text order.
class PieceSink {
 public:
  virtual void on_piece(std::string_view piece, PieceOrigin origin) = 0;

 protected:
  ~PieceSink() = default;
};

class PreTokenizer {
 public:
  PreTokenizer() = default;
  explicit PreTokenizer(std::vector<PreTokenizeStep> steps) : steps_(std::move(steps)) {}

  // Runs the chain on `text` (well-formed UTF-8) and hands each non-empty piece to sink.
  // Pieces are produced depth first, so they are only valid during on_piece.
  void run(std::string_view text, PieceSink& sink) const;

  // The pieces as strings: for tests and tools, not the hot path.
  std::vector<std::string> pieces(std::string_view text) const;

 private:
  void run_from(std::size_t step, std::string_view text, PieceOrigin origin,
                PieceSink& sink) const;
  std::vector<PreTokenizeStep> steps_;
};

}  // namespace anvil::data
