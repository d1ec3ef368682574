// Python's printf-style formatting, str % args: %s %r %d %i %u %x %X %o %e %E %f %F %g %G
// %c %%, with flags (- + space # 0), width and precision (or *), %(key)s from a mapping.
#include "data/jinja_eval.h"
#include "data/jinja_text.h"

#include <cmath>
#include <cstdio>
#include <optional>
#include <string_view>

namespace anvil::data::jinja {
namespace {

struct Spec {
  bool left = false, plus = false, space = false, alt = false, zero = false;
  std::int64_t width = 0, precision = -1;
  char conv = 0;
};

// The values a format consumes: a tuple's items in order, else the one right operand. A
// dict or list operand is also a mapping for %(key)s (Python's PyMapping_Check).
class FormatArgs {
 public:
  explicit FormatArgs(const Value& v) : v_(v) {
    if (v.kind == Kind::list && v.tuple) items_ = *v.list;
    else items_.push_back(v);
    mapping_ = v.kind == Kind::dict || (v.kind == Kind::list && !v.tuple && v.py_type.empty());
  }
  const Value& next(const Renderer& r, int line) {
    if (used_ >= items_.size()) r.fail(line, "not enough arguments for format string");
    return items_[used_++];
  }
  Value by_key(Renderer& r, const std::string& key, int line) const {
    if (v_.kind != Kind::dict) r.fail(line, "format requires a mapping");
    const Value* x = v_.find(dict_key(Value::string(key)));
    if (!x) r.fail(line, "KeyError: " + to_repr(Value::string(key)));
    return *x;
  }
  // Python refuses arguments left over, except a mapping's.
  bool left_over() const { return !mapping_ && used_ < items_.size(); }

