// anvil export CHECKPOINT --out DIR [--format hf|peft|mlx] [--dtype bf16|f16|f32]
//                         [--max-shard-size 5GB] [--bits 4|8] [--group-size 32|64|128]
//                         [--base MODEL_DIR] [--force]
// anvil export CHECKPOINT --out FILE.gguf --format gguf [--type f16|q8_0|q4_k_m|...]
// anvil export CHECKPOINT --out FILE.gguf --format gguf-lora
//
// hf (default): the base model with the checkpoint's adapter merged in, as an HF model
// directory; peft: the adapter alone, as PEFT writes it; mlx: the merged model as an
// mlx-lm directory, quantized as mlx_lm.convert -q does with --bits; gguf: the merged model
// as one llama.cpp file of the given type; gguf-lora: the adapter as a llama.cpp LoRA file. The base model must be the one
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
#include "core/log.h"
#include "export/export.h"
#include "export/shard_writer.h"
#include "model/lora.h"
#include "model/model_spec.h"
#include "checkpoint/checkpoint_file.h"
#include "checkpoint/model_identity.h"
#include "train/config.h"

namespace anvil::cli {

namespace {

constexpr int kVllmMaxLoraRank = 512;

struct ExportArgs {
  std::string checkpoint;
  std::string out;
  std::string format = "hf";
  std::string dtype;  // empty: the base config's torch_dtype
  std::string max_shard_size = "5GB";
  std::string base;   // empty: the base path recorded in the checkpoint
  std::string type;   // gguf: llama.cpp's file type; empty: f16
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
  const bool gguf = o.format == exporting::ExportFormat::export_format_gguf;
  ANVIL_CHECK_INPUT(gguf || a.type.empty(), "export: --type applies to --format gguf only");
  if (gguf || o.format == exporting::ExportFormat::export_format_gguf_lora) {
    ANVIL_CHECK_INPUT(a.dtype.empty(), "export: --dtype applies to --format hf (--format gguf takes --type)");
    ANVIL_CHECK_INPUT(!a.max_shard_size_given, "export: --max-shard-size applies to --format hf only");
    if (gguf && !a.type.empty()) {
      try {
        o.gguf_type = io::gguf_file_type_from_name(a.type);
      } catch (const Error& e) {
        throw_user_error("export: --type: ", error_message(e));
      }
    }
    return o;
  }
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

// A base model directory in place of a checkpoint: the model as it is (an adapter of rank 1
// on q_proj, all zeros, adds exactly nothing), e.g. the GGUF base a gguf-lora adapter runs on.
checkpoint::CheckpointAdapter base_as_checkpoint(const std::string& dir) {
  checkpoint::CheckpointAdapter c;
  c.spec = model::model_spec_from_dir(dir);
  c.meta.lora.rank = 1;
  c.meta.lora.alpha = 1;
  c.meta.lora.targets[static_cast<int>(model::Proj::proj_q)] = true;
  c.meta.base_model_path = dir;
  c.params.assign(static_cast<std::size_t>(model::LoraLayout(c.spec, c.meta.lora).size()), 0.0f);
  return c;
}

void run_export(const ExportArgs& a) {
  // Under mpirun the ranks split the shards (export.h); each reads the checkpoint itself.
  comm::MpiSession mpi;
  const auto world = comm::mpi_comm_world();
  const exporting::ExportOptions options = options_resolve(a);
  const bool base_only = std::filesystem::is_regular_file(std::filesystem::path(a.checkpoint) / "config.json");
  ANVIL_CHECK_INPUT(!base_only || (a.base.empty() && options.format == exporting::ExportFormat::export_format_gguf),
                    "export: ", a.checkpoint, " is a model directory: it exports (without an adapter) to --format gguf only, "
                    "without --base");
  const checkpoint::CheckpointAdapter ckpt =
      base_only ? base_as_checkpoint(a.checkpoint) : checkpoint::checkpoint_read_adapter(a.checkpoint);
  const bool merged = options.format == exporting::ExportFormat::export_format_hf ||
                      options.format == exporting::ExportFormat::export_format_mlx ||
                      options.format == exporting::ExportFormat::export_format_gguf;
  exporting::ExportAdapter adapter{ckpt.spec, ckpt.meta.lora, ckpt.params.data(),
                                   base_only ? a.checkpoint : base_resolve(a, ckpt, merged), {}, 1};
  if (!base_only) {
    const train::TrainConfig trained = train::config_load_from_string(
        ckpt.meta.config_yaml, a.checkpoint + ": " + checkpoint::kMetaConfig, {}, train::ConfigContext{0, false});
    adapter.quant = train::quant_policy_from_config(trained);
    adapter.quant_tp = trained.parallel.tp;
  }
  const auto s = exporting::export_to_dir(adapter, a.out, options, {a.checkpoint}, *world);
  if (world->rank() != 0) return;
  // vLLM's LoRA loader takes ranks up to its largest --max-lora-rank, 512 (the merged
  // formats carry no rank).
  if (options.format == exporting::ExportFormat::export_format_peft && adapter.lora.rank > kVllmMaxLoraRank)
    log_warn("export: vLLM serves LoRA adapters of rank up to ", kVllmMaxLoraRank, "; this one has rank ",
             adapter.lora.rank, " (serve the merged export instead)");
  if (base_only) {
    std::printf("exported %s (no adapter, GGUF, %s): %zu tensors, %s\nwrote %s\n", a.checkpoint.c_str(),
                io::gguf_file_type_name(options.gguf_type), s.tensors, format_bytes(s.bytes).c_str(), s.out_dir.c_str());
    return;
  }
  using exporting::ExportFormat;
  std::string what = options.format == ExportFormat::export_format_hf     ? "merged into the base model"
                     : options.format == ExportFormat::export_format_mlx  ? "merged, for mlx-lm"
                     : options.format == ExportFormat::export_format_gguf ? "merged into the base model, GGUF"
                     : options.format == ExportFormat::export_format_peft ? "PEFT adapter"
                                                                          : "llama.cpp LoRA adapter";
  if (options.mlx_bits) what += str_cat(", ", options.mlx_bits, "-bit groups of ", options.mlx_group_size);
  const std::string type = options.format == ExportFormat::export_format_gguf
                               ? std::string(io::gguf_file_type_name(options.gguf_type))
                               : std::string(dtype_short_name(s.dtype));
  std::printf("exported step %lld of %s (%s, %s): %zu tensors", static_cast<long long>(ckpt.step),
              a.checkpoint.c_str(), what.c_str(), type.c_str(), s.tensors);
  if (merged) std::printf(", %zu merged, in %zu file%s", s.merged, s.shards, s.shards == 1 ? "" : "s");
  std::printf(", %s\nwrote %s\n", format_bytes(s.bytes).c_str(), s.out_dir.c_str());
}

}  // namespace

void register_export(CLI::App& app) {
  auto* cmd = app.add_subcommand("export", "Write merged HF safetensors, an mlx-lm model or a PEFT adapter from a checkpoint");
  auto args = std::make_shared<ExportArgs>();
  cmd->add_option("CHECKPOINT", args->checkpoint,
                  "a checkpoint written by anvil train (OUTPUT_DIR/checkpoints/step_N.h5); for --format gguf also a "
                  "model directory, written without an adapter")
      ->required();
  cmd->add_option("--out", args->out, "output directory, or file for gguf and gguf-lora (written whole, or not at all)")
      ->required();
  cmd->add_option("--format", args->format,
                  "hf: the merged model; peft: the adapter alone; mlx: the merged model for mlx-lm; gguf: the merged "
                  "model for llama.cpp; gguf-lora: the adapter for llama.cpp")
      ->default_val("hf");
  cmd->add_option("--type", args->type,
                  str_cat("gguf: llama.cpp's file type, one of ", io::gguf_file_type_names(),
                          " (default f16; q4_k and q5_k are its Q4_K_S and Q5_K_S)"));
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
