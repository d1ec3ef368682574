// Python's binary operators on template values (arithmetic on 64-bit ints and doubles,
// str and list concatenation and repetition, printf-style '%' formatting) and slicing.
#include "data/jinja_eval.h"
#include "data/jinja_text.h"

#include <algorithm>
#include <cmath>
#include <optional>

namespace anvil::data::jinja {
namespace {

// a op b on int64, where Python would go on into big integers: refused instead.
template <typename Op>
std::int64_t checked(Op op, std::int64_t a, std::int64_t b, const Renderer& rr, int line) {
  std::int64_t r = 0;
  if (op(a, b, &r)) rr.fail(line, "integer overflow (Python ints are unbounded; this renderer's are 64-bit)");
  return r;
}
constexpr auto add = [](std::int64_t a, std::int64_t b, std::int64_t* r) { return __builtin_add_overflow(a, b, r); };
constexpr auto sub = [](std::int64_t a, std::int64_t b, std::int64_t* r) { return __builtin_sub_overflow(a, b, r); };
constexpr auto mul = [](std::int64_t a, std::int64_t b, std::int64_t* r) { return __builtin_mul_overflow(a, b, r); };

double num(const Value& v) { return v.kind == Kind::floating ? v.f : v.kind == Kind::integer ? static_cast<double>(v.i) : v.b; }
std::int64_t inum(const Value& v) { return v.kind == Kind::integer ? v.i : v.b; }

// a op b on two numbers (a bool counts as an int), as Python computes it; nullopt for an
// operator that is not arithmetic.
std::optional<Value> arith(const Renderer& r, const std::string& op, const Value& a, const Value& b, int line) {
  bool fl = a.kind == Kind::floating || b.kind == Kind::floating;
  std::int64_t x = inum(a), y = inum(b);
  if (op == "/") {
    if (num(b) == 0) r.fail(line, "division by zero");
    return Value::floating(num(a) / num(b));
  }
  if (fl) {
    double p = num(a), q = num(b);
    if (op == "+") return Value::floating(p + q);
    if (op == "-") return Value::floating(p - q);
    if (op == "*") return Value::floating(p * q);
    if (op == "**") return Value::floating(std::pow(p, q));
    if (q == 0) r.fail(line, "float division by zero");
    double fq = std::floor(p / q);
    if (op == "//") return Value::floating(fq);
    if (op == "%") {
      double m = std::fmod(p, q);
      if (m != 0 && ((m < 0) != (q < 0))) m += q;
      return Value::floating(m);
    }
  }
  if (op == "+") return Value::integer(checked(add, x, y, r, line));
  if (op == "-") return Value::integer(checked(sub, x, y, r, line));
  if (op == "*") return Value::integer(checked(mul, x, y, r, line));
  if (op == "//" || op == "%") {
    if (y == 0) r.fail(line, "integer division or modulo by zero");
    if (x == INT64_MIN && y == -1) r.fail(line, "integer overflow");
    std::int64_t q = x / y, m = x % y;
    if (m != 0 && ((m < 0) != (y < 0))) --q, m += y;
    return Value::integer(op == "//" ? q : m);
  }
  if (op == "**") {
    if (y < 0) return Value::floating(std::pow(num(a), num(b)));
    std::int64_t acc = 1;
    if (x == 0 || x == 1 || x == -1) return Value::integer(y == 0 ? 1 : x == -1 ? (y % 2 ? -1 : 1) : x);
    for (std::int64_t k = 0; k < y; ++k) acc = checked(mul, acc, x, r, line);  // overflows within 63 steps
    return Value::integer(acc);
  }
  return std::nullopt;
}

}  // namespace

Value Renderer::eval_binary(const Node& n, const Value& a, const Value& b) {
  const std::string& op = n.name;
  if (op == "~") return Value::string(str(a, n.line) + str(b, n.line));
  check_defined(a, n.line);
  check_defined(b, n.line);
  if (a.is_number() && b.is_number()) {
    if (auto v = arith(*this, op, a, b, n.line)) return *v;
  }
  if (op == "%" && a.kind == Kind::string) {
    if (a.markup) fail(n.line, "unsupported template construct: '%' formatting of a |safe (Markup) string");
    return Value::string(py_percent_format(*this, a.s, b, n.line));
  }
  if (op == "+" && a.kind == Kind::string && b.kind == Kind::string) {
    if (!a.markup && !b.markup) return Value::string(a.s + b.s);
    Value out = Value::string((a.markup ? a.s : html_escape(a.s)) + (b.markup ? b.s : html_escape(b.s)));
    out.markup = true;
    return out;
  }
  if (op == "+" && a.kind == Kind::list && b.kind == Kind::list && a.tuple == b.tuple) {
    List l = *a.list;
    l.insert(l.end(), b.list->begin(), b.list->end());
    return Value::make_list(std::move(l), a.tuple);
  }
  if (op == "*" && (a.kind == Kind::string || a.kind == Kind::list) && (b.kind == Kind::integer || b.kind == Kind::boolean)) {
    std::int64_t times = std::max<std::int64_t>(0, inum(b));
    std::size_t unit = a.kind == Kind::string ? a.s.size() : a.list->size();
    if (unit * static_cast<std::size_t>(times) > opt_.max_output_bytes) fail(n.line, "repetition result too large");
    charge(unit * static_cast<std::size_t>(times), n.line);
    if (a.kind == Kind::string) {
      std::string s;
      for (std::int64_t k = 0; k < times; ++k) s += a.s;
      Value out = Value::string(std::move(s));
      out.markup = a.markup;
      return out;
    }
    List l;
    for (std::int64_t k = 0; k < times; ++k) l.insert(l.end(), a.list->begin(), a.list->end());
    return Value::make_list(std::move(l), a.tuple);
  }
  fail(n.line, "unsupported operand type(s) for " + op + ": '" + kind_name(a.kind) + "' and '" + kind_name(b.kind) + "'");
}

// Python's slice semantics on a list or on a string's code points.
Value Renderer::eval_slice(const Node& n, const ScopePtr& scope) {
  Value target = eval(*n.kids[0], scope);
  check_defined(target, n.line);
  if (!target.py_type.empty()) fail(n.line, "'" + target.py_type + "' object is not subscriptable");
  std::int64_t bound[3] = {0, 0, 1};
  bool given[3] = {false, false, false};
  for (int k = 0; k < 3; ++k) {
    if (!n.kids[k + 1]) continue;
    Value v = eval(*n.kids[k + 1], scope);
    if (v.kind == Kind::none) continue;
    if (v.kind != Kind::integer && v.kind != Kind::boolean) fail(n.line, "slice indices must be integers or None");
    bound[k] = inum(v);
    given[k] = true;
  }
  std::int64_t step = given[2] ? bound[2] : 1;
  if (step == 0) fail(n.line, "slice step cannot be zero");
  std::vector<std::uint32_t> cps;
  if (target.kind == Kind::string) cps = utf8_decode(target.s);
  else if (target.kind != Kind::list) fail(n.line, std::string("'") + kind_name(target.kind) + "' object is not subscriptable");
  const std::int64_t len = target.kind == Kind::string ? static_cast<std::int64_t>(cps.size()) : static_cast<std::int64_t>(target.list->size());
  auto clamp = [&](std::int64_t x, bool has, std::int64_t dflt) {
    if (!has) return dflt;
    if (x < 0) x += len;
    if (step > 0) return std::clamp<std::int64_t>(x, 0, len);
    return std::clamp<std::int64_t>(x, -1, len - 1);
  };
  std::int64_t start = clamp(bound[0], given[0], step > 0 ? 0 : len - 1);
  std::int64_t stop = clamp(bound[1], given[1], step > 0 ? len : -1);
  std::string s;
  List l;
  for (std::int64_t k = start; step > 0 ? k < stop : k > stop; k += step) {
    if (target.kind == Kind::string) utf8_append(cps[static_cast<std::size_t>(k)], s);
    else l.push_back((*target.list)[static_cast<std::size_t>(k)]);
  }
  if (target.kind == Kind::string) return Value::string(std::move(s));
  return Value::make_list(std::move(l), target.tuple);
}

}  // namespace anvil::data::jinja
