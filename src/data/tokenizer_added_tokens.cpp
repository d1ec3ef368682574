#include "data/tokenizer_added_tokens.h"

#include "core/error.h"
#include "data/pretokenize_regex.h"
#include "data/tokenizer_utf8.h"

namespace anvil::data {
namespace {

// Rust regex's Unicode \w, which HF's single_word test uses: Alphabetic, marks, decimal
// digits, connector punctuation and the two joiners. PCRE2 10.42 knows Unicode 14; the
// ranges are the marks and digits of Unicode 15 and 16 that Rust's tables hold (found by
// testing single_word against every code point in HF), the letters come with \p{L}.
const Regex& word_char_regex() {
  static const Regex regex = Regex::compile(
      R"([\p{Alphabetic}\p{L}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D})"
      R"(\x{0897}\x{0CF3}\x{0ECE}\x{10D40}-\x{10D49}\x{10D69}-\x{10D6D}\x{10EFC}-\x{10EFF})"
      R"(\x{11241}\x{113B8}-\x{113C0}\x{113C2}\x{113C5}\x{113C7}-\x{113CA}\x{113CC}-\x{113D0})"
      R"(\x{113D2}\x{113E1}-\x{113E2}\x{116D0}-\x{116E3}\x{11BF0}-\x{11BF9}\x{11F00}-\x{11F01})"
      R"(\x{11F03}\x{11F34}-\x{11F3A}\x{11F3E}-\x{11F42}\x{11F50}-\x{11F5A}\x{13440})"
      R"(\x{13447}-\x{13455}\x{1611E}-\x{16139}\x{16D70}-\x{16D79}\x{1CCF0}-\x{1CCF9})"
      R"(\x{1E08F}\x{1E4EC}-\x{1E4F9}\x{1E5EE}-\x{1E5EF}\x{1E5F1}-\x{1E5FA}])",
      "the added-token word test");
  return regex;
}

bool is_word_char_at(std::string_view text, std::size_t pos) {
  const auto b = static_cast<unsigned char>(text[pos]);
  if (b < 0x80) {
    return (b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || b == '_';
  }
  return word_char_regex().matches_at(text, pos);
}

std::size_t previous_char_start(std::string_view text, std::size_t pos) {
  do {
    --pos;
  } while (pos > 0 && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80);
  return pos;
}

}  // namespace

void AddedTokenMatcher::add(std::string_view pattern, const AddedToken& token) {
  ANVIL_CHECK(!pattern.empty(), "empty added-token pattern");
  std::int32_t node = 0;
  for (const char c : pattern) {
    const auto byte = static_cast<std::uint8_t>(c);
    std::int32_t child = -1;
    for (const auto& [b, index] : nodes_[node].children) {
      if (b == byte) child = index;
    }
    if (child < 0) {
      child = static_cast<std::int32_t>(nodes_.size());
      nodes_[node].children.emplace_back(byte, child);
      nodes_.emplace_back();
    }
    node = child;
  }
  first_byte_[static_cast<std::uint8_t>(pattern[0])] = true;
  nodes_[node].token = static_cast<std::int32_t>(tokens_.size());
  tokens_.push_back(token);
}

std::int32_t AddedTokenMatcher::longest_at(std::string_view text, std::size_t pos,
                                           std::size_t& length) const {
  std::int32_t best = -1;
  std::int32_t node = 0;
  for (std::size_t i = pos; i < text.size(); ++i) {
    const auto byte = static_cast<std::uint8_t>(text[i]);
    std::int32_t child = -1;
    for (const auto& [b, index] : nodes_[node].children) {
      if (b == byte) {
        child = index;
        break;
      }
    }
    if (child < 0) break;
    node = child;
    if (nodes_[node].token >= 0) {
      best = nodes_[node].token;
      length = i + 1 - pos;
    }
  }
  return best;
}

void AddedTokenMatcher::split(std::string_view text, std::vector<AddedSplit>& out) const {
  const auto n = static_cast<std::uint32_t>(text.size());
  if (tokens_.empty() || n == 0) {
    if (n > 0) out.push_back({0, n, -1});
    return;
  }
  std::uint32_t start_offset = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    if (!first_byte_[static_cast<std::uint8_t>(text[pos])]) {
      ++pos;
      continue;
    }
    std::size_t length = 0;
    const std::int32_t index = longest_at(text, pos, length);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = tokens_[index];
    std::size_t start = pos;
    std::size_t stop = pos + length;
    // The search goes on after this match even when the flags reject it (HF iterates
    // non-overlapping matches first, then filters).
    pos = stop;
    if (token.single_word) {
      const bool start_space =
          start == 0 || !is_word_char_at(text, previous_char_start(text, start));
      const bool stop_space = stop == text.size() || !is_word_char_at(text, stop);
      if (!start_space || !stop_space) continue;
    }
    if (token.lstrip) {
      std::size_t new_start = start;
      while (new_start > 0) {
        const std::size_t prev = previous_char_start(text, new_start);
        std::size_t probe = prev;
        if (!unicode_is_white_space(utf8_next(text, probe))) break;
        new_start = prev;
      }
      // Whitespace already taken by the previous match (its rstrip) stays there.
      start = std::max<std::size_t>(new_start, start_offset);
    }
    if (token.rstrip) {
      while (stop < text.size()) {
        std::size_t probe = stop;
        if (!unicode_is_white_space(utf8_next(text, probe))) break;
        stop = probe;
      }
    }
    if (start_offset < start) out.push_back({start_offset, static_cast<std::uint32_t>(start), -1});
    out.push_back({static_cast<std::uint32_t>(start), static_cast<std::uint32_t>(stop), token.id});
    start_offset = static_cast<std::uint32_t>(stop);
  }
  if (start_offset != n) out.push_back({start_offset, n, -1});
}

}  // namespace anvil::data
