#include "train/config_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>

#include "core/error.h"
#include "train/config_suggest.h"

namespace anvil::train {

namespace {

using enum KeyType;

// yaml-cpp tags a quoted scalar "!" and a plain one "?". A quoted "16" is a string in YAML,
// so a number key refuses it rather than guessing.
bool is_quoted(const YAML::Node& n) { return n.Tag() == "!"; }

std::string describe(const YAML::Node& n) {
  if (n.IsNull()) return "nothing";
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a mapping";
  if (is_quoted(n)) return "the quoted string '" + n.Scalar() + "' (numbers and booleans take no quotes)";
  return "'" + n.Scalar() + "'";
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

std::string expectation(const ConfigKey& key) {
  switch (key.type) {
    case key_int: return "an integer";
    case key_int_or_auto: return "auto or an integer";
    case key_float: return "a number";
    case key_bool: return "true or false";
    case key_string: return "a string";
    case key_path: return "a path";
    case key_choice: return "one of " + join(key.choices);
    case key_list: return "a list of " + join(key.choices);
    case key_sources: return "a path or a list of paths and {path, weight}";
  }
  return "?";
}

bool looks_like_int(std::string_view s) {
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) s.remove_prefix(1);
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Decimal and exponent forms only ("2e-4" included, which YAML 1.1 readers miss); no
// inf/nan: a non-finite hyperparameter is always a mistake.
bool parse_float(std::string_view s, double& out) {
  if (!s.empty() && s[0] == '+') s.remove_prefix(1);
  const bool digits_only = std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '-' || c == '+';
  });
  if (s.empty() || !digits_only ||
      std::none_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size() && std::isfinite(out);
}

bool in_range(double x, const NumberRange& r) {
  const bool lo_ok = r.lo_open ? x > r.lo : x >= r.lo;
  const bool hi_ok = r.hi_open ? x < r.hi : x <= r.hi;
  return lo_ok && hi_ok;
}

std::string range_text(const NumberRange& r) {
  const bool lo = std::isfinite(r.lo), hi = std::isfinite(r.hi);
  if (lo && hi)
    return str_cat("must be in ", r.lo_open ? "(" : "[", format_number(r.lo), ", ", format_number(r.hi),
                   r.hi_open ? ")" : "]");
  if (lo) return str_cat("must be ", r.lo_open ? "> " : ">= ", format_number(r.lo));
  if (hi) return str_cat("must be ", r.hi_open ? "< " : "<= ", format_number(r.hi));
  return "is out of range";
}

bool is_true_word(const std::string& s) { return s == "true" || s == "True" || s == "TRUE"; }
bool is_false_word(const std::string& s) { return s == "false" || s == "False" || s == "FALSE"; }

ParsedValue parse_integer(const ConfigKey& key, const YAML::Node& node) {
  ParsedValue r;
  if (key.type == key_int_or_auto && node.IsScalar() && !is_quoted(node) && node.Scalar() == "auto") {
    r.value = std::int64_t{0};
    return r;
  }
  if (!node.IsScalar() || is_quoted(node) || !looks_like_int(node.Scalar())) {
    r.error = str_cat("expected ", expectation(key), ", got ", describe(node));
    return r;
  }
  std::string_view s = node.Scalar();
  if (s[0] == '+') s.remove_prefix(1);
  std::int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  const bool fits = ec == std::errc() && end == s.data() + s.size();
  if (fits && in_range(static_cast<double>(v), key.range) && v <= key.field.int_max) {
    r.value = v;
    return r;
  }
  // Past the field's own type (int) with no tighter bound in the schema: say so.
  const bool too_big = s[0] != '-' && (!fits || v > key.field.int_max);
  r.error = too_big && !std::isfinite(key.range.hi)
                ? str_cat("must be <= ", key.field.int_max, ", got ", node.Scalar())
                : str_cat(range_text(key.range), ", got ", node.Scalar());
  return r;
}

ParsedValue parse_list(const ConfigKey& key, const YAML::Node& node) {
  ParsedValue r;
  if (!node.IsSequence()) {
    r.error = str_cat("expected a list such as [", key.choices.front(), ", ", key.choices.back(), "], got ",
                      describe(node));
    return r;
  }
  std::vector<std::string> items;
  for (const YAML::Node& item : node) {
    const bool known = item.IsScalar() &&
                       std::find(key.choices.begin(), key.choices.end(), item.Scalar()) != key.choices.end();
    if (!known) {
      r.error = str_cat(describe(item), " is not one of ", join(key.choices),
                        item.IsScalar() ? did_you_mean(item.Scalar(), key.choices) : "");
    } else if (std::find(items.begin(), items.end(), item.Scalar()) != items.end()) {
      r.error = str_cat("'", item.Scalar(), "' is listed twice");
    } else {
      items.push_back(item.Scalar());
      continue;
    }
    r.error_line = item.Mark().line;
    return r;
  }
  if (items.empty()) {
    r.error = str_cat("must name at least one of ", join(key.choices));
    return r;
  }
  r.value = std::move(items);
  return r;
}

// data.train: "a.jsonl", or [a.jsonl, {path: b.jsonl, weight: 2}].
ParsedValue parse_sources(const ConfigKey& key, const YAML::Node& node) {
  ParsedValue r;
  std::vector<DataSource> sources;
  auto fail = [&](const YAML::Node& at, std::string message) {
    r.error = std::move(message);
    r.error_line = at.Mark().line;
    return r;
  };
  if (node.IsScalar()) {
    r.value = std::vector<DataSource>{{node.Scalar(), 1.0}};
    return r;
  }
  if (!node.IsSequence()) {
    r.error = str_cat("expected ", expectation(key), ", got ", describe(node));
    return r;
  }
  for (const YAML::Node& item : node) {
    DataSource s;
    if (item.IsScalar()) {
      s.path = item.Scalar();
    } else if (item.IsMap()) {
      for (const auto& kv : item) {
        const std::string k = kv.first.Scalar();
        if (k != "path" && k != "weight")
          return fail(kv.first, str_cat("'", k, "' is not a key of a data source (path, weight)",
                                        did_you_mean(k, {"path", "weight"})));
      }
      const YAML::Node path = item["path"], weight = item["weight"];
      if (!path || !path.IsScalar()) return fail(item, "a data source needs 'path: FILE'");
      s.path = path.Scalar();
      if (weight && (!weight.IsScalar() || is_quoted(weight) || !parse_float(weight.Scalar(), s.weight) ||
                     !(s.weight > 0) || s.weight > 1000))
        return fail(weight, str_cat("weight must be a number in (0, 1000], got ", describe(weight)));
    } else {
      return fail(item, str_cat("expected a path or {path, weight}, got ", describe(item)));
    }
    if (s.path.empty()) return fail(item, "empty path");
    sources.push_back(std::move(s));
  }
  if (sources.empty()) {
    r.error = "must name at least one file";
    return r;
  }
  r.value = std::move(sources);
  return r;
}

}  // namespace

std::string format_number(double x) {
  // Whole numbers in full (1048576, not 1.048576e+06); others the shortest round trip in %g
  // style: 0.0002 rather than 2e-04, 1e-08 rather than 0.00000001.
  if (x == std::trunc(x) && std::fabs(x) < 1e15) return std::to_string(static_cast<long long>(x));
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::general);
  ANVIL_CHECK(ec == std::errc());
  return std::string(buf, end);
}

