// Strict JSON parsing for the headers and indexes of weight files (internal to src/io).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace anvil::io::detail {

// Parses `text` and throws a user error starting with `label` for everything nlohmann
// would accept silently or report in a way unfit for a user:
//   - invalid JSON or invalid UTF-8: "<label>: <what> is not valid UTF-8 JSON: <reason>"
//     (with the invalid bytes escaped for the terminal);
//   - a key twice in one object (nlohmann keeps the last): at the top level
//     "<label>: duplicate <top_level_key_noun> '<key>'", deeper "duplicate key '<key>' in '<parent>'";
//   - objects or arrays nested deeper than `max_depth` (the top-level value is depth 1).
nlohmann::json parse_json_strict(std::string_view text, const std::string& label, std::string_view what,
                                 std::string_view top_level_key_noun, int max_depth);

// `s` for an error message: control characters and bytes that are not well-formed UTF-8
// written as \xNN, everything else unchanged.
std::string escape_for_message(std::string_view s);

}  // namespace anvil::io::detail