 private:
  const Value& v_;
  List items_;
  std::size_t used_ = 0;
  bool mapping_ = false;
};

// Flags, width and precision of the spec at fmt[at] (after the '%' and any "(key)").
Spec parse_spec(const std::vector<std::uint32_t>& fmt, std::size_t& at, FormatArgs& args, const Renderer& r, int line) {
  Spec sp;
  for (; at < fmt.size(); ++at) {
    const std::uint32_t c = fmt[at];
    if (c == '-') sp.left = true;
    else if (c == '+') sp.plus = true;
    else if (c == ' ') sp.space = true;
    else if (c == '#') sp.alt = true;
    else if (c == '0') sp.zero = true;
    else break;
  }
  auto number = [&](std::int64_t& out) {
    if (at < fmt.size() && fmt[at] == '*') {
      const Value& v = args.next(r, line);
      if (v.kind != Kind::integer && v.kind != Kind::boolean) r.fail(line, "* wants int");
      out = v.kind == Kind::integer ? v.i : v.b;
      ++at;
      return;
    }
    for (out = 0; at < fmt.size() && fmt[at] >= '0' && fmt[at] <= '9'; ++at) {
      out = out * 10 + (fmt[at] - '0');
      if (out > 1'000'000) r.fail(line, "width too big");
    }
  };
  number(sp.width);
  if (sp.width < 0) sp.left = true, sp.width = -sp.width;
  if (at < fmt.size() && fmt[at] == '.') {
    ++at;
    number(sp.precision);
    if (sp.precision < 0) sp.precision = 0;
  }
  while (at < fmt.size() && (fmt[at] == 'h' || fmt[at] == 'l' || fmt[at] == 'L')) ++at;
  if (at == fmt.size()) r.fail(line, "incomplete format");
  sp.conv = fmt[at] < 0x80 ? static_cast<char>(fmt[at]) : '?';
  if (std::string_view("sradiuxXoeEfFgGc%").find(sp.conv) == std::string_view::npos) {
    std::string ch;
    utf8_append(fmt[at], ch);
    char code[32];
    std::snprintf(code, sizeof code, "(0x%x) at index %zu", fmt[at], at);
    r.fail(line, "unsupported format character '" + ch + "' " + code);
  }
  ++at;
  return sp;
}

// Python's padding of a number: sign and prefix stay in front of zeros.
std::string pad_number(const Spec& sp, bool negative, const std::string& prefix, const std::string& digits) {
  const std::string sign = negative ? "-" : sp.plus ? "+" : sp.space ? " " : "";
  const std::size_t len = sign.size() + prefix.size() + digits.size();
  const std::size_t fill = sp.width > static_cast<std::int64_t>(len) ? static_cast<std::size_t>(sp.width) - len : 0;
  if (sp.left) return sign + prefix + digits + std::string(fill, ' ');
  if (sp.zero) return sign + prefix + std::string(fill, '0') + digits;
  return std::string(fill, ' ') + sign + prefix + digits;
}

std::string format_int(const Spec& sp, const Value& v, const Renderer& r, int line) {
  const bool integral_only = sp.conv == 'x' || sp.conv == 'X' || sp.conv == 'o';
  if (!v.is_number() || (integral_only && v.kind == Kind::floating))
    r.fail(line, std::string("%") + sp.conv + " format: " + (integral_only ? "an integer" : "a real number") +
                     " is required, not " + kind_name(v.kind));
  if (v.kind == Kind::floating && !std::isfinite(v.f)) r.fail(line, "cannot convert float infinity or NaN to integer");
  if (v.kind == Kind::floating && std::fabs(v.f) >= 9.2e18) r.fail(line, "integer overflow (64-bit)");
  const std::int64_t x = v.kind == Kind::integer ? v.i : v.kind == Kind::boolean ? v.b : static_cast<std::int64_t>(v.f);
  const unsigned long long mag = x < 0 ? 0ULL - static_cast<unsigned long long>(x) : static_cast<unsigned long long>(x);
  char buf[32];
  std::snprintf(buf, sizeof buf, sp.conv == 'x' ? "%llx" : sp.conv == 'X' ? "%llX" : sp.conv == 'o' ? "%llo" : "%llu", mag);
  std::string digits = buf;
  if (sp.precision > static_cast<std::int64_t>(digits.size()))
    digits.insert(0, static_cast<std::size_t>(sp.precision) - digits.size(), '0');
  const std::string prefix = !sp.alt || !integral_only ? "" : sp.conv == 'o' ? "0o" : sp.conv == 'x' ? "0x" : "0X";
  return pad_number(sp, x < 0, prefix, digits);
}

std::string format_float(const Spec& sp, const Value& v, const Renderer& r, int line) {
  if (!v.is_number()) r.fail(line, std::string("must be real number, not ") + kind_name(v.kind));
  const double x = v.kind == Kind::floating ? v.f : static_cast<double>(v.kind == Kind::integer ? v.i : v.b);
  const std::string fmt = std::string(sp.alt ? "%#.*" : "%.*") + sp.conv;
  const int precision = static_cast<int>(std::min<std::int64_t>(sp.precision < 0 ? 6 : sp.precision, 300));
  char buf[512];  // %f of 1e308 at precision 300 is 610 chars: cut, but such a format is refused below
  if (std::snprintf(buf, sizeof buf, fmt.c_str(), precision, std::fabs(x)) >= static_cast<int>(sizeof buf))
    r.fail(line, "formatted number too long");
  return pad_number(sp, std::signbit(x) && !std::isnan(x), "", buf);
}

// A string conversion (%s %r %c) padded by code points; precision cuts it.
std::string format_text(const Spec& sp, const Value& v, Renderer& r, int line) {
  std::string s;
  if (sp.conv == 'c') {
    if (v.kind == Kind::string && utf8_decode(v.s).size() == 1) s = v.s;
    else if (v.kind == Kind::integer && v.i >= 0 && v.i <= 0x10FFFF) utf8_append(static_cast<std::uint32_t>(v.i), s);
    else r.fail(line, "%c requires an int in range(0x110000) or a single character");
  } else if (sp.conv == 'a') {
    r.fail(line, "unsupported template construct: '%a' formatting (ascii())");
  } else if (sp.conv == 'r') {
    if (!v.py_type.empty()) r.fail(line, "unsupported template construct: repr of a " + v.py_type);
    s = to_repr(v);
  } else {
    s = r.str(v, line);
  }
  std::vector<std::uint32_t> cps = utf8_decode(s);
  if (sp.precision >= 0 && static_cast<std::size_t>(sp.precision) < cps.size()) {
    cps.resize(static_cast<std::size_t>(sp.precision));
    s.clear();
    for (std::uint32_t c : cps) utf8_append(c, s);
  }
  const std::size_t fill = sp.width > static_cast<std::int64_t>(cps.size()) ? static_cast<std::size_t>(sp.width) - cps.size() : 0;
  return sp.left ? s + std::string(fill, ' ') : std::string(fill, ' ') + s;
}

}  // namespace

std::string py_percent_format(Renderer& r, const std::string& format, const Value& operand, int line) {
  const std::vector<std::uint32_t> fmt = utf8_decode(format);
  FormatArgs args(operand);
  std::string out;
  for (std::size_t at = 0; at < fmt.size();) {
    if (fmt[at] != '%') {
      utf8_append(fmt[at++], out);
      continue;
    }
    ++at;
    std::optional<Value> keyed;
    if (at < fmt.size() && fmt[at] == '(') {
      std::size_t depth = 1, b = ++at;
      for (; at < fmt.size() && depth > 0; ++at) depth += fmt[at] == '(' ? 1 : fmt[at] == ')' ? -1 : 0;
      if (depth > 0) r.fail(line, "incomplete format key");
      std::string key;
      for (std::size_t k = b; k + 1 < at; ++k) utf8_append(fmt[k], key);
      keyed = args.by_key(r, key, line);
    }
    const Spec sp = parse_spec(fmt, at, args, r, line);
    if (sp.conv == '%') {
      out += '%';
      continue;
    }
    const Value& v = keyed ? *keyed : args.next(r, line);
    if (std::string_view("diuxXo").find(sp.conv) != std::string_view::npos) out += format_int(sp, v, r, line);
    else if (std::string_view("eEfFgG").find(sp.conv) != std::string_view::npos) out += format_float(sp, v, r, line);
    else out += format_text(sp, v, r, line);
    r.charge(1, line);
    if (out.size() > r.max_output()) r.fail(line, "formatted string too large");
  }
  if (args.left_over()) r.fail(line, "not all arguments converted during string formatting");
  return out;
}

}  // namespace anvil::data::jinja
