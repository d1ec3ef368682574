#include "checkpoint/model_identity.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.h"
#include "io/checksum.h"
#include "io/files.h"

namespace anvil::checkpoint {

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

}  // namespace anvil::checkpoint
