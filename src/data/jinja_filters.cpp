// jinja2's builtin filters and tests that chat templates use, with transformers' tojson.
// A filter or test jinja2 has but this file does not is refused by name.
#include "data/jinja_eval.h"
#include "data/jinja_text.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace anvil::data::jinja {
namespace {

// attribute="a.b" (or an index) as jinja2's make_attrgetter resolves it.
Value attribute_of(Renderer& r, const Value& v, const std::string& path, int line) {
  Value cur = v;
  std::size_t from = 0;
  while (true) {
    std::size_t dot = path.find('.', from);
    std::string part = path.substr(from, dot == std::string::npos ? std::string::npos : dot - from);
    bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    cur = r.getitem(cur, digits ? Value::integer(std::stoll(part)) : Value::string(part), line);
    if (dot == std::string::npos) return cur;
    from = dot + 1;
  }
}

std::int64_t to_int(const Value& v) { return v.kind == Kind::integer ? v.i : v.kind == Kind::boolean ? v.b : 0; }

CallArgs shift_args(const CallArgs& a, std::size_t skip) {
  CallArgs out;
  out.line = a.line;
  if (a.pos.size() > skip) out.pos.assign(a.pos.begin() + static_cast<std::ptrdiff_t>(skip), a.pos.end());
  return out;
}

Value tojson(Renderer& r, const Value& v, CallArgs& a) {
  // transformers' signature: tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
  JsonStyle style;
  const Value* ascii = a.get(0, "ensure_ascii");
  const Value* indent = a.get(1, "indent");
  const Value* seps = a.get(2, "separators");
  const Value* sort = a.get(3, "sort_keys");
  style.ensure_ascii = ascii && truthy(*ascii);
  if (indent && indent->kind != Kind::none) {
    if (indent->kind != Kind::integer) r.fail(a.line, "unsupported template construct: tojson indent that is not an integer");
    style.indent = static_cast<int>(std::clamp<std::int64_t>(indent->i, 0, 64));
  }
  style.item_sep = style.indent >= 0 ? "," : ", ";
  style.key_sep = ": ";
  if (seps && seps->kind != Kind::none) {
    if (seps->kind != Kind::list || seps->list->size() != 2 || (*seps->list)[0].kind != Kind::string ||
        (*seps->list)[1].kind != Kind::string) {
      r.fail(a.line, "tojson separators must be a pair of strings");
    }
    style.item_sep = (*seps->list)[0].s;
    style.key_sep = (*seps->list)[1].s;
  }
  style.sort_keys = sort && truthy(*sort);
  std::string out, err;
  to_json_text(v, style, 0, out, err);
  if (!err.empty()) r.fail(a.line, "tojson: " + err);
  return Value::string(std::move(out));
}

// sort / dictsort / unique / groupby compare strings case-insensitively (str.lower) unless
// asked not to.
Value sort_key(const Value& v, bool case_sensitive) {
  if (case_sensitive || v.kind != Kind::string) return v;
  return Value::string(py_case(v.s, "lower"));
}

void sort_values(Renderer& r, List& l, bool reverse, const std::function<Value(const Value&)>& key, int line) {
  std::string err;
  std::stable_sort(l.begin(), l.end(), [&](const Value& x, const Value& y) {
    int c = compare(key(x), key(y), err);
    return reverse ? c > 0 : c < 0;
  });
  if (!err.empty()) r.fail(line, "sort: " + err);
}

// groupby(attribute, default=None, case_sensitive=False): the items sorted by the attribute,
// as (grouper, list) tuples of equal keys; a case-insensitive grouper is the first item's.
Value group_by(Renderer& r, const Value& v, CallArgs& a) {
  const Value* attr = a.get(0, "attribute");
  const Value* dflt = a.get(1, "default");
  const Value* cs = a.get(2, "case_sensitive");
  if (!attr) r.fail(a.line, "groupby() missing required argument 'attribute'");
  const bool case_sensitive = cs && truthy(*cs);
  auto attribute = [&](const Value& x) {
    Value k = attr->kind == Kind::integer ? r.getitem(x, *attr, a.line) : attribute_of(r, x, to_str(*attr), a.line);
    return k.is_undefined() && dflt && dflt->kind != Kind::none ? *dflt : k;
  };
  List items = r.iterate(v, a.line);
  sort_values(r, items, false, [&](const Value& x) { return sort_key(attribute(x), case_sensitive); }, a.line);
  List groups;
  for (std::size_t b = 0; b < items.size();) {
    const Value key = sort_key(attribute(items[b]), case_sensitive);
    std::size_t e = b + 1;
    while (e < items.size() && equal(sort_key(attribute(items[e]), case_sensitive), key)) ++e;
    List members(items.begin() + static_cast<std::ptrdiff_t>(b), items.begin() + static_cast<std::ptrdiff_t>(e));
    Value group = Value::make_list({attribute(items[b]), Value::make_list(std::move(members))}, true);
    group.group = true;
    groups.push_back(std::move(group));
    b = e;
  }
  return Value::make_list(std::move(groups));
}

Value round_value(Renderer& r, const Value& v, CallArgs& a) {
  if (!v.is_number()) r.fail(a.line, "round expects a number");
  const Value* prec = a.get(0, "precision");
  const Value* method = a.get(1, "method");
  std::int64_t p = prec ? to_int(*prec) : 0;
  std::string how = method && method->kind == Kind::string ? method->s : "common";
  double x = v.kind == Kind::floating ? v.f : static_cast<double>(to_int(v));
  double scale = std::pow(10.0, static_cast<double>(p));
  if (how == "ceil") return Value::floating(std::ceil(x * scale) / scale);
  if (how == "floor") return Value::floating(std::floor(x * scale) / scale);
  if (how != "common") r.fail(a.line, "round method must be common, ceil or floor");
  if (p < 0 || p > 30) r.fail(a.line, "unsupported template construct: round precision outside 0..30");
  char buf[512];  // printf rounds the exact binary value half-even, as Python's round does
  std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(p), x);
  return Value::floating(std::stod(buf));
}

