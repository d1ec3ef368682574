// anvil inspect PATH: the tensors of a safetensors file or HF model directory, validated
// the same way training reads them (a malformed input is a user error, exit 2).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/format.h"
#include "io/safetensors.h"

namespace anvil::cli {

namespace {

struct Row {
  std::string name, dtype, shape, file;
};

void print_row(const Row& r, std::size_t name_w, std::size_t dtype_w, std::size_t shape_w, bool with_file) {
  if (with_file) {
    std::printf("%-*s  %-*s  %-*s  %s\n", int(name_w), r.name.c_str(), int(dtype_w), r.dtype.c_str(),
                int(shape_w), r.shape.c_str(), r.file.c_str());
  } else {
    std::printf("%-*s  %-*s  %s\n", int(name_w), r.name.c_str(), int(dtype_w), r.dtype.c_str(),
                r.shape.c_str());
  }
}

void run_inspect(const std::string& path) {
  const auto model = io::SafetensorsModel::open(path);
  const auto entries = model.tensors();
  const std::size_t n_files = model.files().size();
  // With several shards a last column says where each tensor lives.
  const bool with_file = n_files > 1;

  std::vector<Row> rows;
  rows.reserve(entries.size());
  std::int64_t params = 0;
  std::uint64_t bytes = 0;
  for (const auto& e : entries) {
    const auto& t = *e.info;
    rows.push_back({t.name, std::string(dtype_name(t.dtype)), t.shape.str(),
                    std::filesystem::path(e.file->path()).filename().string()});
    params += t.shape.numel();  // bounded by the file sizes: every element takes >= 1 byte
    bytes += t.end - t.begin;
  }
  const Row header{"name", "dtype", "shape", "file"};
  std::size_t name_w = header.name.size(), dtype_w = header.dtype.size(), shape_w = header.shape.size();
  for (const auto& r : rows) {
    name_w = std::max(name_w, r.name.size());
    dtype_w = std::max(dtype_w, r.dtype.size());
    shape_w = std::max(shape_w, r.shape.size());
  }
  print_row(header, name_w, dtype_w, shape_w, with_file);
  for (const auto& r : rows) print_row(r, name_w, dtype_w, shape_w, with_file);

  const std::string where = n_files == 1 ? "1 file" : std::to_string(n_files) + " shards";
  std::printf("\n%zu tensors in %s, %s parameters, %s bytes (%s)\n", entries.size(), where.c_str(),
              format_thousands(params).c_str(), format_thousands(static_cast<std::int64_t>(bytes)).c_str(),
              format_bytes(bytes).c_str());
}

}  // namespace

void register_inspect(CLI::App& app) {
  auto* cmd = app.add_subcommand("inspect", "List the tensors of a safetensors file or HF model directory");
  // CLI11 binds options to variables that outlive parsing; the callback runs after it.
  static std::string path;
  cmd->add_option("PATH", path,
                  "a .safetensors file, a model directory (model.safetensors or the shards "
                  "model.safetensors.index.json lists), or that index file")
      ->required();
  cmd->callback([] { run_inspect(path); });
}

}  // namespace anvil::cli
