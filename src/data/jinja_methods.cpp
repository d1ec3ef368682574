// Attribute and item access (jinja2's sandboxed getattr/getitem), the methods of str,
// list and dict that templates call, and the globals transformers defines.
#include "data/jinja_eval.h"
#include "data/jinja_text.h"

#include <chrono>
#include <cstdio>
#include <ctime>

namespace anvil::data::jinja {
namespace {

Value no_attribute(const Value& obj, const std::string& name) {
  return Value::undefined(std::string("'") + kind_name(obj.kind) + " object' has no attribute '" + name + "'");
}

std::string arg_string(Renderer& r, const CallArgs& a, std::size_t index, const char* name, const char* what) {
  const Value* v = a.get(index, name);
  if (v == nullptr || v->kind != Kind::string) r.fail(a.line, std::string(what) + " expects a string argument");
  return v->s;
}

// str.format with "{}", "{0}" and "{name}" fields (no format spec or conversion).
std::string py_format(const std::string& s, Renderer& r, const CallArgs& a) {
  std::string out;
  std::size_t auto_index = 0;
  for (std::size_t k = 0; k < s.size(); ++k) {
    char c = s[k];
    if ((c == '{' || c == '}') && k + 1 < s.size() && s[k + 1] == c) {
      out += c;
      ++k;
      continue;
    }
    if (c == '}') r.fail(a.line, "str.format: single '}' encountered in format string");
    if (c != '{') {
      out += c;
      continue;
    }
    std::size_t end = s.find('}', k);
    if (end == std::string::npos) r.fail(a.line, "str.format: single '{' encountered in format string");
    std::string field = s.substr(k + 1, end - k - 1);
    if (field.find_first_of(":!.[{") != std::string::npos) {
      r.fail(a.line, "unsupported template construct: str.format field '{" + field + "}'");
    }
    const Value* v = nullptr;
    if (field.empty()) {
      v = auto_index < a.pos.size() ? &a.pos[auto_index] : nullptr;
      ++auto_index;
    } else if (field.find_first_not_of("0123456789") == std::string::npos) {
      std::size_t i = std::stoul(field);
      v = i < a.pos.size() ? &a.pos[i] : nullptr;
    } else {
      for (const auto& [kn, kv] : a.kw) {
        if (kn == field) v = &kv;
      }
    }
    if (v == nullptr) r.fail(a.line, "str.format: no argument for '{" + field + "}'");
    out += r.str(*v, a.line);
    k = end;
  }
  return out;
}

Value string_method(const std::string& s, const std::string& name, Renderer& r, CallArgs& a) {
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    const Value* chars = a.get(0, "chars");
    bool has = chars && chars->kind == Kind::string;
    return Value::string(py_strip(s, has ? &chars->s : nullptr, name != "rstrip", name != "lstrip"));
  }
  if (name == "startswith" || name == "endswith") {
    const Value* p = a.get(0, "prefix");
    if (p == nullptr) r.fail(a.line, name + "() takes at least 1 argument");
    List options = p->kind == Kind::list ? *p->list : List{*p};
    for (const auto& o : options) {
      if (o.kind != Kind::string) r.fail(a.line, name + "() arguments must be str or a tuple of str");
      bool hit = name == "startswith" ? s.compare(0, o.s.size(), o.s) == 0 && s.size() >= o.s.size()
                                      : s.size() >= o.s.size() && s.compare(s.size() - o.s.size(), o.s.size(), o.s) == 0;
      if (hit) return Value::boolean(true);
    }
    return Value::boolean(false);
  }
  if (name == "split" || name == "rsplit") {
    const Value* sep = a.get(0, "sep");
    const Value* maxsplit = a.get(1, "maxsplit");
    std::int64_t max = maxsplit && maxsplit->kind == Kind::integer ? maxsplit->i : -1;
    if (sep && sep->kind == Kind::string && sep->s.empty()) r.fail(a.line, "empty separator");
    if (name == "rsplit" && max >= 0) r.fail(a.line, "unsupported template construct: rsplit with maxsplit");
    List out;
    for (auto& part : py_split(s, sep && sep->kind == Kind::string ? &sep->s : nullptr, max)) {
      out.push_back(Value::string(std::move(part)));
    }
    return Value::make_list(std::move(out));
  }
  if (name == "replace") {
    const Value* count = a.get(2, "count");
    return Value::string(py_replace(s, arg_string(r, a, 0, "old", "replace()"), arg_string(r, a, 1, "new", "replace()"),
                                    count && count->kind == Kind::integer ? count->i : -1));
  }
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
    return Value::string(py_case(s, name));
  }
  if (name == "find" || name == "count" || name == "index" || name == "rfind") {
    std::string sub = arg_string(r, a, 0, "sub", "find()");
    if (name == "count") {
      if (sub.empty()) return Value::integer(static_cast<std::int64_t>(utf8_decode(s).size()) + 1);
      std::int64_t n = 0;
      for (std::size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
      return Value::integer(n);
    }
    std::size_t p = name == "rfind" ? s.rfind(sub) : s.find(sub);
    if (p == std::string::npos) {
      if (name == "index") r.fail(a.line, "substring not found");
      return Value::integer(-1);
    }
    return Value::integer(static_cast<std::int64_t>(utf8_decode(s.substr(0, p)).size()));
  }
  if (name == "join") {
    const Value* items = a.get(0, "iterable");
    if (items == nullptr || items->kind != Kind::list) r.fail(a.line, "join() expects a list");
    std::string out;
    for (std::size_t k = 0; k < items->list->size(); ++k) {
      const Value& e = (*items->list)[k];
      if (e.kind != Kind::string) r.fail(a.line, "join() expects a list of strings");
      if (k) out += s;
      out += e.s;
    }
    return Value::string(std::move(out));
  }
  if (name == "splitlines") {
    List out;
    for (auto& line : py_splitlines(s)) out.push_back(Value::string(std::move(line)));
    return Value::make_list(std::move(out));
  }
  if (name == "isdigit" || name == "isspace" || name == "isalpha" || name == "isalnum" || name == "islower" ||
      name == "isupper") {
    return Value::boolean(py_is(s, name, r, a.line));
  }
  if (name == "format") return Value::string(py_format(s, r, a));
  r.fail(a.line, "unsupported template construct: str." + name + "()");
}

const char* const kStringMethods[] = {"strip", "lstrip", "rstrip", "startswith", "endswith", "split", "rsplit",
                                      "replace", "upper", "lower", "title", "capitalize", "find", "rfind", "count",
                                      "index", "join", "splitlines", "isdigit", "isspace", "isalpha", "isalnum",
                                      "islower", "isupper", "format", "center", "zfill", "ljust", "rjust",
                                      "partition", "rpartition", "casefold", "swapcase", "encode"};
// Methods that modify a list or dict: ImmutableSandboxedEnvironment refuses them.
const char* const kMutating[] = {"append", "pop", "insert", "extend", "remove", "sort", "reverse", "clear",
                                 "update", "setdefault", "popitem", "add", "discard"};

template <std::size_t N>
bool listed(const char* const (&names)[N], const std::string& name) {
  for (const char* n : names) {
    if (name == n) return true;
  }
  return false;
}

}  // namespace