Value indent_text(Renderer& r, const Value& v, CallArgs& a) {
  const Value* width = a.get(0, "width");
  const Value* first = a.get(1, "first");
  const Value* blank = a.get(2, "blank");
  std::string pad = width && width->kind == Kind::string ? width->s
                                                          : std::string(static_cast<std::size_t>(std::clamp<std::int64_t>(width ? to_int(*width) : 4, 0, 1024)), ' ');
  if (width && width->kind != Kind::string && width->kind != Kind::integer) r.fail(a.line, "indent width must be an int or str");
  auto lines = py_splitlines(to_str(v) + "\n");
  std::string out;
  for (std::size_t k = 0; k < lines.size(); ++k) {
    if (k) out += "\n";
    bool pad_it = k > 0 && (!lines[k].empty() || (blank && truthy(*blank)));
    if (pad_it) out += pad;
    out += lines[k];
  }
  if (first && truthy(*first)) out = pad + out;
  return Value::string(std::move(out));
}

// join, first, last, list, reverse, items: a sequence or mapping walked or rearranged.
Value sequence_filter(Renderer& r, const std::string& name, const Value& v, CallArgs& a, int line) {
  if (name == "join") {
    const Value* sep = a.get(0, "d");
    const Value* attr = a.get(1, "attribute");
    std::string out;
    List items = r.iterate(v, line);
    for (std::size_t k = 0; k < items.size(); ++k) {
      if (k) out += sep ? r.str(*sep, line) : "";
      out += r.str(attr ? attribute_of(r, items[k], to_str(*attr), line) : items[k], line);
    }
    return Value::string(std::move(out));
  }
  if (name == "first" || name == "last") {
    if (name == "last" && v.py_type == "generator") r.fail(line, "'generator' object is not reversible");
    List items = r.iterate(v, line);
    if (items.empty()) return Value::undefined("no " + name + " item, sequence was empty");
    return name == "first" ? items.front() : items.back();
  }
  if (name == "list") return Value::make_list(r.iterate(v, line));
  if (name == "reverse") {
    if (v.kind == Kind::string) {
      auto cps = utf8_decode(v.s);
      std::string out;
      for (auto it = cps.rbegin(); it != cps.rend(); ++it) utf8_append(*it, out);
      return Value::string(std::move(out));
    }
    List items = r.iterate(v, line);
    std::reverse(items.begin(), items.end());
    Value out = Value::generator(std::move(items));  // reversed(list): an iterator
    out.py_type = v.kind == Kind::list && v.py_type.empty() ? "list_reverseiterator" : "generator";
    return out;
  }
  if (name == "items") {
    if (v.is_undefined()) return Value::make_list({});
    if (v.kind != Kind::dict) r.fail(line, "items filter expects a mapping");
    List out;
    for (const auto& [k, x] : *v.dict) out.push_back(Value::make_list({dict_key_value(k), x}, true));
    return Value::generator(std::move(out));
  }
  // map, select, reject, selectattr, rejectattr are generators in jinja2, and yield nothing
  // for a false value (None included) without iterating it.
  r.fail(line, "unsupported template construct: filter '" + name + "'");
}

