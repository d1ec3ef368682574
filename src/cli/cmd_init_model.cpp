// anvil init-model: a randomly initialised HF model directory from a preset or a
// config.json, for tests, demos and GPU benchmarks without any model hub.
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>

#include "cli/commands.h"
#include "cli/format.h"
#include "core/error.h"
#include "data/bytelevel_tokenizer_json.h"
#include "export/shard_writer.h"
#include "io/files.h"
#include "model/model_init.h"
#include "model/model_spec.h"

namespace anvil::cli {

namespace {
namespace fs = std::filesystem;

struct InitModelArgs {
  std::string preset;
  std::string spec_path;
  std::string out;
  std::uint64_t seed = 0;
  std::string dtype = "f32";
  std::string max_shard_size = "5GB";
  double init_std = 0;  // 0: the spec's initializer_range
  double norm_std = 0;  // 0: norm weights are ones
  bool dry_run = false;
  bool config_only = false;
  bool force = false;
};

model::ModelSpec resolve_spec(const InitModelArgs& a) {
  ANVIL_CHECK_INPUT(a.preset.empty() != a.spec_path.empty(), "init-model: give exactly one of --preset or --spec");
  if (!a.spec_path.empty()) return model::model_spec_from_file(a.spec_path);
  const auto spec = model::model_preset(a.preset);
  if (!spec) {
    std::string names;
    for (const auto& n : model::model_preset_names()) names += (names.empty() ? "" : ", ") + n;
    throw_user_error("init-model: unknown preset '", a.preset, "' (presets: ", names, ")");
  }
  return *spec;
}

void print_summary(const model::ModelSpec& spec, const std::string& dtype_name, DType dtype) {
  std::printf("model: %s, hidden %lld, intermediate %lld, layers %lld, heads %lld (kv %lld, head_dim %lld), "
              "vocab %lld%s\n",
              spec.model_type.c_str(), (long long)spec.hidden_size, (long long)spec.intermediate_size,
              (long long)spec.num_hidden_layers, (long long)spec.num_attention_heads,
              (long long)spec.num_key_value_heads, (long long)spec.head_dim, (long long)spec.vocab_size,
              spec.tie_word_embeddings ? ", tied embeddings" : "");
  // The tensors outside the layers, and layer 0 standing for all of them.
  const std::string layer0 = "model.layers.0.";
  for (const auto& w : model::model_weight_list(spec)) {
    const bool in_layer = w.name.starts_with("model.layers.");
    if (in_layer && !w.name.starts_with(layer0)) continue;
    std::printf("  %-48s %s%s\n", w.name.c_str(), w.shape.str().c_str(),
                in_layer ? str_cat("  x ", spec.num_hidden_layers, " layers").c_str() : "");
  }
  std::printf("parameters: %s\n", format_thousands(model::model_parameter_count(spec)).c_str());
  const std::uint64_t bytes = model::model_weight_bytes(spec, dtype);
  std::printf("weights: %s bytes (%s) as %s\n", format_thousands(static_cast<std::int64_t>(bytes)).c_str(),
              format_bytes(bytes).c_str(), dtype_name.c_str());
}

// The output directory may be replaced only when it is empty or, with --force, when it
// holds a model (a config.json): --force must never wipe an arbitrary directory.
void check_output_dir(const fs::path& out, bool force) {
  std::error_code ec;
  if (!fs::exists(out, ec)) return;
  if (fs::is_directory(out) && fs::is_empty(out)) return;
  ANVIL_CHECK_INPUT(force, "init-model: ", out.string(), " exists and is not empty (use --force to replace it)");
  ANVIL_CHECK_INPUT(fs::is_directory(out) && fs::exists(out / "config.json"), "init-model: ", out.string(),
                    " is not a model directory (no config.json); --force only replaces model directories");
}

void run_init_model(const InitModelArgs& a) {
  model::ModelSpec spec = resolve_spec(a);
  if (a.init_std > 0) spec.initializer_range = a.init_std;
  const auto dtype = dtype_from_short_name(a.dtype);
  ANVIL_CHECK_INPUT(dtype && (*dtype == DType::dtype_f32 || *dtype == DType::dtype_bf16 || *dtype == DType::dtype_f16),
                    "init-model: --dtype must be f32, bf16 or f16, got '", a.dtype, "'");
  model::InitOptions opt;
  opt.seed = a.seed;
  opt.dtype = *dtype;
  opt.max_shard_bytes = exporting::shard_size_parse(a.max_shard_size, "--max-shard-size");
  opt.norm_std = a.norm_std;
  ANVIL_CHECK_INPUT(spec.vocab_size >= data::kByteLevelTokenizerSize, "init-model: vocab_size ", spec.vocab_size,
                    " is smaller than the ", data::kByteLevelTokenizerSize, " tokens of the byte-level tokenizer");
  print_summary(spec, a.dtype, *dtype);
  if (a.dry_run) return;

  ANVIL_CHECK_INPUT(!a.out.empty(), "init-model: --out DIR is required (or use --dry-run)");
  const fs::path out = fs::absolute(a.out).lexically_normal();
  check_output_dir(out, a.force);
  if (a.config_only) {
    fs::create_directories(out);
    io::write_text_file_atomic((out / "config.json").string(), model::model_spec_to_json(spec));
    std::printf("wrote %s (config.json only)\n", out.string().c_str());
    return;
  }
  // Everything is written into a temporary sibling and renamed at the end, so a failure
  // (disk full, a bad spec) never leaves a half-written model directory behind.
  const fs::path parent = out.parent_path();
  fs::create_directories(parent);
  const std::string stem = out.filename().string() + ".tmp-" + std::to_string(::getpid());
  const fs::path tmp = parent / stem;
  const fs::path old = parent / (stem + "-old");
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp);
  try {
    const auto ids = data::write_bytelevel_tokenizer(tmp.string(), spec.max_position_embeddings);
    // config.json and generation_config.json name the tokenizer's own special ids.
    spec.bos_token_id = ids.bos;
    spec.eos_token_ids = {ids.eos};
    model::model_init_write(spec, tmp.string(), opt);
    // Move the old directory aside first: the new one appears whole, by one rename.
    if (fs::exists(out)) fs::rename(out, old);
    fs::rename(tmp, out);
  } catch (...) {
    fs::remove_all(tmp, ec);
    if (fs::exists(old, ec) && !fs::exists(out, ec)) fs::rename(old, out, ec);  // put it back
    throw;
  }
  fs::remove_all(old, ec);
  std::printf("wrote %s\n", out.string().c_str());
}
}  // namespace

