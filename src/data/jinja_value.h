// The values a Jinja template computes with, modelled on the Python objects jinja2 hands
// around: Undefined, None, bool, int, float, str, list/tuple, dict, callables and
// namespaces. Lists and dicts are immutable once built (ImmutableSandboxedEnvironment
// refuses append/update), so they are shared; a namespace is the one mutable object.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace anvil::data::jinja {

struct Value;
struct CallArgs;
class Renderer;
using List = std::vector<Value>;
// Insertion order, as Python's dict. Keys are strings; a template's non-string key (an int
// in a dict literal) is held as dict_key() encodes it.
using Dict = std::vector<std::pair<std::string, Value>>;
using Function = std::function<Value(Renderer&, CallArgs&)>;

enum class Kind { undefined, none, boolean, integer, floating, string, list, dict, function, ns };

struct Value {
  Kind kind = Kind::undefined;
  bool b = false;
  bool tuple = false;  // a list printed as a Python tuple
  // A list that stands for another Python iterable: "generator" (map, select, ... return
  // one: always true, no len, one pass, not printable) or "dict_items"/"dict_keys"/
  // "dict_values" (views: not printable as a list, not JSON). Empty for a plain list.
  std::string py_type;
  std::shared_ptr<bool> consumed;  // a generator's: already iterated
  // A str that is markupsafe's Markup (from |safe or |escape): '+' HTML-escapes a plain str
  // on its other side, as jinja2 without autoescape still does.
  bool markup = false;
  // A tuple from jinja2's groupby filter: its items are also its attributes grouper, list.
  bool group = false;
  std::int64_t i = 0;
  double f = 0;
  std::string s;  // string; for undefined, the name that was missing (for errors)
  std::shared_ptr<const List> list;
  std::shared_ptr<const Dict> dict;
  std::shared_ptr<Dict> ns;        // namespace attributes, shared and mutable
  std::shared_ptr<Function> fn;    // function; also set on a loop object (recursive loops)

  static Value none() { Value v; v.kind = Kind::none; return v; }
  static Value undefined(std::string name) { Value v; v.s = std::move(name); return v; }
  static Value boolean(bool x) { Value v; v.kind = Kind::boolean; v.b = x; return v; }
  static Value integer(std::int64_t x) { Value v; v.kind = Kind::integer; v.i = x; return v; }
  static Value floating(double x) { Value v; v.kind = Kind::floating; v.f = x; return v; }
  static Value string(std::string x) { Value v; v.kind = Kind::string; v.s = std::move(x); return v; }
  static Value make_list(List x, bool is_tuple = false);
  static Value make_dict(Dict x);
  static Value function(Function f);
  static Value generator(List x);

  bool is_undefined() const { return kind == Kind::undefined; }
  bool is_number() const { return kind == Kind::integer || kind == Kind::floating || kind == Kind::boolean; }
  // Key lookup on a dict or namespace; nullptr when absent.
  const Value* find(std::string_view key) const;
};

struct CallArgs {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
  int line = 0;
  // The keyword `name`, else positional `index`, else nullptr.
  const Value* get(std::size_t index, std::string_view name) const;
};

Value from_json(const nlohmann::ordered_json& j);
// A dict key as stored, and back: strings are themselves; None, bools, ints and floats are
// tagged with a leading "\x1f" and a letter, as is a string that itself starts with "\x1f"
// (a key of a message's JSON or of the template may: the tag keeps them apart).
std::string dict_key(const Value& k);
Value dict_key_value(const std::string& k);
const char* kind_name(Kind k);
bool truthy(const Value& v);
// str(v) and repr(v) as Python prints them (floats shortest round-trip, True, None, lists).
std::string to_str(const Value& v);
std::string to_repr(const Value& v);
std::string float_repr(double x);
bool equal(const Value& a, const Value& b);
// <0, 0, >0; a user-facing TypeError text in `error` when Python would refuse to order them.
int compare(const Value& a, const Value& b, std::string& error);

// json.dumps(v, ensure_ascii, indent, sort_keys) with Python's default separators
// (", " and ": "; "," between items when indenting); indent < 0 means None.
struct JsonStyle {
  bool ensure_ascii = false;
  int indent = -1;
  std::string item_sep, key_sep;
  bool sort_keys = false;
};
void to_json_text(const Value& v, const JsonStyle& style, int level, std::string& out, std::string& error);

// UTF-8 helpers: Python indexes strings by code point.
std::vector<std::uint32_t> utf8_decode(std::string_view s);
void utf8_append(std::uint32_t cp, std::string& out);
bool is_py_space(std::uint32_t cp);
// markupsafe.escape: & < > ' " as entities.
std::string html_escape(const std::string& s);

}  // namespace anvil::data::jinja
