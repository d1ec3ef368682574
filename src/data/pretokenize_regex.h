// Regexes of Hugging Face pre-tokenizers, run with PCRE2 (UTF, Unicode properties, JIT).
//
// tokenizer.json regexes are written for Oniguruma, the engine Hugging Face `tokenizers`
// runs them with. PCRE2 reads the same syntax for everything those files use ((?i:...),
// \p{L}, \p{N}, lookahead, possessive and lazy repeats); the few escapes whose meaning
// differs are rewritten by onig_to_pcre2 before compiling.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace anvil::data {

// A match [begin, end) as byte offsets into the searched text.
struct TextSpan {
  std::uint32_t begin = 0;
  std::uint32_t end = 0;
};

// Rewrites an Oniguruma pattern into a PCRE2 pattern with the same meaning:
//  - \s and \S become Unicode White_Space classes (PCRE2's \s also takes U+180E);
//  - \h and \H are hex digits in Oniguruma (horizontal space in PCRE2);
//  - \p{L} and \p{N} take the letters and numbers of Unicode 15 and 16 too (PCRE2 10.42
//    has Unicode 14 tables, HF's Oniguruma Unicode 16). Other properties (\p{Lu}, ...)
//    keep PCRE2's Unicode 14 meaning.
std::string onig_to_pcre2(std::string_view pattern);

// Escapes a literal string (a Split pre-tokenizer's "String" pattern) for PCRE2.
std::string regex_escape_literal(std::string_view literal);

class Regex {
 public:
  // Compiles `pattern` (Oniguruma syntax). `where` names the source in the user error
  // raised for a pattern PCRE2 cannot compile (file and JSON key).
  static Regex compile(std::string_view pattern, const std::string& where);

  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;
  ~Regex();

  // Appends every match in `text` (well-formed UTF-8) to `out`, left to right and
  // non-overlapping, with the iteration rule of Oniguruma's find_iter that HF uses: an
  // empty match right where the previous match ended is skipped.
  void find_all(std::string_view text, std::vector<TextSpan>& out) const;

  // Whether the pattern matches at text[pos] (anchored there); lookbehind sees text[..pos].
  bool matches_at(std::string_view text, std::size_t pos) const;

  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;
  struct Code;
  std::unique_ptr<Code> code_;
  std::string pattern_;
};

}  // namespace anvil::data