ParsedValue config_value_parse(const ConfigKey& key, const YAML::Node& node) {
  ParsedValue r;
  if (node.IsNull()) {
    if (!key.nullable()) r.error = str_cat("expected ", expectation(key), ", got nothing");
    return r;  // monostate: the optional key is unset
  }
  switch (key.type) {
    case key_int:
    case key_int_or_auto: return parse_integer(key, node);
    case key_float: {
      double v = 0;
      if (!node.IsScalar() || is_quoted(node) || !parse_float(node.Scalar(), v))
        r.error = str_cat("expected a number, got ", describe(node));
      else if (!in_range(v, key.range))
        r.error = str_cat(range_text(key.range), ", got ", node.Scalar());
      else
        r.value = v;
      return r;
    }
    case key_bool:
      if (node.IsScalar() && !is_quoted(node) && is_true_word(node.Scalar()))
        r.value = true;
      else if (node.IsScalar() && !is_quoted(node) && is_false_word(node.Scalar()))
        r.value = false;
      else
        r.error = str_cat("expected true or false, got ", describe(node));
      return r;
    case key_string:
    case key_path:
      if (node.IsScalar())
        r.value = node.Scalar();
      else
        r.error = str_cat("expected ", expectation(key), ", got ", describe(node));
      return r;
    case key_choice:
      if (node.IsScalar() &&
          std::find(key.choices.begin(), key.choices.end(), node.Scalar()) != key.choices.end())
        r.value = node.Scalar();
      else
        r.error = str_cat("expected ", expectation(key), ", got ", describe(node),
                          node.IsScalar() ? did_you_mean(node.Scalar(), key.choices) : "");
      return r;
    case key_list: return parse_list(key, node);
    case key_sources: return parse_sources(key, node);
  }
  throw_internal_error(__FILE__, __LINE__, "unhandled key type for ", key.path);
}

