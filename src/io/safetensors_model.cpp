// A Hugging Face model directory as one set of tensors: model.safetensors, or the shards
// that model.safetensors.index.json lists. The index is checked against the shards both
// ways, so a tensor is never silently taken from a shard the index does not name.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "io/files.h"
#include "io/json_strict.h"
#include "io/safetensors.h"

namespace anvil::io {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";

// The index's weight_map as tensor -> shard file name.
std::map<std::string, std::string> read_weight_map(const fs::path& index_path) {
  const std::string label = index_path.string();
  // {"metadata": {...}, "weight_map": {tensor: shard}}: three levels are plenty.
  const json index = detail::parse_json_strict(read_text_file(index_path.string()), label, "index", "key", 3);
  ANVIL_CHECK_INPUT(index.is_object(), label, ": index is not a JSON object");
  const auto wm = index.find("weight_map");
  ANVIL_CHECK_INPUT(wm != index.end() && wm->is_object(), label, ": missing object 'weight_map'");
  std::map<std::string, std::string> claimed;
  for (const auto& item : wm->items()) {
    const std::string tensor = detail::escape_for_message(item.key());
    ANVIL_CHECK_INPUT(item.value().is_string(), label, ": weight_map['", tensor, "'] is not a string");
    const std::string& shard = item.value().get_ref<const std::string&>();
    // Shards live next to the index; a path could make the reader open any file.
    ANVIL_CHECK_INPUT(!shard.empty() && shard != "." && shard != ".." &&
                          shard.find_first_of(std::string_view("/\0", 2)) == std::string::npos,
                      label, ": weight_map['", tensor, "'] = '", detail::escape_for_message(shard),
                      "': a shard must be a file name in the model directory");
    claimed.emplace(item.key(), shard);
  }
  ANVIL_CHECK_INPUT(!claimed.empty(), label, ": weight_map lists no tensors");
  return claimed;
}

}  // namespace

SafetensorsModel SafetensorsModel::open(const std::string& path) {
  SafetensorsModel m;
  std::error_code ec;
  const bool is_dir = fs::is_directory(path, ec);
  // The index is found in a model directory, or given itself (any *.json path).
  fs::path dir, index_path;
  if (is_dir) {
    dir = path;
    if (fs::exists(dir / kIndexName, ec)) index_path = dir / kIndexName;
  } else if (fs::path(path).extension() == ".json") {
    index_path = path;
    dir = fs::path(path).parent_path();
  }
  std::map<std::string, std::string> claimed;  // tensor -> shard, empty without an index

  if (!index_path.empty()) {
    claimed = read_weight_map(index_path);
    std::set<std::string> shards;
    for (const auto& [tensor, shard] : claimed) shards.insert(shard);
    for (const auto& shard : shards) m.files_.push_back(SafetensorsFile::open((dir / shard).string()));
  } else if (!is_dir) {
    m.files_.push_back(SafetensorsFile::open(path));
  } else if (fs::exists(dir / kSingleName, ec)) {
    m.files_.push_back(SafetensorsFile::open((dir / kSingleName).string()));
  } else {
    throw_user_error(path, ": no ", kSingleName, " or ", kIndexName, " in this directory");
  }

  for (const auto& f : m.files_) {
    const std::string shard = fs::path(f.path()).filename().string();
    for (const auto& t : f.tensors()) {
      const std::string name = detail::escape_for_message(t.name);
      if (!claimed.empty()) {
        const auto it = claimed.find(t.name);
        ANVIL_CHECK_INPUT(it != claimed.end(), f.path(), ": tensor '", name, "' is not listed in ",
                          index_path.string());
        ANVIL_CHECK_INPUT(it->second == shard, index_path.string(), ": tensor '", name, "' is listed in ",
                          it->second, " but found in ", shard);
      }
      const auto [it, inserted] = m.by_name_.emplace(t.name, Entry{&f, &t, {}});
      ANVIL_CHECK_INPUT(inserted, f.path(), ": tensor '", name, "' is also in ", it->second.file->path(),
                        " (a tensor must be in exactly one shard)");
      it->second.name = it->first;  // map nodes stay put, moves included
    }
  }
  for (const auto& [tensor, shard] : claimed)
    ANVIL_CHECK_INPUT(m.by_name_.count(tensor), index_path.string(), ": tensor '",
                      detail::escape_for_message(tensor), "' is listed in ", shard,
                      " but that shard does not hold it");
  return m;
}

void SafetensorsModel::keep_under(std::string_view prefix) {
  ANVIL_CHECK(prefix_.empty(), "keep_under called twice");
  std::map<std::string, Entry, std::less<>> kept;
  for (auto& [name, e] : by_name_) {
    if (!name.starts_with(prefix)) {
      outside_.push_back(e);
      continue;
    }
    const auto it = kept.emplace(name.substr(prefix.size()), e).first;
    it->second.name = it->first;
  }
  by_name_ = std::move(kept);
  prefix_ = prefix;
  for (Entry& e : outside_) e.name = e.info->name;
}

std::vector<SafetensorsModel::Entry> SafetensorsModel::tensors() const {
  std::vector<Entry> out;
  out.reserve(by_name_.size());
  for (const auto& [name, e] : by_name_) out.push_back(e);
  return out;
}

const SafetensorsModel::Entry* SafetensorsModel::find(std::string_view name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &it->second;
}

}  // namespace anvil::io
