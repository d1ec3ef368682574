// anvil export: a trained LoRA adapter written for the tools people use next.
//   hf:   the base model with the adapter merged, W' = W + scale · B·A (fp32 math, then
//         cast), as a Hugging Face model directory: safetensors shards (+ index),
//         config.json, generation_config.json and the tokenizer files.
//   peft: the adapter alone, as PEFT writes it (adapter_config.json,
//         adapter_model.safetensors).
//   gguf: the merged model as one llama.cpp GGUF file (metadata, tokenizer, llama.cpp's q/k
//         row order), f32/f16/bf16 or quantized to a llama.cpp file type.
//   gguf-lora: the adapter alone as a llama.cpp LoRA GGUF (llama-cli --lora).
//   mlx:  the merged model as an mlx-lm model directory (mlx_lm.load reads it): the hf
//         layout, or with --bits MLX's affine quantization as mlx_lm.convert -q writes it.
// The merge streams one tensor at a time, in row blocks, straight from the base model's
// mapping into the current output shard: memory stays a few MiB whatever the model size.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "comm/comm.h"
#include "core/dtype.h"
#include "export/shard_writer.h"
#include "io/gguf_quant.h"
#include "model/lora.h"
#include "model/model_spec.h"
#include "quant/quant_state.h"

namespace anvil::exporting {

enum class ExportFormat {
  export_format_hf,
  export_format_peft,
  export_format_gguf,
  export_format_gguf_lora,
  export_format_mlx,
};

// The formats written as one file (--out FILE) rather than a directory.
bool export_format_is_file(ExportFormat f);

// "hf", "peft", "gguf", "gguf-lora", "mlx"; a user error names `what` for anything else.
ExportFormat export_format_parse(const std::string& text, const std::string& what);

struct ExportOptions {
  ExportFormat format = ExportFormat::export_format_hf;
  // hf, mlx: the dtype of the written weights; nullopt: the base config's torch_dtype.
  std::optional<DType> dtype;
  std::uint64_t max_shard_bytes = 5'000'000'000ull;  // hf, mlx: HF's default "5GB"
  int mlx_bits = 0;         // mlx: 4 or 8 (quantized, export/mlx_quant.h); 0: not quantized
  int mlx_group_size = 64;  // mlx with bits: elements per scale/bias (mlx_lm.convert's default)
  bool force = false;  // replace a non-empty output directory holding an earlier export
  // gguf: llama.cpp's file type (--type), which fixes each tensor's ggml type.
  io::GgufFileType gguf_type = io::GgufFileType::gguf_file_f16;
};

// The adapter to export, in the layout LoraLayout(spec, lora) (a checkpoint's, or any).
struct ExportAdapter {
  model::ModelSpec spec;
  model::LoraSpec lora;
  const float* params = nullptr;
  // The base model directory: merged into (hf), named in adapter_config.json (peft).
  std::string base_dir;
  // The quantization training ran with (model.quant, quant_skip) and its TP size: an hf
  // export writes those linear weights dequantized as training saw them, W_dq + scale·B·A.
  quant::QuantPolicy quant;
  int quant_tp = 1;
};

// With several ranks (export_to_dir over a communicator) each rank fills in its share;
// export_to_dir returns the totals.
struct ExportSummary {
  std::string out_dir;
  DType dtype = DType::dtype_f32;  // hf: of the weights; peft: f32
  std::size_t tensors = 0;         // written
  std::size_t merged = 0;          // hf: adapters folded into base tensors
  std::size_t shards = 0;          // hf: safetensors files
  std::uint64_t bytes = 0;         // of tensor data
};

// The dtype of the base config's torch_dtype (float32, bfloat16, float16); anything else
// (absent, "auto") falls back to the dtype the weights are stored in.
DType export_default_dtype(const std::string& base_dir);

// Writes the merged model into `dir`, an existing empty directory. The base must match
// `adapter.spec` (checked tensor by tensor); tensor names and order follow the base files.
// With ranks.size > 1 this rank writes only its shards (ShardRanks), and rank 0 also the
// config, tokenizer files and index: the ranks together write what one process would.
ExportSummary export_hf_merged(const ExportAdapter& adapter, const std::string& dir, const ExportOptions& options,
                               ShardRanks ranks = {});

// Writes the merged model as the GGUF file `path`. With several ranks each writes whole
// tensors of its own into the file rank 0 creates (`world` joins them; nullptr for one).
ExportSummary export_gguf(const ExportAdapter& adapter, const std::string& path, const ExportOptions& options,
                          ShardRanks ranks = {}, comm::Comm* world = nullptr);

// Writes the adapter as a llama.cpp LoRA GGUF file `path` (f32; alpha chosen so that
// llama.cpp's alpha / rank is anvil's scale).
ExportSummary export_gguf_lora(const ExportAdapter& adapter, const std::string& path);

// The merged model as an mlx-lm directory (export_mlx.cpp), split over ranks as hf is.
ExportSummary export_mlx_merged(const ExportAdapter& adapter, const std::string& dir, const ExportOptions& options,
                                ShardRanks ranks = {});

// Writes the adapter into `dir` in PEFT's layout, naming adapter.base_dir as the base.
ExportSummary export_peft(const ExportAdapter& adapter, const std::string& dir);

// The whole export: stages `out_dir` (staged_dir.h; `inputs` are the files the export
// reads, which the output must not replace, the base directory included), writes the
// format, renames into place. A failure leaves no out_dir behind (or the old one, with
// --force). For the single-file formats out_dir names the file.
ExportSummary export_to_dir(const ExportAdapter& adapter, const std::string& out_dir, const ExportOptions& options,
                            const std::vector<std::string>& inputs);

// The same, collective over `world`: rank 0 checks out_dir and stages it, every rank writes
// its hf or mlx shards into the staging directory (peft: rank 0 alone), and rank 0 renames it
// once all have succeeded. A rank's failure reaches all ranks with its message (each
// throws; rank 0 removes the staging directory first), so nothing is renamed. Returns the totals on every rank;
// out_dir is rank 0's (the others return it as given).
ExportSummary export_to_dir(const ExportAdapter& adapter, const std::string& out_dir, const ExportOptions& options,
                            const std::vector<std::string>& inputs, comm::Comm& world);

}  // namespace anvil::exporting