Value Renderer::method(const Value& obj, const std::string& name, int line) {
  if (obj.kind != Kind::string && obj.kind != Kind::list && obj.kind != Kind::dict) return no_attribute(obj, name);
  bool known = obj.kind == Kind::string ? listed(kStringMethods, name)
               : obj.kind == Kind::list ? (name == "index" || name == "count" || listed(kMutating, name))
                                        : (name == "items" || name == "keys" || name == "values" || name == "get" ||
                                           name == "copy" || listed(kMutating, name));
  if (!known) return no_attribute(obj, name);
  if (listed(kMutating, name)) {
    fail(line, std::string(kind_name(obj.kind)) + "." + name +
                   "() is refused: transformers renders templates in an immutable sandbox");
  }
  return Value::function([obj, name](Renderer& r, CallArgs& a) -> Value {
    if (obj.kind == Kind::string && obj.markup) {  // Markup's methods escape their arguments
      bool keeps = name == "strip" || name == "lstrip" || name == "rstrip" || name == "upper" || name == "lower" ||
                   name == "title" || name == "capitalize";
      if (!keeps && !name.starts_with("is") && name != "startswith" && name != "endswith" && name != "find" && name != "count") {
        r.fail(a.line, "unsupported template construct: str." + name + "() of a |safe (Markup) string");
      }
      Value out = string_method(obj.s, name, r, a);
      out.markup = keeps;
      return out;
    }
    if (obj.kind == Kind::string) return string_method(obj.s, name, r, a);
    if (obj.kind == Kind::list) {
      const Value* x = a.get(0, "value");
      if (x == nullptr) r.fail(a.line, "list." + name + "() takes one argument");
      std::int64_t count = 0;
      for (std::size_t k = 0; k < obj.list->size(); ++k) {
        if (!equal((*obj.list)[k], *x)) continue;
        if (name == "index") return Value::integer(static_cast<std::int64_t>(k));
        ++count;
      }
      if (name == "index") r.fail(a.line, "list.index(x): x not in list");
      return Value::integer(count);
    }
    if (name == "get") {
      const Value* key = a.get(0, "key");
      if (key == nullptr) r.fail(a.line, "dict.get() takes at least 1 argument");
      const Value* dflt = a.get(1, "default");
      const Value* hit = key->kind == Kind::list || key->kind == Kind::dict ? nullptr : obj.find(dict_key(*key));
      return hit ? *hit : dflt ? *dflt : Value::none();
    }
    if (name == "copy") return obj;
    List out;
    for (const auto& [k, v] : *obj.dict) {
      if (name == "keys") out.push_back(dict_key_value(k));
      else if (name == "values") out.push_back(v);
      else out.push_back(Value::make_list({dict_key_value(k), v}, true));
    }
    Value view = Value::make_list(std::move(out));
    view.py_type = "dict_" + name;
    return view;
  });
}