// map, select, reject, selectattr, rejectattr: generators over the items, as jinja2 returns.
Value map_select_filter(Renderer& r, const std::string& name, const Value& v, CallArgs& a, int line) {
  if (name == "map") {
    List out;
    if (!truthy(v)) return Value::generator({});
    const Value* attr = a.get(99, "attribute");
    if (attr) {
      const Value* dflt = a.get(99, "default");
      for (const auto& x : r.iterate(v, line)) {
        Value got = attribute_of(r, x, to_str(*attr), line);
        out.push_back(got.is_undefined() && dflt ? *dflt : got);
      }
      return Value::generator(std::move(out));
    }
    if (a.pos.empty() || a.pos[0].kind != Kind::string) r.fail(line, "map needs a filter name or attribute=");
    CallArgs rest = shift_args(a, 1);
    for (const auto& x : r.iterate(v, line)) out.push_back(r.filter(a.pos[0].s, x, rest, line));
    return Value::generator(std::move(out));
  }
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    bool by_attr = name == "selectattr" || name == "rejectattr";
    bool keep_if = name == "select" || name == "selectattr";
    std::size_t test_at = by_attr ? 1 : 0;
    if (by_attr && (a.pos.empty() || a.pos[0].kind != Kind::string)) r.fail(line, name + " needs an attribute name");
    bool has_test = a.pos.size() > test_at;
    if (has_test && a.pos[test_at].kind != Kind::string) r.fail(line, name + ": the test must be named by a string");
    CallArgs rest = shift_args(a, test_at + 1);
    List out;
    if (!truthy(v)) return Value::generator({});
    for (const auto& x : r.iterate(v, line)) {
      Value subject = by_attr ? attribute_of(r, x, a.pos[0].s, line) : x;
      bool ok = has_test ? r.test(a.pos[test_at].s, subject, rest, line) : truthy(subject);
      if (ok == keep_if) out.push_back(x);
    }
    return Value::generator(std::move(out));
  }
  r.fail(line, "unsupported template construct: filter '" + name + "'");
}

