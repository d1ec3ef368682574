// The files of an exported model directory besides its weights, shared by the hf and mlx
// formats: config.json (the base's, with the export dtype, readable by every client) and the
// tokenizer and generation files, copied as they are.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "core/dtype.h"

namespace anvil::exporting {

// transformers 5 saves rope_theta (and any scaling) only inside "rope_parameters", which
// clients written against the older layout do not read: mlx-lm ignores rope_parameters and
// would fall back to its default theta. When rope_parameters has a rope_theta and the top
// level has none, this adds top-level "rope_theta" right after "rope_parameters", and
// "rope_scaling" (rope_parameters without its rope_theta) when the rope type is not
// "default" and the top level has no rope_scaling object. Nothing else changes, key order
// included. Returns whether it added anything.
bool config_rope_top_level(nlohmann::ordered_json& cfg);

// The base's config.json as the export writes it: the dtype set in torch_dtype (and in
// "dtype", the spelling of transformers >= 4.56, where the base has it), the rope fix above;
// every other key kept as it was, in order.
nlohmann::ordered_json export_config_read(const std::string& base_dir, DType dtype);

// `cfg` as dir/config.json, indented as transformers writes it.
void export_config_write(const nlohmann::ordered_json& cfg, const std::string& dir);

// Copies the tokenizer files, generation_config.json and chat templates the base has.
void export_side_files_copy(const std::string& base_dir, const std::string& dir);

}  // namespace anvil::exporting
