// anvil export CHECKPOINT --out DIR [--format hf|peft] [--dtype bf16|f16|f32]
//                         [--max-shard-size 5GB] [--base MODEL_DIR] [--force]
//
// hf (default): the base model with the checkpoint's adapter merged in, as an HF model
// directory; peft: the adapter alone, as PEFT writes it. The base model must be the one
// the checkpoint was trained on (its identity hash is recorded in the checkpoint).
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "cli/format.h"
#include "comm/comm.h"
#include "comm/mpi_session.h"
#include "core/error.h"
#include "export/export.h"
#include "export/shard_writer.h"
#include "checkpoint/checkpoint_file.h"
#include "checkpoint/model_identity.h"
#include "train/config.h"

namespace anvil::cli {

namespace {

struct ExportArgs {
  std::string checkpoint;
  std::string out;
  std::string format = "hf";
  std::string dtype;  // empty: the base config's torch_dtype
  std::string max_shard_size = "5GB";
  std::string base;   // empty: the base path recorded in the checkpoint
  bool force = false;
  bool max_shard_size_given = false;
};

exporting::ExportOptions options_resolve(const ExportArgs& a) {
  exporting::ExportOptions o;
  o.format = exporting::export_format_parse(a.format, "export: --format");
  o.force = a.force;
  if (o.format == exporting::ExportFormat::export_format_peft) {
    // PEFT adapters are fp32 and one file; silently ignoring these would mislead.
    ANVIL_CHECK_INPUT(a.dtype.empty(), "export: --dtype applies to --format hf (a PEFT adapter is written in f32)");
    ANVIL_CHECK_INPUT(!a.max_shard_size_given, "export: --max-shard-size applies to --format hf only");
    return o;
  }
  if (!a.dtype.empty()) {
    const auto t = dtype_from_short_name(a.dtype);
    ANVIL_CHECK_INPUT(t && (*t == DType::dtype_f32 || *t == DType::dtype_bf16 || *t == DType::dtype_f16),
                      "export: --dtype must be bf16, f16 or f32, got '", a.dtype, "'");
    o.dtype = *t;
  }
  o.max_shard_bytes = exporting::shard_size_parse(a.max_shard_size, "export: --max-shard-size");
  return o;
}

// The base model to merge into: --base or the recorded path, and in either case the model
// the checkpoint was trained on (same config.json and weight index).
std::string base_resolve(const ExportArgs& a, const checkpoint::CheckpointAdapter& ckpt, bool must_exist) {
  namespace fs = std::filesystem;
  const std::string base = a.base.empty() ? ckpt.meta.base_model_path : a.base;
  std::error_code ec;
  if (!must_exist && a.base.empty()) return base;  // peft only names it
  ANVIL_CHECK_INPUT(fs::is_directory(base, ec), "export: base model directory ", base,
                    a.base.empty() ? str_cat(" (recorded in ", a.checkpoint, ")") : std::string(),
                    " does not exist; pass --base MODEL_DIR");
  const std::string hash = checkpoint::model_identity_hash(base);
  ANVIL_CHECK_INPUT(hash == ckpt.meta.base_model_hash, "export: base model ", base, " (identity ", hash,
                    ") is not the model ", a.checkpoint, " was trained on: ", ckpt.meta.base_model_path, " (identity ",
                    ckpt.meta.base_model_hash, ")");
  return base;
}

void run_export(const ExportArgs& a) {
  // Under mpirun the ranks split the shards (export.h); each reads the checkpoint itself.
  comm::MpiSession mpi;
  const auto world = comm::mpi_comm_world();
  const exporting::ExportOptions options = options_resolve(a);
  const checkpoint::CheckpointAdapter ckpt = checkpoint::checkpoint_read_adapter(a.checkpoint);
  const bool hf = options.format == exporting::ExportFormat::export_format_hf;
  exporting::ExportAdapter adapter{ckpt.spec, ckpt.meta.lora, ckpt.params.data(), base_resolve(a, ckpt, hf), {}, 1};
  const train::TrainConfig trained = train::config_load_from_string(
      ckpt.meta.config_yaml, a.checkpoint + ": " + checkpoint::kMetaConfig, {}, train::ConfigContext{0, false});
  adapter.quant = train::quant_policy_from_config(trained);
  adapter.quant_tp = trained.parallel.tp;
  const auto s = exporting::export_to_dir(adapter, a.out, options, {a.checkpoint}, *world);
  if (world->rank() != 0) return;
  std::printf("exported step %lld of %s (%s, %s): %zu tensors", static_cast<long long>(ckpt.step),
              a.checkpoint.c_str(), hf ? "merged into the base model" : "PEFT adapter",
              std::string(dtype_short_name(s.dtype)).c_str(), s.tensors);
  if (hf) std::printf(", %zu merged, in %zu file%s", s.merged, s.shards, s.shards == 1 ? "" : "s");
  std::printf(", %s\nwrote %s\n", format_bytes(s.bytes).c_str(), s.out_dir.c_str());
}

}  // namespace

void register_export(CLI::App& app) {
  auto* cmd = app.add_subcommand("export", "Write merged HF safetensors or a PEFT adapter from a checkpoint");
  auto args = std::make_shared<ExportArgs>();
  cmd->add_option("CHECKPOINT", args->checkpoint, "a checkpoint written by anvil train (OUTPUT_DIR/checkpoints/step_N.h5)")
      ->required();
  cmd->add_option("--out", args->out, "output directory (written whole, or not at all)")->required();
  cmd->add_option("--format", args->format, "hf: the merged model; peft: the adapter alone")->default_val("hf");
  cmd->add_option("--dtype", args->dtype, "hf: weight dtype, bf16, f16 or f32 (default: the base model's torch_dtype)");
  auto* shard = cmd->add_option("--max-shard-size", args->max_shard_size, "hf: largest safetensors file (e.g. 5GB, 500MB)")
                    ->default_val("5GB");
  cmd->add_option("--base", args->base,
                  "the base model directory (default: the one recorded in the checkpoint; it must be that model)");
  cmd->add_flag("--force", args->force, "replace an existing export in --out");
  cmd->callback([args, shard] {
    args->max_shard_size_given = shard->count() > 0;
    run_export(*args);
  });
}

}  // namespace anvil::cli