// int, float, abs: Python's conversions; sum.
Value number_filter(Renderer& r, const std::string& name, const Value& v, CallArgs& a, int line) {
  if (name == "int") {
    const Value* dflt = a.get(0, "default");
    Value fallback = dflt ? *dflt : Value::integer(0);
    if (v.kind == Kind::integer || v.kind == Kind::boolean) return Value::integer(to_int(v));
    if (v.kind == Kind::floating) return std::isfinite(v.f) ? Value::integer(static_cast<std::int64_t>(v.f)) : fallback;
    if (v.kind == Kind::string) {
      std::string t = py_strip(v.s, nullptr, true, true);
      try {
        std::size_t used = 0;
        long long x = std::stoll(t, &used, 10);
        if (used == t.size()) return Value::integer(x);
        double d = std::stod(t, &used);
        if (used == t.size() && std::isfinite(d)) return Value::integer(static_cast<std::int64_t>(d));
      } catch (const std::exception&) {
      }
    }
    return fallback;
  }
  if (name == "float") {
    const Value* dflt = a.get(0, "default");
    if (v.is_number()) return Value::floating(v.kind == Kind::floating ? v.f : static_cast<double>(to_int(v)));
    if (v.kind == Kind::string) {
      try {
        std::size_t used = 0;
        std::string t = py_strip(v.s, nullptr, true, true);
        double d = std::stod(t, &used);
        if (used == t.size()) return Value::floating(d);
      } catch (const std::exception&) {
      }
    }
    return dflt ? *dflt : Value::floating(0.0);
  }
  if (name == "abs") {
    if (v.kind == Kind::floating) return Value::floating(std::fabs(v.f));
    if (v.kind == Kind::integer || v.kind == Kind::boolean) {
      if (to_int(v) == INT64_MIN) r.fail(line, "integer overflow");
      return Value::integer(std::llabs(to_int(v)));
    }
    r.fail(line, std::string("bad operand type for abs(): '") + kind_name(v.kind) + "'");
  }
  if (name == "sum") {
    const Value* attr = a.get(0, "attribute");
    const Value* start = a.get(1, "start");
    double f = 0;
    std::int64_t i = start ? to_int(*start) : 0;
    bool is_float = start && start->kind == Kind::floating;
    if (is_float) f = start->f;
    for (const auto& x0 : r.iterate(v, line)) {
      Value x = attr ? attribute_of(r, x0, to_str(*attr), line) : x0;
      if (!x.is_number()) r.fail(line, "sum of non-numbers");
      if (x.kind == Kind::floating && !is_float) is_float = true, f = static_cast<double>(i);
      if (is_float) f += x.kind == Kind::floating ? x.f : static_cast<double>(to_int(x));
      else if (__builtin_add_overflow(i, to_int(x), &i)) r.fail(line, "integer overflow");
    }
    return is_float ? Value::floating(f) : Value::integer(i);
  }
  r.fail(line, "unsupported template construct: filter '" + name + "'");
}

// unique, sort, dictsort, min, max: items compared as Python compares them.
Value ordering_filter(Renderer& r, const std::string& name, const Value& v, CallArgs& a, int line) {
  if (name == "unique" || name == "sort" || name == "dictsort") {
    const Value* cs = a.get(name == "sort" ? 1 : 0, "case_sensitive");
    bool case_sensitive = cs && truthy(*cs);
    if (name == "dictsort") {
      if (v.kind != Kind::dict) r.fail(line, "dictsort expects a mapping");
      const Value* by = a.get(1, "by");
      const Value* rev = a.get(2, "reverse");
      int pos = by && by->kind == Kind::string && by->s == "value" ? 1 : 0;
      List out;
      for (const auto& [k, x] : *v.dict) out.push_back(Value::make_list({dict_key_value(k), x}, true));
      sort_values(r, out, rev && truthy(*rev), [&](const Value& x) { return sort_key((*x.list)[pos], case_sensitive); }, line);
      return Value::make_list(std::move(out));
    }
    const Value* attr = a.get(name == "sort" ? 2 : 1, "attribute");
    auto key = [&](const Value& x) { return sort_key(attr ? attribute_of(r, x, to_str(*attr), line) : x, case_sensitive); };
    List items = r.iterate(v, line);
    if (name == "sort") {
      const Value* rev = a.get(0, "reverse");
      sort_values(r, items, rev && truthy(*rev), key, line);
      return Value::make_list(std::move(items));
    }
    List out, seen;
    for (const auto& x : items) {
      Value k = key(x);
      if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return equal(s, k); })) {
        seen.push_back(k);
        out.push_back(x);
      }
    }
    return Value::generator(std::move(out));
  }
  if (name == "min" || name == "max") {
    const Value* cs = a.get(0, "case_sensitive");
    const Value* attr = a.get(1, "attribute");
    List items = r.iterate(v, line);
    if (items.empty()) return Value::undefined("no " + name + " item, sequence was empty");
    auto key = [&](const Value& x) { return sort_key(attr ? attribute_of(r, x, to_str(*attr), line) : x, cs && truthy(*cs)); };
    std::string err;
    std::size_t best = 0;
    for (std::size_t k = 1; k < items.size(); ++k) {
      int c = compare(key(items[k]), key(items[best]), err);
      if (name == "min" ? c < 0 : c > 0) best = k;
    }
    if (!err.empty()) r.fail(line, name + ": " + err);
    return items[best];
  }
  r.fail(line, "unsupported template construct: filter '" + name + "'");
}

}  // namespace

