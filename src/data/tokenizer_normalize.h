// The normalizers tokenizer.json files name: the Unicode forms (NFC, NFD, NFKC, NFKD, via
// utf8proc) and the literal rewrites of SentencePiece-style tokenizers (Prepend, Replace).
//
// Besides the normalized text, apply_mapped gives each normalized byte's position in the
// original text, from which encode_append_offsets reports offsets into the caller's text:
//  - Prepend: the prepended bytes stand at the start of the text; Replace: the bytes of a
//    replacement stand where the replaced match began. Both exact.
//  - Unicode forms: the text is cut before each character that starts a new combining
//    sequence (a starter that cannot compose with what precedes it); each such segment
//    is normalized on its own. A segment with as many characters as before (unchanged,
//    or marks reordered) maps character k to the original's character k, as HF's
//    alignments do; in one whose characters change in number (é composed or decomposed,
//    ﬁ -> fi), the characters it shares with the original at either end keep their
//    places and the rest stand where the first changed character began. If
//    the segments do not add up to the whole text's normalization (a composition across
//    a cut this rule did not foresee), positions are spread proportionally instead:
//    approximate, but never decreasing.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace anvil::data {

enum class NormalizerKind {
  norm_nfc,
  norm_nfd,
  norm_nfkc,
  norm_nfkd,
  norm_prepend,  // `content` in front of a non-empty text
  norm_replace,  // every occurrence of the literal `pattern` becomes `content`
};

struct NormalizeStep {
  NormalizerKind kind = NormalizerKind::norm_nfc;
  std::string pattern;
  std::string content;
};

// Whether anvil was built with a Unicode normalization library (utf8proc).
bool unicode_normalization_available();

// A chain of normalizations applied in order. ASCII text skips the Unicode forms (they
// leave it as it is), which is most of the text in practice.
class Normalizer {
 public:
  Normalizer() = default;
  explicit Normalizer(std::vector<NormalizeStep> steps) : steps_(std::move(steps)) {}
  bool empty() const { return steps_.empty(); }

  // Writes normalize(text) to out (text must be well-formed UTF-8).
  void apply(std::string_view text, std::string& out) const;

  // The same, and origin[k] = the byte of `text` that out[k] comes from (see above).
  // origin gets out.size() entries, never decreasing.
  void apply_mapped(std::string_view text, std::string& out,
                    std::vector<std::uint32_t>& origin) const;

 private:
  std::vector<NormalizeStep> steps_;
};

}  // namespace anvil::data
