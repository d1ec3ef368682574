// Python's case mappings by code point and the two Unicode properties its str.lower
// (final sigma) and str.title read, generated from Python itself into jinja_case_table.cpp
// by scripts/gen/jinja_case_table.py.
#pragma once

#include <cstdint>
#include <span>

namespace anvil::data::jinja {

// Code points first..last, every `stride`-th one, map to cp + delta.
struct CaseRun {
  std::uint32_t first, last;
  std::uint32_t stride;
  std::int32_t delta;
};
// A code point that maps to several (ß -> SS), as UTF-8.
struct CaseSpecial {
  std::uint32_t cp;
  const char* text;
};
struct CodeRange {
  std::uint32_t first, last;
};

// All ascending. Title case is upper case except where the title tables say otherwise.
struct CaseTables {
  std::span<const CaseRun> upper, lower, title;
  std::span<const CaseSpecial> upper_special, lower_special, title_special;
  std::span<const CodeRange> cased, case_ignorable;
};
const CaseTables& case_tables();

}  // namespace anvil::data::jinja