List Renderer::iterate(const Value& v, int line) {
  switch (v.kind) {
    case Kind::undefined: return {};  // iterating an Undefined yields nothing, as in jinja2
    case Kind::list:
      if (v.consumed) {
        if (*v.consumed) fail(line, "unsupported template construct: a " + v.py_type + " (the result of map, select, ...) iterated a second time");
        *v.consumed = true;
      }
      return *v.list;
    case Kind::dict: {
      List keys;
      for (const auto& kv : *v.dict) keys.push_back(dict_key_value(kv.first));
      return keys;
    }
    case Kind::string: {
      List chars;
      for (std::uint32_t cp : utf8_decode(v.s)) {
        std::string c;
        utf8_append(cp, c);
        chars.push_back(Value::string(c));
      }
      return chars;
    }
    default: fail(line, std::string("'") + kind_name(v.kind) + "' object is not iterable");
  }
}

std::string Renderer::str(const Value& v, int line) const {
  if (v.kind == Kind::list && !v.py_type.empty()) {
    fail(line, "unsupported template construct: printing a " + v.py_type + " (Python prints its type and address)");
  }
  return to_str(v);
}

// obj.name: a method first (jinja2 tries Python attributes first), then a dict key.
Value Renderer::getattr(const Value& obj, const std::string& name, int line) {
  check_defined(obj, line);
  if (!name.empty() && name[0] == '_') return no_attribute(obj, name);  // the sandbox hides these
  if (obj.kind == Kind::ns || (obj.kind == Kind::dict && obj.fn)) {  // namespace, loop object
    const Value* v = obj.find(name);
    return v ? *v : no_attribute(obj, name);
  }
  if (obj.kind == Kind::list && obj.group && (name == "grouper" || name == "list")) return (*obj.list)[name == "list"];
  Value m = method(obj, name, line);
  if (!m.is_undefined() || obj.kind != Kind::dict) return m;
  const Value* v = obj.find(name);
  return v ? *v : no_attribute(obj, name);
}

// obj[key]: an item first, then (for a string key) an attribute, as jinja2's getitem.
Value Renderer::getitem(const Value& obj, const Value& key, int line) {
  check_defined(obj, line);
  if (obj.kind == Kind::list && !obj.py_type.empty()) fail(line, "'" + obj.py_type + "' object is not subscriptable");
  if ((obj.kind == Kind::dict || obj.kind == Kind::ns) && key.kind != Kind::list && key.kind != Kind::dict) {
    Value k = key.kind == Kind::boolean ? Value::integer(key.b) : key;
    if (k.kind == Kind::floating && k.f == static_cast<double>(static_cast<std::int64_t>(k.f))) k = Value::integer(static_cast<std::int64_t>(k.f));
    if (const Value* v = obj.find(dict_key(k))) return *v;
  }
  bool int_key = key.kind == Kind::integer || key.kind == Kind::boolean;
  std::int64_t idx = key.kind == Kind::integer ? key.i : key.b;
  if (obj.kind == Kind::list && int_key) {
    std::int64_t n = static_cast<std::int64_t>(obj.list->size());
    if (idx < 0) idx += n;
    if (idx >= 0 && idx < n) return (*obj.list)[static_cast<std::size_t>(idx)];
    return Value::undefined("list index out of range");
  }
  if (obj.kind == Kind::string && int_key) {
    auto cps = utf8_decode(obj.s);
    std::int64_t n = static_cast<std::int64_t>(cps.size());
    if (idx < 0) idx += n;
    if (idx < 0 || idx >= n) return Value::undefined("string index out of range");
    std::string c;
    utf8_append(cps[static_cast<std::size_t>(idx)], c);
    return Value::string(c);
  }
  if (key.kind == Kind::string) return getattr(obj, key.s, line);
  return Value::undefined(std::string("'") + kind_name(obj.kind) + " object' has no item " + to_repr(key));
}

