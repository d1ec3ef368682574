#include "data/tokenizer_normalize.h"

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <numeric>

#include "core/error.h"
#include "data/tokenizer_utf8.h"

#ifdef ANVIL_HAVE_UTF8PROC
#include <utf8proc.h>
#endif

namespace anvil::data {
namespace {

bool is_unicode_form(NormalizerKind kind) {
  return kind != NormalizerKind::norm_prepend && kind != NormalizerKind::norm_replace;
}

#ifdef ANVIL_HAVE_UTF8PROC
std::string unicode_normalize(NormalizerKind kind, std::string_view text) {
  int options = UTF8PROC_STABLE;
  switch (kind) {
    case NormalizerKind::norm_nfc:
      options |= UTF8PROC_COMPOSE;
      break;
    case NormalizerKind::norm_nfd:
      options |= UTF8PROC_DECOMPOSE;
      break;
    case NormalizerKind::norm_nfkc:
      options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
      break;
    case NormalizerKind::norm_nfkd:
      options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
      break;
    default:
      ANVIL_CHECK(false, "not a Unicode normalization form");
  }
  utf8proc_uint8_t* result = nullptr;
  const utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                   static_cast<utf8proc_ssize_t>(text.size()), &result,
                   static_cast<utf8proc_option_t>(options));
  std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owned(result, &std::free);
  ANVIL_CHECK(n >= 0, "utf8proc normalization failed: ", utf8proc_errmsg(n));
  return std::string(reinterpret_cast<const char*>(result), static_cast<std::size_t>(n));
}

// Whether normalization can be done on each side of a cut before `cp` separately: `cp` is
// a starter (combining class 0) and not the second half of a canonical composition (the
// Hangul vowels and final consonants, and a few Indic vowel signs and length marks).
bool starts_segment(char32_t cp) {
  if (cp < 0x300) return true;
  if ((cp >= 0x1161 && cp <= 0x1175) || (cp >= 0x11A8 && cp <= 0x11C2)) return false;
  switch (cp) {
    case 0x09BE: case 0x09D7: case 0x0B3E: case 0x0B56: case 0x0B57: case 0x0BBE:
    case 0x0BD7: case 0x0C56: case 0x0CC2: case 0x0CD5: case 0x0CD6: case 0x0D3E:
    case 0x0D57: case 0x0DCF: case 0x0DDF: case 0x102E: case 0x1B35: case 0x11127:
    case 0x1133E: case 0x11357: case 0x114B0: case 0x114BA: case 0x114BD: case 0x115AF:
    case 0x11930:
      return false;
    default:
      return utf8proc_get_property(static_cast<utf8proc_int32_t>(cp))->combining_class == 0;
  }
}
#else
std::string unicode_normalize(NormalizerKind, std::string_view text) {
  // The loader refuses Unicode normalizers in a build without utf8proc.
  ANVIL_CHECK(false, "Unicode normalization needs anvil built with utf8proc");
  return std::string(text);
}

bool starts_segment(char32_t) { return true; }
#endif

std::size_t char_start(std::string_view text, std::size_t i) {
  while (i > 0 && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) --i;
  return i;
}

std::vector<std::size_t> char_starts(std::string_view text) {
  std::vector<std::size_t> starts;
  for (std::size_t i = 0; i < text.size(); utf8_next(text, i)) starts.push_back(i);
  return starts;
}

// Positions of one normalized segment (see the header). As many characters as the
// original (unchanged, or marks reordered): the k-th character stands at the original's
// k-th, as HF aligns them. Otherwise the characters both share at the start and at the
// end keep their places, and the ones between stand where the first changed character
// of the original begins.
void map_segment(std::string_view original, std::string_view normalized, std::uint32_t begin,
                 std::vector<std::uint32_t>& origin) {
  const std::vector<std::size_t> from = char_starts(original);
  const std::vector<std::size_t> to = char_starts(normalized);
  auto char_size = [](const std::vector<std::size_t>& starts, std::string_view text,
                      std::size_t k) {
    return (k + 1 < starts.size() ? starts[k + 1] : text.size()) - starts[k];
  };
  if (from.size() == to.size()) {
    for (std::size_t k = 0; k < to.size(); ++k) {
      const std::size_t n = char_size(to, normalized, k);
      const bool same_size = n == char_size(from, original, k);
      for (std::size_t b = 0; b < n; ++b) {
        origin.push_back(begin + static_cast<std::uint32_t>(from[k] + (same_size ? b : 0)));
      }
    }
    return;
  }
  std::size_t head = 0;  // characters both start with
  while (head < from.size() && head < to.size() &&
         original.substr(from[head], char_size(from, original, head)) ==
             normalized.substr(to[head], char_size(to, normalized, head))) {
    ++head;
  }
  std::size_t tail = 0;  // characters both end with, after the head
  while (head + tail < from.size() && head + tail < to.size()) {
    const std::size_t f = from.size() - 1 - tail;
    const std::size_t t = to.size() - 1 - tail;
    if (original.substr(from[f], char_size(from, original, f)) !=
        normalized.substr(to[t], char_size(to, normalized, t))) {
      break;
    }
    ++tail;
  }
  const std::size_t changed = head < from.size() ? from[head] : original.size();
  for (std::size_t k = 0; k < to.size(); ++k) {
    std::size_t at = changed;
    if (k < head) {
      at = from[k];
    } else if (k >= to.size() - tail) {
      at = from[from.size() - (to.size() - k)];
    }
    const std::size_t n = char_size(to, normalized, k);
    const bool kept = k < head || k >= to.size() - tail;
    for (std::size_t b = 0; b < n; ++b) {
      origin.push_back(begin + static_cast<std::uint32_t>(at + (kept ? b : 0)));
    }
  }
}

// One Unicode form with positions (see the header): out = normalize(text).
void unicode_mapped(NormalizerKind kind, std::string_view text, std::string& out,
                    std::vector<std::uint32_t>& origin) {
  out = unicode_normalize(kind, text);
  origin.clear();
  if (out == text) {
    origin.resize(out.size());
    std::iota(origin.begin(), origin.end(), 0u);
    return;
  }
  std::string joined;
  joined.reserve(out.size());
  std::size_t begin = 0;
  while (begin < text.size()) {
    std::size_t end = begin;
    utf8_next(text, end);
    while (end < text.size()) {
      std::size_t next = end;
      if (starts_segment(utf8_next(text, next))) break;
      end = next;
    }
    const std::string_view segment = text.substr(begin, end - begin);
    const std::size_t at = joined.size();
    if (utf8_is_ascii(segment)) {
      joined.append(segment);
    } else {
      joined += unicode_normalize(kind, segment);
    }
    map_segment(segment, std::string_view(joined).substr(at), static_cast<std::uint32_t>(begin),
                origin);
    begin = end;
  }
  if (joined == out) return;
  origin.resize(out.size());
  for (std::size_t k = 0; k < out.size(); ++k) {
    origin[k] = static_cast<std::uint32_t>(char_start(text, k * text.size() / out.size()));
  }
}

void replace_mapped(const NormalizeStep& step, std::string_view text, std::string& out,
                    std::vector<std::uint32_t>* origin) {
  out.clear();
  if (origin) origin->clear();
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t hit = text.find(step.pattern, i);
    const std::size_t stop = hit == std::string_view::npos ? text.size() : hit;
    out.append(text.substr(i, stop - i));
    if (origin) {
      for (std::size_t k = i; k < stop; ++k) origin->push_back(static_cast<std::uint32_t>(k));
    }
    if (hit == std::string_view::npos) break;
    out.append(step.content);
    if (origin) origin->insert(origin->end(), step.content.size(), static_cast<std::uint32_t>(hit));
    i = hit + step.pattern.size();
  }
}

