#include "model/checkpoint_layout.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/files.h"
#include "io/h5_store.h"

namespace anvil::model {

std::string checkpoint_matrix_name(const std::string& group, const LoraSlot& slot, char which) {
  return group + "/" + LoraLayout::peft_name(slot, which);
}

std::string lora_spec_to_json(const LoraSpec& spec) {
  nlohmann::json j;
  j["r"] = spec.rank;
  j["alpha"] = spec.alpha;
  j["dropout"] = spec.dropout;
  j["rslora"] = spec.rslora;
  j["targets"] = nlohmann::json::array();
  for (int p = 0; p < kProjCount; ++p)
    if (spec.targets[p]) j["targets"].push_back(proj_name(static_cast<Proj>(p)));
  return j.dump();
}

LoraSpec lora_spec_from_json(const std::string& text, const std::string& what) {
  const auto j = nlohmann::json::parse(text, nullptr, false);
  ANVIL_CHECK_INPUT(j.is_object() && j.contains("r") && j["r"].is_number_integer() && j.contains("alpha") &&
                        j["alpha"].is_number() && j.contains("dropout") && j["dropout"].is_number() &&
                        j.contains("rslora") && j["rslora"].is_boolean() && j.contains("targets") &&
                        j["targets"].is_array(),
                    what, ": not a LoRA spec: ", text);
  LoraSpec s;
  s.rank = j["r"].get<int>();
  s.alpha = j["alpha"].get<double>();
  s.dropout = j["dropout"].get<double>();
  s.rslora = j["rslora"].get<bool>();
  std::vector<std::string> names;
  for (const auto& t : j["targets"]) {
    ANVIL_CHECK_INPUT(t.is_string(), what, ": a target is not a name");
    names.push_back(t.get<std::string>());
  }
  s.targets = lora_targets_from_names(names, what);
  ANVIL_CHECK_INPUT(s.rank > 0 && s.targets_any(), what, ": rank or targets missing");
  return s;
}

namespace {

// The header of a safetensors file and 64 KiB from each end of its data: names, shapes,
// offsets, and enough of the weights to tell a fine-tuned variant (same config, same
// index) from its base.
void append_weight_sample(const std::string& path, std::string& out) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  ANVIL_CHECK_INPUT(f != nullptr, path, ": cannot open");
  std::uint64_t n = 0;
  bool ok = std::fread(&n, 8, 1, f) == 1 && n < (std::uint64_t{1} << 30);
  constexpr long kSample = 64 << 10;
  auto read_at = [&](long offset, long bytes) {
    if (!ok || bytes <= 0 || std::fseek(f, offset, SEEK_SET) != 0) return;
    const std::size_t at = out.size();
    out.resize(at + static_cast<std::size_t>(bytes));
    out.resize(at + std::fread(out.data() + at, 1, static_cast<std::size_t>(bytes), f));
  };
  if (ok) {
    std::fseek(f, 0, SEEK_END);
    const long size = std::ftell(f);
    const long data = 8 + static_cast<long>(n);
    ok = size >= data;
    read_at(8, static_cast<long>(n));                             // header
    read_at(data, std::min(kSample, size - data));                // first weights
    read_at(std::max(data, size - kSample), std::min(kSample, size - data));  // last weights
  }
  std::fclose(f);
  ANVIL_CHECK_INPUT(ok, path, ": not a safetensors file");
}

}  // namespace

std::string model_identity_hash(const std::string& model_dir) {
  namespace fs = std::filesystem;
  std::string seen = io::read_text_file(model_dir + "/config.json");
  std::vector<std::string> files;
  const fs::path idx = fs::path(model_dir) / "model.safetensors.index.json";
  if (fs::exists(idx)) {
    const std::string index = io::read_text_file(idx.string());
    seen += index;
    const auto j = nlohmann::json::parse(index, nullptr, false);
    ANVIL_CHECK_INPUT(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), idx.string(),
                      ": no weight_map");
    for (const auto& [name, file] : j["weight_map"].items())
      if (file.is_string()) files.push_back(file.get<std::string>());
    std::sort(files.begin(), files.end());
    files.erase(std::unique(files.begin(), files.end()), files.end());
  } else {
    files.push_back("model.safetensors");
  }
  for (const std::string& f : files) append_weight_sample(model_dir + "/" + f, seen);
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx",
                static_cast<unsigned long long>(io::checksum_bytes(seen.data(), seen.size())));
  return hex;
}

CheckpointAdapter checkpoint_read_adapter(const std::string& path) {
  const io::H5Store h5 = io::H5Store::open(path, MPI_COMM_SELF);
  const std::int64_t format = h5.read_i64("anvil_format");
  ANVIL_CHECK_INPUT(format == kCheckpointFormat, path, ": anvil checkpoint format ", format, ", this anvil reads ",
                    kCheckpointFormat);
  CheckpointAdapter c;
  c.step = h5.read_i64("state/step");
  c.config_yaml = h5.read_text("meta/config");
  c.model_config_json = h5.read_text("meta/model_config");
  c.spec = model_spec_from_json(c.model_config_json, path + ": meta/model_config");
  c.base_model_path = h5.read_text("meta/base_model_path");
  c.base_model_hash = h5.read_text("meta/base_model_hash");
  c.lora = lora_spec_from_json(h5.read_text("meta/lora"), path + ": meta/lora");
  const LoraLayout layout(c.spec, c.lora);
  c.params.assign(static_cast<std::size_t>(layout.size()), 0.0f);
  for (const LoraSlot& s : layout.slots()) {
    for (const char which : {'A', 'B'}) {
      const std::string name = checkpoint_matrix_name("adapter", s, which);
      const std::int64_t rows = which == 'A' ? c.lora.rank : s.out;
      const std::int64_t cols = which == 'A' ? s.in : c.lora.rank;
      h5.read_matrix_checked(name, rows, cols, c.params.data() + (which == 'A' ? s.a_offset : s.b_offset));
    }
  }
  return c;
}

}  // namespace anvil::model
