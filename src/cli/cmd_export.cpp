// anvil export CHECKPOINT --out DIR [--format hf|peft|mlx] [--dtype bf16|f16|f32]
//                         [--max-shard-size 5GB] [--bits 4|8] [--group-size 32|64|128]
//                         [--base MODEL_DIR] [--force]
//
// hf (default): the base model with the checkpoint's adapter merged in, as an HF model
// directory; peft: the adapter alone, as PEFT writes it; mlx: the merged model as an
// mlx-lm directory, quantized as mlx_lm.convert -q does with --bits. The base model must be the one
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
  int bits = 0;         // mlx: 0 = not quantized
  int group_size = 64;  // mlx with --bits
  bool force = false;
  bool max_shard_size_given = false;
  bool group_size_given = false;
};

exporting::ExportOptions options_resolve(const ExportArgs& a) {
  exporting::ExportOptions o;
  o.format = exporting::export_format_parse(a.format, "export: --format");
  o.force = a.force;
  const bool mlx = o.format == exporting::ExportFormat::export_format_mlx;
  ANVIL_CHECK_INPUT(mlx || a.bits == 0, "export: --bits applies to --format mlx only");
  ANVIL_CHECK_INPUT(mlx || !a.group_size_given, "export: --group-size applies to --format mlx only");
  ANVIL_CHECK_INPUT(a.bits == 0 || a.bits == 4 || a.bits == 8, "export: --bits must be 4 or 8, got ", a.bits);
  ANVIL_CHECK_INPUT(a.group_size == 32 || a.group_size == 64 || a.group_size == 128,
                    "export: --group-size must be 32, 64 or 128, got ", a.group_size);
  ANVIL_CHECK_INPUT(a.bits != 0 || !a.group_size_given, "export: --group-size applies with --bits only");
  o.mlx_bits = a.bits;
  o.mlx_group_size = a.group_size;
  if (o.format == exporting::ExportFormat::export_format_peft) {
    // PEFT adapters are fp32 and one file; silently ignoring these would mislead.
    ANVIL_CHECK_INPUT(a.dtype.empty(), "export: --dtype applies to --format hf or mlx (a PEFT adapter is written in f32)");
    ANVIL_CHECK_INPUT(!a.max_shard_size_given, "export: --max-shard-size applies to --format hf or mlx only");
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
  const bool peft = options.format == exporting::ExportFormat::export_format_peft;
  const bool mlx = options.format == exporting::ExportFormat::export_format_mlx;
  exporting::ExportAdapter adapter{ckpt.spec, ckpt.meta.lora, ckpt.params.data(), base_resolve(a, ckpt, !peft), {}, 1};
  const train::TrainConfig trained = train::config_load_from_string(
      ckpt.meta.config_yaml, a.checkpoint + ": " + checkpoint::kMetaConfig, {}, train::ConfigContext{0, false});
  adapter.quant = train::quant_policy_from_config(trained);
  adapter.quant_tp = trained.parallel.tp;
  const auto s = exporting::export_to_dir(adapter, a.out, options, {a.checkpoint}, *world);
  if (world->rank() != 0) return;
  std::string what = peft ? "PEFT adapter" : mlx ? "merged, for mlx-lm" : "merged into the base model";
  if (mlx && options.mlx_bits) what += str_cat(", ", options.mlx_bits, "-bit groups of ", options.mlx_group_size);
  std::printf("exported step %lld of %s (%s, %s): %zu tensors", static_cast<long long>(ckpt.step),
              a.checkpoint.c_str(), what.c_str(), std::string(dtype_short_name(s.dtype)).c_str(), s.tensors);
  if (!peft) std::printf(", %zu merged, in %zu file%s", s.merged, s.shards, s.shards == 1 ? "" : "s");
  std::printf(", %s\nwrote %s\n", format_bytes(s.bytes).c_str(), s.out_dir.c_str());
}

}  // namespace

void register_export(CLI::App& app) {
  auto* cmd = app.add_subcommand("export", "Write merged HF safetensors, an mlx-lm model or a PEFT adapter from a checkpoint");
  auto args = std::make_shared<ExportArgs>();
  cmd->add_option("CHECKPOINT", args->checkpoint, "a checkpoint written by anvil train (OUTPUT_DIR/checkpoints/step_N.h5)")
      ->required();
  cmd->add_option("--out", args->out, "output directory (written whole, or not at all)")->required();
  cmd->add_option("--format", args->format, "hf: the merged model; peft: the adapter alone; mlx: the merged model for mlx-lm")
      ->default_val("hf");
  cmd->add_option("--dtype", args->dtype, "hf: weight dtype, bf16, f16 or f32 (default: the base model's torch_dtype)");
  auto* shard = cmd->add_option("--max-shard-size", args->max_shard_size, "hf: largest safetensors file (e.g. 5GB, 500MB)")
                    ->default_val("5GB");
  cmd->add_option("--bits", args->bits, "mlx: quantize as mlx_lm.convert -q does, 4 or 8 bits (default: not quantized)");
  auto* group = cmd->add_option("--group-size", args->group_size, "mlx with --bits: weights per scale, 32, 64 or 128")
                    ->default_val(64);
  cmd->add_option("--base", args->base,
                  "the base model directory (default: the one recorded in the checkpoint; it must be that model)");
  cmd->add_flag("--force", args->force, "replace an existing export in --out");
  cmd->callback([args, shard, group] {
    args->max_shard_size_given = shard->count() > 0;
    args->group_size_given = group->count() > 0;
    run_export(*args);
  });
}

}  // namespace anvil::cli
