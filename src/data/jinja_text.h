// Python's str operations on UTF-8 text, by code point: strip, split, replace, case, '%'.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace anvil::data::jinja {

class Renderer;
struct Value;

// str.strip/lstrip/rstrip: whitespace (str.isspace) when chars is null.
std::string py_strip(const std::string& s, const std::string* chars, bool left, bool right);
// str.split(sep, maxsplit): runs of whitespace when sep is null.
std::vector<std::string> py_split(const std::string& s, const std::string* sep, std::int64_t maxsplit);
std::vector<std::string> py_splitlines(const std::string& s);
std::string py_replace(const std::string& s, const std::string& old, const std::string& with, std::int64_t count);
// upper, lower, title, capitalize (str methods) and jinja2's title filter ("jinja_title").
// Python's full case mappings (ß -> SS, final sigma), from jinja_case_table.cpp.
std::string py_case(const std::string& s, const std::string& how);
// format % operand: Python's printf-style formatting (jinja_format.cpp).
std::string py_percent_format(Renderer& r, const std::string& format, const Value& operand, int line);
bool py_is(const std::string& s, const std::string& what, const Renderer& r, int line);

}  // namespace anvil::data::jinja
