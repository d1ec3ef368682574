// anvil inspect PATH: the tensors of a safetensors file or HF model directory, validated
// the same way training reads them (a malformed input is a user error, exit 2); or, for a
// checkpoint (*.h5), what it holds, once every dataset in it (adapter, AdamW state, sampler
// and RNG state, meta) is read against its checksum: a damaged checkpoint is a user error
// (exit 2) naming each damaged or missing dataset.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_file.h"
#include "cli/commands.h"
#include "cli/format.h"
#include "comm/mpi_session.h"
#include "core/error.h"
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

void run_inspect_checkpoint(const std::string& path, bool show_config) {
  comm::MpiSession mpi;  // the checkpoint is read through (parallel) HDF5, on this rank alone
  const auto self = comm::self_comm("self");
  const auto reader = checkpoint::CheckpointReader::open(path, *self);
  const std::vector<std::string> problems = reader.verify();
  if (!problems.empty()) {
    std::string listed;
    for (const auto& p : problems) listed += "\n  " + p;
    throw_user_error(path, ": ", problems.size(), " damaged or missing dataset", problems.size() == 1 ? "" : "s",
                     " (this checkpoint cannot be resumed or exported):", listed);
  }
  const checkpoint::Meta meta = reader.meta();
  const checkpoint::State state = reader.state();
  const model::ModelSpec spec = model::model_spec_from_json(meta.model_config_json, path + ": meta/model_config");
  const model::LoraLayout layout(spec, meta.lora);
  std::string targets;
  for (int p = 0; p < model::kProjCount; ++p)
    if (meta.lora.targets[p]) targets += (targets.empty() ? "" : ", ") + std::string(model::proj_name(model::Proj(p)));
  std::printf("checkpoint %s (format %lld)\n", path.c_str(), static_cast<long long>(reader.format()));
  std::printf("step: %lld, tokens seen %s, sampler epoch %lld cursor %lld, seed %lld\n",
              static_cast<long long>(state.step), format_thousands(state.tokens_seen).c_str(),
              static_cast<long long>(state.sampler_epoch), static_cast<long long>(state.sampler_cursor),
              static_cast<long long>(state.seed));
  std::printf("base model: %s (identity %s)\n", meta.base_model_path.c_str(), meta.base_model_hash.c_str());
  std::printf("model: %s, hidden %lld, layers %lld, vocab %lld\n", spec.model_type.c_str(),
              static_cast<long long>(spec.hidden_size), static_cast<long long>(spec.num_hidden_layers),
              static_cast<long long>(spec.vocab_size));
  std::printf("lora: r %d, alpha %g, dropout %g, %s, scale %g, targets %s\n", meta.lora.rank, meta.lora.alpha,
              meta.lora.dropout, meta.lora.rslora ? "rslora" : "no rslora", static_cast<double>(meta.lora.scale()),
              targets.c_str());
  std::printf("adapter: %zu tensors, %s parameters (f32), with its AdamW moments\n", 2 * layout.slots().size(),
              format_thousands(layout.size()).c_str());
  std::printf("checksums verified: every dataset (adapter, AdamW state, sampler and RNG state, meta)\n");
  if (show_config) std::printf("\nresolved config:\n%s", meta.config_yaml.c_str());
}

}  // namespace

void register_inspect(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "inspect", "List the tensors of a safetensors file or HF model directory, or what a checkpoint holds");
  // CLI11 binds options to variables that outlive parsing; the callback runs after it.
  static std::string path;
  static bool show_config = false;
  cmd->add_option("PATH", path,
                  "a .safetensors file, a model directory (model.safetensors or the shards "
                  "model.safetensors.index.json lists), that index file, or a checkpoint (.h5)")
      ->required();
  cmd->add_flag("--config", show_config, "checkpoint: also print the resolved training config it was written with");
  cmd->callback([] {
    if (path.ends_with(".h5")) {
      run_inspect_checkpoint(path, show_config);
    } else {
      ANVIL_CHECK_INPUT(!show_config, "inspect: --config applies to a checkpoint (.h5)");
      run_inspect(path);
    }
  });
}

}  // namespace anvil::cli
