// The config schema: one row per key. The loader, the defaults, the validation, the
// resolved-config dump and the documentation test all read this one table.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "train/config.h"

namespace anvil::train {

enum class KeyType {
  key_int,
  key_float,  // integers are accepted too
  key_bool,
  key_string,
  key_path,         // a string naming a file or directory (existence checked by the loader)
  key_choice,       // one of `choices`
  key_list,         // a list of distinct `choices`, at least one
  key_int_or_auto,  // "auto" (stored as 0) or an integer
  key_sources,      // a path, or a list of paths and {path, weight} mappings (data.train)
};

// "int", "float", "bool", "string", "path", "choice", "list", "int or auto": the type column of
// configs/README.md.
const char* key_type_name(KeyType type);

// A value after type checking, on its way into a TrainConfig field. monostate is null.
using ConfigValue = std::variant<std::monostate, bool, std::int64_t, double, std::string, std::vector<std::string>,
                                 std::vector<DataSource>>;

// Allowed numeric interval; open ends exclude the bound.
struct NumberRange {
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();
  bool lo_open = false;
  bool hi_open = false;
};

// How a key's value reaches its TrainConfig field and back (made by a template in
// config_schema.cpp from a pointer to the member).
struct FieldBinding {
  void (*set)(TrainConfig&, const ConfigValue&) = nullptr;
  ConfigValue (*get)(const TrainConfig&) = nullptr;
  std::int64_t int_max = 0;  // the field type's largest value, for integer keys
};

struct ConfigKey {
  std::string path;  // "train.lr"; a key without a dot is top-level
  KeyType type{};
  std::string default_yaml;  // YAML text of the default; empty: the key is required
  NumberRange range;
  std::vector<std::string> choices;  // key_choice values, key_list elements
  std::string doc;                   // one line, for README.md and error hints
  FieldBinding field;

  bool required() const { return default_yaml.empty(); }
  // Only optional keys (default null) accept null as a value.
  bool nullable() const { return default_yaml == "null"; }
  std::string_view section() const;  // "train"; "" for a top-level key
  std::string_view leaf() const;     // "lr"
};

// Rows in documentation order: top-level keys, then the sections in the order of
// config_sections().
const std::vector<ConfigKey>& config_schema();
// nullptr when the path names no key.
const ConfigKey* config_schema_find(std::string_view path);
// model, lora, data, train, parallel, checkpoint, log.
const std::vector<std::string>& config_sections();

}  // namespace anvil::train
