#include "data/tokenizer_utf8.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace anvil::data {
namespace {

// The well-formed sequences of Unicode Table 3-7: a lead byte fixes the number of
// continuation bytes and the range allowed for the first of them (which rules out
// overlong forms, surrogates and code points past U+10FFFF).
struct LeadInfo {
  int continuation = -1;  // -1: not a lead byte
  std::uint8_t lo = 0x80;
  std::uint8_t hi = 0xBF;
};

LeadInfo lead_info(std::uint8_t b) {
  if (b >= 0xC2 && b <= 0xDF) return {1, 0x80, 0xBF};
  if (b == 0xE0) return {2, 0xA0, 0xBF};
  if (b == 0xED) return {2, 0x80, 0x9F};
  if (b >= 0xE1 && b <= 0xEF) return {2, 0x80, 0xBF};
  if (b == 0xF0) return {3, 0x90, 0xBF};
  if (b >= 0xF1 && b <= 0xF3) return {3, 0x80, 0xBF};
  if (b == 0xF4) return {3, 0x80, 0x8F};
  return {};
}

// Length of the longest prefix of text[i..] that is the start of a well-formed
// sequence (the "maximal subpart"), and whether it is complete.
std::size_t sequence_prefix(std::string_view text, std::size_t i, bool& complete) {
  const auto b = static_cast<std::uint8_t>(text[i]);
  const LeadInfo info = lead_info(b);
  complete = false;
  if (info.continuation < 0) return 1;
  std::size_t j = i + 1;
  if (j >= text.size()) return 1;
  const auto b1 = static_cast<std::uint8_t>(text[j]);
  if (b1 < info.lo || b1 > info.hi) return 1;
  ++j;
  for (int k = 1; k < info.continuation; ++k) {
    if (j >= text.size()) return j - i;
    const auto bk = static_cast<std::uint8_t>(text[j]);
    if (bk < 0x80 || bk > 0xBF) return j - i;
    ++j;
  }
  complete = true;
  return j - i;
}

// Index of the first non-ASCII byte at or after i, eight bytes at a time.
std::size_t skip_ascii(std::string_view text, std::size_t i) {
  const std::size_t n = text.size();
  while (i + 8 <= n) {
    std::uint64_t w;
    std::memcpy(&w, text.data() + i, 8);
    if (w & 0x8080808080808080ULL) break;
    i += 8;
  }
  while (i < n && static_cast<std::uint8_t>(text[i]) < 0x80) ++i;
  return i;
}

}  // namespace

bool utf8_is_ascii(std::string_view text) { return skip_ascii(text, 0) == text.size(); }

std::size_t utf8_find_invalid(std::string_view text) {
  std::size_t i = 0;
  while (true) {
    i = skip_ascii(text, i);
    if (i >= text.size()) return std::string_view::npos;
    bool complete = false;
    const std::size_t len = sequence_prefix(text, i, complete);
    if (!complete) return i;
    i += len;
  }
}

void utf8_append_lossy(std::string_view bytes, std::string& out) {
  static constexpr std::string_view replacement = "\xEF\xBF\xBD";
  std::size_t i = 0;
  while (i < bytes.size()) {
    const std::size_t ascii_end = skip_ascii(bytes, i);
    out.append(bytes.substr(i, ascii_end - i));
    i = ascii_end;
    if (i >= bytes.size()) break;
    bool complete = false;
    const std::size_t len = sequence_prefix(bytes, i, complete);
    if (complete) {
      out.append(bytes.substr(i, len));
    } else {
      out.append(replacement);
    }
    i += len;
  }
}

char32_t utf8_next(std::string_view text, std::size_t& i) {
  const auto b = static_cast<std::uint8_t>(text[i]);
  if (b < 0x80) {
    ++i;
    return b;
  }
  int extra = b >= 0xF0 ? 3 : b >= 0xE0 ? 2 : 1;
  char32_t cp = b & (0x3F >> extra);
  ++i;
  for (int k = 0; k < extra && i < text.size(); ++k, ++i) {
    cp = (cp << 6) | (static_cast<std::uint8_t>(text[i]) & 0x3F);
  }
  return cp;
}

void utf8_append(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool unicode_is_white_space(char32_t c) {
  // The White_Space property list (PropList.txt); stable across Unicode versions.
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}


}  // namespace anvil::data
