#include "data/jinja_text.h"

#include "data/jinja_eval.h"

namespace anvil::data::jinja {
namespace {

std::string encode(const std::vector<std::uint32_t>& cps, std::size_t b, std::size_t e) {
  std::string out;
  for (std::size_t k = b; k < e; ++k) utf8_append(cps[k], out);
  return out;
}

bool is_ascii_alpha(std::uint32_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
std::uint32_t up(std::uint32_t c) { return c >= 'a' && c <= 'z' ? c - 32 : c; }
std::uint32_t down(std::uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }
// Letters outside ASCII whose case Python would change: refused (we do not carry Unicode's
// case tables). Symbols, CJK and emoji have no case and pass.
bool may_have_case(std::uint32_t c) {
  return (c >= 0xB5 && c < 0x250) || (c >= 0x370 && c < 0x530) || (c >= 0x1E00 && c < 0x2000) ||
         (c >= 0x2C00 && c < 0x2D30) || (c >= 0xA640 && c < 0xA800) || (c >= 0xFF21 && c < 0xFF5B) ||
         (c >= 0x10400 && c < 0x10450) || (c >= 0x1E900 && c < 0x1E950) || (c >= 0x10A0 && c < 0x1100) ||
         (c >= 0x13A0 && c < 0x1400) || (c >= 0x2160 && c < 0x2190) || (c >= 0x24B6 && c < 0x24EA);
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

std::string py_case(const std::string& s, const std::string& how, const Renderer& r, int line) {
  auto cps = utf8_decode(s);
  for (std::uint32_t c : cps) {
    if (may_have_case(c)) r.fail(line, "unsupported template construct: " + how + " of non-ASCII letters");
  }
  std::string out;
  bool word_start = true;
  for (std::size_t k = 0; k < cps.size(); ++k) {
    std::uint32_t c = cps[k];
    std::uint32_t o = c;
    if (how == "upper") o = up(c);
    else if (how == "lower") o = down(c);
    else if (how == "capitalize") o = k == 0 ? up(c) : down(c);
    else if (how == "title") {  // str.title: a letter after a non-letter starts a word
      o = word_start ? up(c) : down(c);
      word_start = !is_ascii_alpha(c);
    } else {  // jinja2's title filter: words begin after runs of "-", whitespace, "(", "{", "[", "<"
      o = word_start ? up(c) : down(c);
      word_start = c == '-' || is_py_space(c) || c == '(' || c == '{' || c == '[' || c == '<';
    }
    utf8_append(o, out);
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