void prepend_mapped(const NormalizeStep& step, std::string_view text, std::string& out,
                    std::vector<std::uint32_t>* origin) {
  out.clear();
  if (!text.empty()) out = step.content;
  out.append(text);
  if (origin) {
    origin->assign(out.size(), 0u);
    std::iota(origin->begin() + static_cast<std::ptrdiff_t>(out.size() - text.size()),
              origin->end(), 0u);
  }
}

}  // namespace

#ifdef ANVIL_HAVE_UTF8PROC
bool unicode_normalization_available() { return true; }
#else
bool unicode_normalization_available() { return false; }
#endif

void Normalizer::apply(std::string_view text, std::string& out) const {
  if (steps_.size() == 1 && is_unicode_form(steps_[0].kind) && utf8_is_ascii(text)) {
    out.assign(text);
    return;
  }
  std::string current(text);
  for (const NormalizeStep& step : steps_) {
    switch (step.kind) {
      case NormalizerKind::norm_prepend:
        prepend_mapped(step, current, out, nullptr);
        break;
      case NormalizerKind::norm_replace:
        replace_mapped(step, current, out, nullptr);
        break;
      default:
        // Every normalization form leaves ASCII as it is.
        if (utf8_is_ascii(current)) continue;
        out = unicode_normalize(step.kind, current);
        break;
    }
    current.swap(out);
  }
  out = std::move(current);
}

void Normalizer::apply_mapped(std::string_view text, std::string& out,
                              std::vector<std::uint32_t>& origin) const {
  std::string current(text);
  origin.resize(text.size());
  std::iota(origin.begin(), origin.end(), 0u);
  std::vector<std::uint32_t> step_origin;
  for (const NormalizeStep& step : steps_) {
    switch (step.kind) {
      case NormalizerKind::norm_prepend:
        prepend_mapped(step, current, out, &step_origin);
        break;
      case NormalizerKind::norm_replace:
        replace_mapped(step, current, out, &step_origin);
        break;
      default:
        if (utf8_is_ascii(current)) continue;
        unicode_mapped(step.kind, current, out, step_origin);
        break;
    }
    // Compose: out[k] comes from current[step_origin[k]], which comes from text[origin[...]].
    for (std::uint32_t& p : step_origin) p = origin[p];
    origin.swap(step_origin);
    current.swap(out);
  }
  out = std::move(current);
}

}  // namespace anvil::data
