// Python's printing, truthiness, equality and ordering of jinja values, and json.dumps.
#include "data/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "core/error.h"

namespace anvil::data::jinja {

Value Value::make_list(List x, bool is_tuple) {
  Value v;
  v.kind = Kind::list;
  v.tuple = is_tuple;
  v.list = std::make_shared<const List>(std::move(x));
  return v;
}

Value Value::make_dict(Dict x) {
  Value v;
  v.kind = Kind::dict;
  v.dict = std::make_shared<const Dict>(std::move(x));
  return v;
}

Value Value::generator(List x) {
  Value v = make_list(std::move(x));
  v.py_type = "generator";
  v.consumed = std::make_shared<bool>(false);
  return v;
}

std::string dict_key(const Value& k) {
  if (k.kind == Kind::string) return k.s.starts_with('\x1f') ? "\x1fs" + k.s : k.s;
  char tag = k.kind == Kind::none ? 'n' : k.kind == Kind::boolean ? 'b' : k.kind == Kind::integer ? 'i' : 'f';
  return std::string("\x1f") + tag + to_str(k);
}

Value dict_key_value(const std::string& k) {
  if (k.size() < 2 || k[0] != '\x1f') return Value::string(k);
  std::string body = k.substr(2);
  switch (k[1]) {
    case 's': return Value::string(body);
    case 'n': return Value::none();
    case 'b': return Value::boolean(body == "True");
    case 'i': return Value::integer(std::stoll(body));
    case 'f': return Value::floating(std::stod(body));
    default: throw_internal_error(__FILE__, __LINE__, "a dict key not made by dict_key: tag ", static_cast<int>(k[1]));
  }
}

Value Value::function(Function f) {
  Value v;
  v.kind = Kind::function;
  v.fn = std::make_shared<Function>(std::move(f));
  return v;
}

const Value* Value::find(std::string_view key) const {
  const Dict* d = kind == Kind::dict ? dict.get() : kind == Kind::ns ? ns.get() : nullptr;
  if (d == nullptr) return nullptr;
  for (const auto& [k, v] : *d) {
    if (k == key) return &v;
  }
  return nullptr;
}

const Value* CallArgs::get(std::size_t index, std::string_view name) const {
  for (const auto& [k, v] : kw) {
    if (k == name) return &v;
  }
  return index < pos.size() ? &pos[index] : nullptr;
}

Value from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return Value::none();
    case nlohmann::ordered_json::value_t::boolean: return Value::boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value::integer(j.get<std::int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned:
      // Python ints are unbounded; past int64 (ids, hashes) the value is kept as a float.
      if (j.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX)) return Value::floating(j.get<double>());
      return Value::integer(static_cast<std::int64_t>(j.get<std::uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float: return Value::floating(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value::string(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List l;
      l.reserve(j.size());
      for (const auto& e : j) l.push_back(from_json(e));
      return Value::make_list(std::move(l));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict d;
      d.reserve(j.size());
      for (const auto& [k, e] : j.items()) d.emplace_back(dict_key(Value::string(k)), from_json(e));
      return Value::make_dict(std::move(d));
    }
    default: return Value::none();
  }
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::undefined: return "Undefined";
    case Kind::none: return "NoneType";
    case Kind::boolean: return "bool";
    case Kind::integer: return "int";
    case Kind::floating: return "float";
    case Kind::string: return "str";
    case Kind::list: return "list";
    case Kind::dict: return "dict";
    case Kind::function: return "function";
    case Kind::ns: return "Namespace";
  }
  return "?";
}

bool truthy(const Value& v) {
  switch (v.kind) {
    case Kind::undefined:
    case Kind::none: return false;
    case Kind::boolean: return v.b;
    case Kind::integer: return v.i != 0;
    case Kind::floating: return v.f != 0;
    case Kind::string: return !v.s.empty();
    case Kind::list: return v.py_type == "generator" || !v.list->empty();
    case Kind::dict: return !v.dict->empty();
    default: return true;
  }
}

// Python's repr(float): the shortest digits that round-trip, fixed notation for
// 1e-4 <= |x| < 1e16, else d.ddde+XX.
std::string float_repr(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x < 0 ? "-inf" : "inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  std::string sign;
  if (sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  std::size_t epos = sci.find('e');
  int exp = std::stoi(sci.substr(epos + 1));
  std::string digits = sci.substr(0, epos);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  if (exp >= -4 && exp < 16) {
    std::string out;
    if (exp >= 0) {
      if (digits.size() <= static_cast<std::size_t>(exp) + 1) digits.append(exp + 1 - digits.size(), '0');
      out = digits.substr(0, exp + 1) + ".";
      std::string frac = digits.substr(exp + 1);
      out += frac.empty() ? "0" : frac;
    } else {
      out = "0." + std::string(-exp - 1, '0') + digits;
    }
    return sign + out;
  }
  std::string mant = digits.substr(0, 1);
  if (digits.size() > 1) mant += "." + digits.substr(1);
  char ebuf[16];
  std::snprintf(ebuf, sizeof ebuf, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
  return sign + mant + ebuf;
}

std::vector<std::uint32_t> utf8_decode(std::string_view s) {
  std::vector<std::uint32_t> out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    int n = c < 0x80 ? 0 : c < 0xE0 ? 1 : c < 0xF0 ? 2 : 3;
    std::uint32_t cp = n == 0 ? c : n == 1 ? (c & 0x1F) : n == 2 ? (c & 0x0F) : (c & 0x07);
    if (c >= 0x80 && c < 0xC0) n = 0, cp = 0xFFFD;  // a stray continuation byte
    std::size_t j = 1;
    for (; j <= static_cast<std::size_t>(n) && i + j < s.size(); ++j) {
      cp = (cp << 6) | (static_cast<unsigned char>(s[i + j]) & 0x3F);
    }
    out.push_back(cp);
    i += j;
  }
  return out;
}

void utf8_append(std::uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// str.isspace(): Unicode White_Space plus the ASCII separators Python counts.
bool is_py_space(std::uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// Code points str.isprintable() rejects (control, format, separators), as repr escapes them.
static bool repr_escapes(std::uint32_t cp) {
  return cp < 0x20 || (cp >= 0x7F && cp <= 0xA0) || cp == 0xAD || (cp >= 0x2000 && cp <= 0x200F) ||
         (cp >= 0x2028 && cp <= 0x202F) || (cp >= 0x205F && cp <= 0x206F) || cp == 0x3000 ||
         cp == 0xFEFF || (cp >= 0xFFF9 && cp <= 0xFFFB) || (cp >= 0xD800 && cp <= 0xDFFF);
}

static std::string string_repr(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos;
  char q = has_single && s.find('"') == std::string::npos ? '"' : '\'';
  std::string out(1, q);
  for (std::uint32_t cp : utf8_decode(s)) {
    char buf[16];
    if (cp == '\\' || cp == static_cast<std::uint32_t>(q)) {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (repr_escapes(cp)) {
      std::snprintf(buf, sizeof buf, cp < 0x100 ? "\\x%02x" : "\\u%04x", cp);
      out += buf;
    } else {
      utf8_append(cp, out);
    }
  }
  out += q;
  return out;
}

std::string to_repr(const Value& v) {
  switch (v.kind) {
    case Kind::string: return string_repr(v.s);
    case Kind::list: {
      std::string out = v.tuple ? "(" : "[";
      for (std::size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += ", ";
        out += to_repr((*v.list)[k]);
      }
      if (v.tuple && v.list->size() == 1) out += ",";
      return out + (v.tuple ? ")" : "]");
    }
    case Kind::dict: {
      std::string out = "{";
      for (std::size_t k = 0; k < v.dict->size(); ++k) {
        if (k) out += ", ";
        out += to_repr(dict_key_value((*v.dict)[k].first)) + ": " + to_repr((*v.dict)[k].second);
      }
      return out + "}";
    }
    default: return to_str(v);
  }
}

std::string to_str(const Value& v) {
  switch (v.kind) {
    case Kind::undefined: return "";
    case Kind::none: return "None";
    case Kind::boolean: return v.b ? "True" : "False";
    case Kind::integer: return std::to_string(v.i);
    case Kind::floating: return float_repr(v.f);
    case Kind::string: return v.s;
    case Kind::function: return "<function>";
    case Kind::ns: return "<Namespace>";
    default: return to_repr(v);
  }
}

static double as_double(const Value& v) {
  return v.kind == Kind::floating ? v.f : v.kind == Kind::integer ? static_cast<double>(v.i) : (v.b ? 1.0 : 0.0);
}
static std::int64_t as_int(const Value& v) { return v.kind == Kind::integer ? v.i : (v.b ? 1 : 0); }

bool equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind == Kind::floating || b.kind == Kind::floating) return as_double(a) == as_double(b);
    return as_int(a) == as_int(b);
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::undefined:
    case Kind::none: return true;
    case Kind::string: return a.s == b.s;
    case Kind::list:
      if (a.tuple != b.tuple || a.list->size() != b.list->size()) return false;
      for (std::size_t k = 0; k < a.list->size(); ++k) {
        if (!equal((*a.list)[k], (*b.list)[k])) return false;
      }
      return true;
    case Kind::dict:
      if (a.dict->size() != b.dict->size()) return false;
      for (const auto& [k, v] : *a.dict) {
        const Value* o = b.find(k);
        if (o == nullptr || !equal(v, *o)) return false;
      }
      return true;
    case Kind::function: return a.fn == b.fn;
    case Kind::ns: return a.ns == b.ns;
    default: return false;
  }
}

int compare(const Value& a, const Value& b, std::string& error) {
  if (a.is_number() && b.is_number()) {
    if (a.kind == Kind::floating || b.kind == Kind::floating) {
      double x = as_double(a), y = as_double(b);
      return x < y ? -1 : x > y ? 1 : 0;
    }
    std::int64_t x = as_int(a), y = as_int(b);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.kind == Kind::string && b.kind == Kind::string) return a.s.compare(b.s) < 0 ? -1 : a.s == b.s ? 0 : 1;
  if (a.kind == Kind::list && b.kind == Kind::list && a.tuple == b.tuple) {
    std::size_t n = std::min(a.list->size(), b.list->size());
    for (std::size_t k = 0; k < n; ++k) {
      if (!equal((*a.list)[k], (*b.list)[k])) return compare((*a.list)[k], (*b.list)[k], error);
    }
    return a.list->size() < b.list->size() ? -1 : a.list->size() > b.list->size() ? 1 : 0;
  }
  error = std::string("ordering is not supported between instances of '") + kind_name(a.kind) + "' and '" +
          kind_name(b.kind) + "'";
  return 0;
}

static void json_string(const std::string& s, bool ensure_ascii, std::string& out) {
  out += '"';
  for (std::uint32_t cp : utf8_decode(s)) {
    char buf[16];
    switch (cp) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      default: break;
    }
    if (cp < 0x20 || (ensure_ascii && cp > 0x7E)) {
      if (cp >= 0x10000) {  // a surrogate pair, as Python writes it
        std::uint32_t c = cp - 0x10000;
        std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x", 0xD800 + (c >> 10), 0xDC00 + (c & 0x3FF));
      } else {
        std::snprintf(buf, sizeof buf, "\\u%04x", cp);
      }
      out += buf;
    } else {
      utf8_append(cp, out);
    }
  }
  out += '"';
}

static void json_newline(const JsonStyle& style, int level, std::string& out) {
  out += '\n';
  out.append(static_cast<std::size_t>(style.indent) * level, ' ');
}

void to_json_text(const Value& v, const JsonStyle& style, int level, std::string& out, std::string& error) {
  if (level > 512) {
    error = "nesting too deep for tojson";
    return;
  }
  switch (v.kind) {
    case Kind::none: out += "null"; return;
    case Kind::boolean: out += v.b ? "true" : "false"; return;
    case Kind::integer: out += std::to_string(v.i); return;
    case Kind::floating:
      out += std::isnan(v.f) ? "NaN" : std::isinf(v.f) ? (v.f < 0 ? "-Infinity" : "Infinity") : float_repr(v.f);
      return;
    case Kind::string: json_string(v.s, style.ensure_ascii, out); return;
    case Kind::list: {
      if (!v.py_type.empty()) {
        error = "Object of type " + v.py_type + " is not JSON serializable";
        return;
      }
      if (v.list->empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (std::size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += style.item_sep;
        if (style.indent >= 0) json_newline(style, level + 1, out);
        to_json_text((*v.list)[k], style, level + 1, out, error);
      }
      if (style.indent >= 0) json_newline(style, level, out);
      out += ']';
      return;
    }
    case Kind::dict: {
      if (v.dict->empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& kv : *v.dict) items.push_back(&kv);
      if (style.sort_keys) {
        std::stable_sort(items.begin(), items.end(), [](auto* x, auto* y) { return x->first < y->first; });
      }
      out += '{';
      for (std::size_t k = 0; k < items.size(); ++k) {
        if (k) out += style.item_sep;
        if (style.indent >= 0) json_newline(style, level + 1, out);
        Value key = dict_key_value(items[k]->first);  // json.dumps writes non-string keys as their JSON text
        if (key.kind == Kind::string) {
          json_string(key.s, style.ensure_ascii, out);
        } else {
          std::string text;
          to_json_text(key, style, level, text, error);
          json_string(text, style.ensure_ascii, out);
        }
        out += style.key_sep;
        to_json_text(items[k]->second, style, level + 1, out, error);
      }
      if (style.indent >= 0) json_newline(style, level, out);
      out += '}';
      return;
    }
    default:
      error = std::string("Object of type ") + kind_name(v.kind) + " is not JSON serializable";
      return;
  }
}

}  // namespace anvil::data::jinja