Value Renderer::filter(const std::string& name, const Value& v, CallArgs& a, int line) {
  charge(1 + (v.kind == Kind::list ? v.list->size() : v.kind == Kind::string ? v.s.size() / 64 : 0), line);
  auto arg = [&](std::size_t k, const char* n) { return a.get(k, n); };
  // Filters that keep a Markup a Markup (markupsafe's str methods return Markup).
  auto same_kind = [&](Value out) {
    out.markup = v.kind == Kind::string && v.markup;
    return out;
  };
  if (name == "safe" || name == "e" || name == "escape" || name == "forceescape") {
    bool already = v.kind == Kind::string && v.markup && name != "forceescape";
    Value out = Value::string(name == "safe" || already ? str(v, line) : html_escape(str(v, line)));
    out.markup = true;
    return out;
  }
  if (name == "string") return same_kind(Value::string(str(v, line)));
  if (name == "tojson") return tojson(*this, v, a);
  if (name == "trim") {
    const Value* chars = arg(0, "chars");
    return same_kind(Value::string(py_strip(to_str(v), chars && chars->kind == Kind::string ? &chars->s : nullptr, true, true)));
  }
  if (name == "length" || name == "count") {
    if (v.py_type == "generator") fail(line, "object of type 'generator' has no len()");
    if (v.kind == Kind::string) return Value::integer(static_cast<std::int64_t>(utf8_decode(v.s).size()));
    if (v.kind == Kind::list) return Value::integer(static_cast<std::int64_t>(v.list->size()));
    if (v.kind == Kind::dict || v.kind == Kind::ns) return Value::integer(static_cast<std::int64_t>((v.dict ? *v.dict : *v.ns).size()));
    if (v.is_undefined()) return Value::integer(0);
    fail(line, std::string("object of type '") + kind_name(v.kind) + "' has no len()");
  }
  if (name == "default" || name == "d") {
    const Value* dflt = arg(0, "default_value");
    const Value* boolean = arg(1, "boolean");
    bool use = v.is_undefined() || (boolean && truthy(*boolean) && !truthy(v));
    return use ? (dflt ? *dflt : Value::string("")) : v;
  }
  if (name == "upper" || name == "lower" || name == "capitalize") return same_kind(Value::string(py_case(to_str(v), name)));
  if (name == "title") return Value::string(py_case(to_str(v), "jinja_title"));
  if (name == "replace") {
    const Value* old = arg(0, "old");
    const Value* with = arg(1, "new");
    const Value* count = arg(2, "count");
    if (!old || !with) fail(line, "replace needs old and new");
    return Value::string(py_replace(to_str(v), to_str(*old), to_str(*with), count && count->kind == Kind::integer ? count->i : -1));
  }
  if (name == "join" || name == "first" || name == "last" || name == "list" || name == "reverse" || name == "items")
    return sequence_filter(*this, name, v, a, line);
  if (name == "map" || name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr")
    return map_select_filter(*this, name, v, a, line);
  if (name == "int" || name == "float" || name == "abs" || name == "sum")
    return number_filter(*this, name, v, a, line);
  if (name == "round") return round_value(*this, v, a);
  if (name == "indent") return same_kind(indent_text(*this, v, a));
  if (name == "wordcount") {
    std::int64_t n = 0;
    bool in_word = false;
    for (std::uint32_t c : utf8_decode(to_str(v))) {
      bool w = c == '_' || (c >= '0' && c <= '9') || (c < 0x80 ? ((c | 32) >= 'a' && (c | 32) <= 'z') : !is_py_space(c));
      if (w && !in_word) ++n;
      in_word = w;
    }
    return Value::integer(n);
  }
  if (name == "unique" || name == "sort" || name == "dictsort" || name == "min" || name == "max")
    return ordering_filter(*this, name, v, a, line);
  if (name == "groupby") return group_by(*this, v, a);
  if (name == "attr") {
    const Value* n = arg(0, "name");
    if (!n || n->kind != Kind::string) fail(line, "attr needs a name");
    return getattr(v, n->s, line);
  }
  fail(line, "unsupported template construct: filter '" + name + "'");
}

bool Renderer::test(const std::string& name, const Value& v, CallArgs& a, int line) {
  const Value* other = a.get(0, "value");
  auto need = [&]() -> const Value& {
    if (!other) fail(line, "test '" + name + "' needs an argument");
    return *other;
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.kind == Kind::none;
  if (name == "string") return v.kind == Kind::string;
  if (name == "mapping") return v.kind == Kind::dict && !v.fn;
  if (name == "iterable") return v.kind == Kind::list || v.kind == Kind::dict || v.kind == Kind::string || v.is_undefined();
  if (name == "sequence") return v.kind == Kind::list || v.kind == Kind::dict || v.kind == Kind::string || v.is_undefined();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.kind == Kind::integer;
  if (name == "float") return v.kind == Kind::floating;
  if (name == "boolean") return v.kind == Kind::boolean;
  if (name == "true") return v.kind == Kind::boolean && v.b;
  if (name == "false") return v.kind == Kind::boolean && !v.b;
  if (name == "callable") return v.fn != nullptr;
  if (name == "lower" || name == "upper") {
    std::string s = to_str(v);
    return py_is(s, name == "lower" ? "islower" : "isupper", *this, line);
  }
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (v.kind != Kind::integer && v.kind != Kind::boolean) fail(line, "test '" + name + "' expects an integer");
    std::int64_t x = to_int(v);
    if (name == "divisibleby") {
      std::int64_t d = to_int(need());
      if (d == 0) fail(line, "integer division or modulo by zero");
      return d == -1 || x % d == 0;
    }
    return (x % 2 != 0) == (name == "odd");
  }
  if (name == "sameas") {
    const Value& o = need();
    if (v.kind != o.kind) return false;
    if (v.kind == Kind::none || v.kind == Kind::undefined) return true;
    if (v.kind == Kind::boolean) return v.b == o.b;
    if (v.kind == Kind::list) return v.list == o.list;
    if (v.kind == Kind::dict) return v.dict == o.dict;
    return equal(v, o);  // ints and strings: CPython interns the small ones templates compare
  }
  if (name == "eq" || name == "equalto" || name == "==") return equal(v, need());
  if (name == "ne" || name == "!=") return !equal(v, need());
  if (name == "lt" || name == "<" || name == "lessthan" || name == "gt" || name == ">" || name == "greaterthan" ||
      name == "le" || name == "<=" || name == "ge" || name == ">=") {
    std::string err;
    int c = compare(v, need(), err);
    if (!err.empty()) fail(line, "test '" + name + "': " + err);
    if (name == "lt" || name == "<" || name == "lessthan") return c < 0;
    if (name == "gt" || name == ">" || name == "greaterthan") return c > 0;
    return name == "le" || name == "<=" ? c <= 0 : c >= 0;
  }
  if (name == "in") {
    const Value& c = need();
    if (c.kind == Kind::string) {
      if (v.kind != Kind::string) fail(line, "'in <string>' requires string as left operand, not " + std::string(kind_name(v.kind)));
      return c.s.find(v.s) != std::string::npos;
    }
    if (c.kind == Kind::list) {
      List items = iterate(c, line);
      return std::any_of(items.begin(), items.end(), [&](const Value& x) { return equal(x, v); });
    }
    if (c.kind == Kind::dict || c.kind == Kind::ns) {
      return v.kind != Kind::list && v.kind != Kind::dict && c.find(dict_key(v.kind == Kind::boolean ? Value::integer(v.b) : v)) != nullptr;
    }
    if (c.is_undefined()) return false;
    fail(line, std::string("argument of type '") + kind_name(c.kind) + "' is not iterable");
  }
  if (name == "escaped") return false;
  fail(line, "unsupported template construct: test '" + name + "'");
}

}  // namespace anvil::data::jinja