namespace {
// Strings YAML would read as something else: null, a bool (YAML 1.1 words too, for
// readers other than anvil), or a number.
bool needs_quotes(const std::string& s) {
  static const std::set<std::string> words{
      "null", "Null", "NULL", "~",  "true", "True", "TRUE", "false", "False", "FALSE", "yes", "Yes", "YES",
      "no",   "No",   "NO",   "on", "On",   "ON",   "off",  "Off",   "OFF",   "y",     "Y",   "n",   "N"};
  double unused = 0;
  return s.empty() || words.count(s) > 0 || looks_like_int(s) || parse_float(s, unused);
}
}  // namespace

void config_value_emit(YAML::Emitter& out, const ConfigKey& key, const ConfigValue& value) {
  if (std::holds_alternative<std::monostate>(value)) {
    out << YAML::Null;
  } else if (const bool* b = std::get_if<bool>(&value)) {
    out << (*b ? "true" : "false");
  } else if (const std::int64_t* i = std::get_if<std::int64_t>(&value)) {
    out << (key.type == key_int_or_auto && *i == 0 ? std::string("auto") : std::to_string(*i));
  } else if (const double* d = std::get_if<double>(&value)) {
    out << format_number(*d);
  } else if (const std::string* s = std::get_if<std::string>(&value)) {
    if (needs_quotes(*s)) out << YAML::DoubleQuoted;
    out << *s;
  } else if (const auto* list = std::get_if<std::vector<std::string>>(&value)) {
    out << YAML::Flow << YAML::BeginSeq;
    for (const std::string& item : *list) out << item;
    out << YAML::EndSeq;
  } else {
    const auto& sources = std::get<std::vector<DataSource>>(value);
    auto emit_path = [&](const std::string& p) {
      if (needs_quotes(p)) out << YAML::DoubleQuoted;
      out << p;
    };
    if (sources.size() == 1 && sources[0].weight == 1.0) {
      emit_path(sources[0].path);
      return;
    }
    out << YAML::Flow << YAML::BeginSeq;
    for (const DataSource& s : sources) {
      out << YAML::BeginMap << YAML::Key << "path" << YAML::Value;
      emit_path(s.path);
      out << YAML::Key << "weight" << YAML::Value << format_number(s.weight) << YAML::EndMap;
    }
    out << YAML::EndSeq;
  }
}

}  // namespace anvil::train
