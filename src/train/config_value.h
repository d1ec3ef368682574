// One config value between YAML and ConfigValue: the type check of a node against its
// schema row, and the YAML text of a resolved value. Internal to anvil_train.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>

#include "train/config_schema.h"

namespace anvil::train {

struct ParsedValue {
  ConfigValue value;
  std::string error;    // empty: the node is a valid value for the key
  int error_line = -1;  // 0-based line of the offending list element; -1: the key's line
};

// Type and range check; never throws for bad input (the caller collects every error).
ParsedValue config_value_parse(const ConfigKey& key, const YAML::Node& node);

// Writes `value` so that config_value_parse reads it back unchanged (strings that YAML
// would read as a number, bool or null are quoted).
void config_value_emit(YAML::Emitter& out, const ConfigKey& key, const ConfigValue& value);

// The shortest text that reads back as exactly `x` ("0.0002", "1e-08", "32").
std::string format_number(double x);

}  // namespace anvil::train
