// UTF-8 helpers for the tokenizer: validation, lossy decoding, code point stepping, and
// the Unicode normalizers (NFC, NFD, NFKC, NFKD) that tokenizer.json files name.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace anvil::data {

// Byte offset of the first byte that does not start a well-formed UTF-8 sequence, or
// std::string_view::npos when the whole text is well formed.
std::size_t utf8_find_invalid(std::string_view text);

// Appends `bytes` to `out`, replacing each maximal ill-formed subsequence with U+FFFD, the
// way Hugging Face's decoders (Rust's String::from_utf8_lossy) do, so decode matches them.
void utf8_append_lossy(std::string_view bytes, std::string& out);

// Decodes the code point starting at text[i] (text must be well formed) and moves i past it.
char32_t utf8_next(std::string_view text, std::size_t& i);

void utf8_append(char32_t code_point, std::string& out);

// Unicode White_Space, the meaning of `\s` in the regex engines Hugging Face uses.
bool unicode_is_white_space(char32_t code_point);

enum class NormalizerKind { norm_nfc, norm_nfd, norm_nfkc, norm_nfkd };

// Whether anvil was built with a Unicode normalization library (utf8proc).
bool unicode_normalization_available();

// A chain of Unicode normalizations applied in order. ASCII text is returned unchanged
// without calling into the library, which is most of the text in practice.
class Normalizer {
 public:
  Normalizer() = default;
  explicit Normalizer(std::vector<NormalizerKind> steps) : steps_(std::move(steps)) {}
  bool empty() const { return steps_.empty(); }
  // Writes normalize(text) to out (text must be well-formed UTF-8).
  void apply(std::string_view text, std::string& out) const;

 private:
  std::vector<NormalizerKind> steps_;
};

}  // namespace anvil::data