namespace {

std::string strftime_now(Renderer& r, const std::string& fmt, int line) {
  std::tm tm{};
  const std::string& fixed = r.options().strftime_now_fixed;
  if (!fixed.empty()) {
    int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0;
    if (std::sscanf(fixed.c_str(), "%d-%d-%d %d:%d:%d", &y, &mo, &d, &h, &mi, &s) < 3) {
      r.fail(line, "strftime_now_fixed must be 'YYYY-MM-DD[ HH:MM:SS]', got '" + fixed + "'");
    }
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    tm.tm_isdst = -1;
    std::time_t t = timegm(&tm);  // fills in the weekday and day of the year
    gmtime_r(&t, &tm);
  } else {
    std::time_t t = std::time(nullptr);
    localtime_r(&t, &tm);
  }
  char buf[512];
  std::size_t n = fmt.empty() ? 0 : std::strftime(buf, sizeof buf, fmt.c_str(), &tm);
  if (n == 0 && !fmt.empty()) r.fail(line, "strftime_now: format too long or empty result");
  return std::string(buf, n);
}

Value make_namespace(Renderer& r, CallArgs& a) {
  auto ns = std::make_shared<Dict>();
  if (!a.pos.empty()) {
    if (a.pos.size() > 1 || a.pos[0].kind != Kind::dict) r.fail(a.line, "namespace() takes a dict or keyword arguments");
    *ns = *a.pos[0].dict;
  }
  for (const auto& [k, v] : a.kw) {
    if (!k.empty() && k[0] == '_') r.fail(a.line, "namespace attributes cannot start with '_'");
    bool replaced = false;
    for (auto& [nk, nv] : *ns) {
      if (nk == k) nv = v, replaced = true;
    }
    if (!replaced) ns->emplace_back(k, v);
  }
  Value v;
  v.kind = Kind::ns;
  v.ns = ns;
  return v;
}

Value make_range(Renderer& r, CallArgs& a) {
  std::int64_t b[3] = {0, 0, 1};
  if (a.pos.empty() || a.pos.size() > 3) r.fail(a.line, "range() takes 1 to 3 arguments");
  for (const auto& v : a.pos) {
    if (v.kind != Kind::integer && v.kind != Kind::boolean) r.fail(a.line, "range() arguments must be integers");
  }
  auto iv = [](const Value& v) { return v.kind == Kind::integer ? v.i : static_cast<std::int64_t>(v.b); };
  if (a.pos.size() == 1) b[1] = iv(a.pos[0]);
  else for (std::size_t k = 0; k < a.pos.size(); ++k) b[k] = iv(a.pos[k]);
  if (b[2] == 0) r.fail(a.line, "range() arg 3 must not be zero");
  List out;
  for (std::int64_t x = b[0]; b[2] > 0 ? x < b[1] : x > b[1]; x += b[2]) {
    if (out.size() >= 100000) r.fail(a.line, "range too big (the sandbox allows 100000 items)");
    r.charge(1, a.line);
    out.push_back(Value::integer(x));
  }
  return Value::make_list(std::move(out));
}

}  // namespace

Value Renderer::global(const std::string& name) const {
  if (name == "range") return Value::function(make_range);
  if (name == "namespace") return Value::function(make_namespace);
  if (name == "dict") {
    return Value::function([](Renderer& r, CallArgs& a) -> Value {
      if (!a.pos.empty()) r.fail(a.line, "unsupported template construct: dict() with positional arguments");
      Dict d(a.kw.begin(), a.kw.end());
      return Value::make_dict(std::move(d));
    });
  }
  if (name == "raise_exception") {
    return Value::function([](Renderer& r, CallArgs& a) -> Value {
      r.fail(a.line, "the template raised an exception: " + (a.pos.empty() ? std::string() : to_str(a.pos[0])));
    });
  }
  if (name == "strftime_now") {
    return Value::function([](Renderer& r, CallArgs& a) -> Value {
      return Value::string(strftime_now(r, arg_string(r, a, 0, "format", "strftime_now()"), a.line));
    });
  }
  return Value::undefined("'" + name + "' is undefined");
}

}  // namespace anvil::data::jinja