void register_init_model(CLI::App& app) {
  auto* cmd = app.add_subcommand("init-model", "Write a randomly initialised HF model directory (presets or a config.json)");
  auto args = std::make_shared<InitModelArgs>();
  std::string presets;
  for (const auto& n : model::model_preset_names()) presets += (presets.empty() ? "" : ", ") + n;
  cmd->add_option("--preset", args->preset, "named shape: " + presets);
  cmd->add_option("--spec", args->spec_path, "an HF config.json to take the shape from");
  cmd->add_option("--out", args->out, "output model directory");
  cmd->add_option("--seed", args->seed, "seed of the random weights")->default_val(0);
  cmd->add_option("--init-std", args->init_std,
                  "std of the normal init of linear layers and embeddings (default: the spec's "
                  "initializer_range, 0.02)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--norm-std", args->norm_std,
                  "norm weights 1 + N(0, S) instead of ones (tests that must see the norms' weights)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--dtype", args->dtype, "weight dtype: f32, bf16 or f16")->default_val("f32");
  cmd->add_option("--max-shard-size", args->max_shard_size, "largest safetensors shard (e.g. 5GB)")->default_val("5GB");
  cmd->add_flag("--dry-run", args->dry_run, "print the shapes, parameter count and bytes; write nothing");
  cmd->add_flag("--config-only", args->config_only,
                "write only config.json: a shape that anvil validate can plan a run for, no weights");
  cmd->add_flag("--force", args->force, "replace an existing model directory");
  cmd->callback([args] { run_init_model(*args); });
}

}  // namespace anvil::cli
