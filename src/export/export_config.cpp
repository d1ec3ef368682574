#include "export/export_config.h"

#include <algorithm>
#include <filesystem>
#include <iterator>

#include "core/error.h"
#include "io/files.h"

namespace anvil::exporting {

namespace fs = std::filesystem;

namespace {

// Besides the weights and config.json, the files a model directory carries that
// transformers reads: copied byte for byte when the base has them (and anything named
// tokenizer*, e.g. Mistral's tokenizer.model.v3).
constexpr const char* kCopiedFiles[] = {"generation_config.json", "special_tokens_map.json", "added_tokens.json",
                                        "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json"};

const char* torch_dtype_name(DType t) {
  return t == DType::dtype_f32 ? "float32" : t == DType::dtype_bf16 ? "bfloat16" : "float16";
}

}  // namespace

bool config_rope_top_level(nlohmann::ordered_json& cfg) {
  const auto params = cfg.find("rope_parameters");
  if (params == cfg.end() || !params->is_object() || cfg.contains("rope_theta")) return false;
  const auto theta = params->find("rope_theta");
  if (theta == params->end()) return false;
  const auto type = params->find("rope_type");
  const bool scaled = type != params->end() && type->is_string() && *type != "default";
  const auto old_scaling = cfg.find("rope_scaling");
  const bool add_scaling = scaled && (old_scaling == cfg.end() || old_scaling->is_null());
  nlohmann::ordered_json scaling = *params;
  scaling.erase("rope_theta");
  // ordered_json cannot insert in the middle: rebuild, placing the new keys after
  // rope_parameters (a null rope_scaling the base had is replaced where it stood).
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (auto it = cfg.begin(); it != cfg.end(); ++it) {
    if (it.key() == "rope_scaling" && add_scaling) {
      out["rope_scaling"] = scaling;
      continue;
    }
    out[it.key()] = it.value();
    if (it.key() != "rope_parameters") continue;
    out["rope_theta"] = *theta;
    if (add_scaling && old_scaling == cfg.end()) out["rope_scaling"] = scaling;
  }
  cfg = std::move(out);
  return true;
}

nlohmann::ordered_json export_config_read(const std::string& base_dir, DType dtype) {
  const std::string path = base_dir + "/config.json";
  auto cfg = nlohmann::ordered_json::parse(io::read_text_file(path), nullptr, false);
  ANVIL_CHECK_INPUT(cfg.is_object(), path, ": not a JSON object");
  // transformers >= 4.56 writes "dtype" instead; a config with only that keeps its spelling.
  if (cfg.contains("torch_dtype") || !cfg.contains("dtype")) cfg["torch_dtype"] = torch_dtype_name(dtype);
  if (cfg.contains("dtype")) cfg["dtype"] = torch_dtype_name(dtype);
  config_rope_top_level(cfg);
  return cfg;
}

void export_config_write(const nlohmann::ordered_json& cfg, const std::string& dir) {
  io::write_text_file_atomic(dir + "/config.json", cfg.dump(2) + "\n");
}

void export_side_files_copy(const std::string& base_dir, const std::string& dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(base_dir, ec)) {
    const std::string name = entry.path().filename().string();
    const bool wanted = name.starts_with("tokenizer") ||
                        std::any_of(std::begin(kCopiedFiles), std::end(kCopiedFiles),
                                    [&](const char* f) { return name == f; });
    if (!wanted) continue;
    std::error_code copy_ec;
    fs::copy_file(entry.path(), fs::path(dir) / name, copy_ec);
    ANVIL_CHECK_INPUT(!copy_ec, entry.path().string(), ": cannot copy into the export: ", copy_ec.message());
  }
  ANVIL_CHECK_INPUT(!ec, base_dir, ": cannot list: ", ec.message());
}

}  // namespace anvil::exporting
