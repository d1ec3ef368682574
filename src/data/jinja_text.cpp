#include "data/jinja_text.h"

#include "data/jinja_case_table.h"
#include "data/jinja_eval.h"

#include <algorithm>
#include <iterator>
#include <span>

namespace anvil::data::jinja {
namespace {

std::string encode(const std::vector<std::uint32_t>& cps, std::size_t b, std::size_t e) {
  std::string out;
  for (std::size_t k = b; k < e; ++k) utf8_append(cps[k], out);
  return out;
}

bool is_ascii_alpha(std::uint32_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

bool in_ranges(std::span<const CodeRange> ranges, std::uint32_t c) {
  auto it = std::upper_bound(ranges.begin(), ranges.end(), c, [](std::uint32_t x, const CodeRange& r) { return x < r.first; });
  return it != ranges.begin() && c <= std::prev(it)->last;
}
bool is_cased(std::uint32_t c) { return in_ranges(case_tables().cased, c); }
bool is_case_ignorable(std::uint32_t c) { return in_ranges(case_tables().case_ignorable, c); }

// Appends c's mapping from one case's tables; false when they do not map c.
bool map_case(std::span<const CaseRun> runs, std::span<const CaseSpecial> specials, std::uint32_t c, std::string& out) {
  auto sp = std::lower_bound(specials.begin(), specials.end(), c, [](const CaseSpecial& x, std::uint32_t v) { return x.cp < v; });
  if (sp != specials.end() && sp->cp == c) {
    out += sp->text;
    return true;
  }
  auto it = std::upper_bound(runs.begin(), runs.end(), c, [](std::uint32_t x, const CaseRun& r) { return x < r.first; });
  if (it == runs.begin()) return false;
  const CaseRun& r = *std::prev(it);
  if (c > r.last || (c - r.first) % r.stride != 0) return false;
  utf8_append(static_cast<std::uint32_t>(static_cast<std::int64_t>(c) + r.delta), out);
  return true;
}

void append_upper(std::uint32_t c, std::string& out) {
  const CaseTables& t = case_tables();
  if (!map_case(t.upper, t.upper_special, c, out)) utf8_append(c, out);
}
void append_title(std::uint32_t c, std::string& out) {
  const CaseTables& t = case_tables();
  if (!map_case(t.title, t.title_special, c, out)) append_upper(c, out);
}

// cps[i], a capital sigma, ends a word (Python's lower() then writes a final sigma): a
// cased letter before it and none after it, skipping case-ignorable ones, within [b, e).
bool is_final_sigma(const std::vector<std::uint32_t>& cps, std::size_t b, std::size_t e, std::size_t i) {
  std::size_t j = i;
  while (j > b && is_case_ignorable(cps[j - 1])) --j;
  if (j == b || !is_cased(cps[j - 1])) return false;
  std::size_t k = i + 1;
  while (k < e && is_case_ignorable(cps[k])) ++k;
  return k == e || !is_cased(cps[k]);
}

// cps[i] lowered as str.lower() lowers it inside the string cps[b, e).
void append_lower(const std::vector<std::uint32_t>& cps, std::size_t b, std::size_t e, std::size_t i, std::string& out) {
  constexpr std::uint32_t kCapitalSigma = 0x3A3, kFinalSigma = 0x3C2;
  const CaseTables& t = case_tables();
  if (cps[i] == kCapitalSigma && is_final_sigma(cps, b, e, i)) utf8_append(kFinalSigma, out);
  else if (!map_case(t.lower, t.lower_special, cps[i], out)) utf8_append(cps[i], out);
}

// jinja2's title filter starts a word after a run of "-", whitespace, "(", "{", "[", "<".
bool is_title_separator(std::uint32_t c) {
  return c == '-' || is_py_space(c) || c == '(' || c == '{' || c == '[' || c == '<';
}

}  // namespace

std::string py_strip(const std::string& s, const std::string* chars, bool left, bool right) {
  auto cps = utf8_decode(s);
  std::vector<std::uint32_t> set;
  if (chars) set = utf8_decode(*chars);
  auto strip_it = [&](std::uint32_t c) {
    if (!chars) return is_py_space(c);
    for (std::uint32_t x : set) {
      if (x == c) return true;
    }
    return false;
  };
  std::size_t b = 0, e = cps.size();
  if (left) while (b < e && strip_it(cps[b])) ++b;
  if (right) while (e > b && strip_it(cps[e - 1])) --e;
  return encode(cps, b, e);
}

std::vector<std::string> py_split(const std::string& s, const std::string* sep, std::int64_t maxsplit) {
  std::vector<std::string> out;
  if (sep) {
    std::size_t from = 0;
    for (std::size_t p = s.find(*sep); p != std::string::npos && (maxsplit < 0 || static_cast<std::int64_t>(out.size()) < maxsplit);
         p = s.find(*sep, from)) {
      out.push_back(s.substr(from, p - from));
      from = p + sep->size();
    }
    out.push_back(s.substr(from));
    return out;
  }
  auto cps = utf8_decode(s);
  std::size_t k = 0;
  while (true) {
    while (k < cps.size() && is_py_space(cps[k])) ++k;
    if (k == cps.size()) break;
    if (maxsplit >= 0 && static_cast<std::int64_t>(out.size()) == maxsplit) {
      std::size_t e = cps.size();
      while (e > k && is_py_space(cps[e - 1])) --e;
      out.push_back(encode(cps, k, e));
      break;
    }
    std::size_t b = k;
    while (k < cps.size() && !is_py_space(cps[k])) ++k;
    out.push_back(encode(cps, b, k));
  }
  return out;
}

// str.splitlines(): the line breaks Python recognises, without keeping them.
std::vector<std::string> py_splitlines(const std::string& s) {
  auto cps = utf8_decode(s);
  std::vector<std::string> out;
  std::size_t b = 0;
  for (std::size_t k = 0; k < cps.size(); ++k) {
    std::uint32_t c = cps[k];
    bool brk = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || (c >= 0x1C && c <= 0x1E) || c == 0x85 ||
               c == 0x2028 || c == 0x2029;
    if (!brk) continue;
    out.push_back(encode(cps, b, k));
    if (c == '\r' && k + 1 < cps.size() && cps[k + 1] == '\n') ++k;
    b = k + 1;
  }
  if (b < cps.size()) out.push_back(encode(cps, b, cps.size()));
  return out;
}

std::string py_replace(const std::string& s, const std::string& old, const std::string& with, std::int64_t count) {
  std::string out;
  if (old.empty()) {  // Python inserts `with` around every code point
    auto cps = utf8_decode(s);
    std::int64_t n = 0;
    for (std::size_t k = 0; k <= cps.size(); ++k) {
      if (count < 0 || n < count) out += with, ++n;
      if (k < cps.size()) utf8_append(cps[k], out);
    }
    return out;
  }
  std::size_t from = 0;
  std::int64_t n = 0;
  for (std::size_t p = s.find(old); p != std::string::npos && (count < 0 || n < count); p = s.find(old, from), ++n) {
    out.append(s, from, p - from);
    out += with;
    from = p + old.size();
  }
  out.append(s, from, std::string::npos);
  return out;
}

std::string py_case(const std::string& s, const std::string& how) {
  const auto cps = utf8_decode(s);
  const std::size_t n = cps.size();
  std::string out;
  if (how == "upper") {
    for (std::uint32_t c : cps) append_upper(c, out);
  } else if (how == "lower") {
    for (std::size_t k = 0; k < n; ++k) append_lower(cps, 0, n, k, out);
  } else if (how == "capitalize") {  // the first in title case (Python >= 3.8), the rest lower
    for (std::size_t k = 0; k < n; ++k) k == 0 ? append_title(cps[k], out) : append_lower(cps, 0, n, k, out);
  } else if (how == "title") {  // str.title: a letter after an uncased character starts a word
    bool after_cased = false;
    for (std::size_t k = 0; k < n; ++k) {
      after_cased ? append_lower(cps, 0, n, k, out) : append_title(cps[k], out);
      after_cased = is_cased(cps[k]);
    }
  } else {  // jinja2's title filter: per word, word[0].upper() + word[1:].lower()
    for (std::size_t b = 0; b < n;) {
      const bool sep = is_title_separator(cps[b]);
      std::size_t e = b + 1;
      while (e < n && is_title_separator(cps[e]) == sep) ++e;
      append_upper(cps[b], out);
      for (std::size_t k = b + 1; k < e; ++k) append_lower(cps, b + 1, e, k, out);
      b = e;
    }
  }
  return out;
}

bool py_is(const std::string& s, const std::string& what, const Renderer& r, int line) {
  auto cps = utf8_decode(s);
  if (cps.empty()) return false;
  bool any_cased = false;
  for (std::uint32_t c : cps) {
    if (c >= 0x80 && what != "isspace") r.fail(line, "unsupported template construct: str." + what + "() of non-ASCII text");
    bool digit = c >= '0' && c <= '9';
    if (what == "isdigit" && !digit) return false;
    if (what == "isspace" && !is_py_space(c)) return false;
    if (what == "isalpha" && !is_ascii_alpha(c)) return false;
    if (what == "isalnum" && !is_ascii_alpha(c) && !digit) return false;
    if (what == "islower" && c >= 'A' && c <= 'Z') return false;
    if (what == "isupper" && c >= 'a' && c <= 'z') return false;
    any_cased = any_cased || is_ascii_alpha(c);
  }
  return (what == "islower" || what == "isupper") ? any_cased : true;
}

}  // namespace anvil::data::jinja
