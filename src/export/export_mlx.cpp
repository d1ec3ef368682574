// The merged model as an mlx-lm model directory. mlx_lm.load reads config.json, the weights
// of every model*.safetensors and the tokenizer files, so the layout is the hf export's; what
// differs is what mlx-lm expects inside:
//   - with --bits, the modules mlx_lm.convert -q quantizes are written as MLX's affine
//     quantization (mlx_quant.h): `weight` (packed uint32), `scales`, `biases` (the model
//     dtype), and config.json gets the "quantization" block (and its copy
//     "quantization_config", as mlx_lm's save_config writes it);
//   - a tied lm_head.weight is left out: mlx-lm's models drop it and use the embedding
//     (a quantized one's scales would be left over and refused by the loader).
// convert quantizes every module that has to_quantized (Linear, Embedding) whose weight's
// last dim divides by the group size; in the llama family those are exactly the 2-D
// `.weight` tensors (norms are 1-D). A layer skipped for its size records nothing in the
// config: mlx_lm.load quantizes only the layers whose `scales` it finds.
#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "export/export.h"
#include "export/export_config.h"
#include "export/export_hf.h"
#include "export/merged_source.h"
#include "export/mlx_quant.h"
#include "export/shard_writer.h"

namespace anvil::exporting {

namespace {

bool mlx_quantizes(const MergedSource::Tensor& t, int group_size) {
  return t.shape.rank() == 2 && t.name.ends_with(".weight") && t.cols % group_size == 0;
}

// x rounded to `dtype` in place: mlx_lm.convert casts the weights to the model dtype before
// it quantizes them.
void f32_round_to(float* x, std::int64_t n, DType dtype, std::vector<std::uint8_t>& scratch) {
  if (dtype == DType::dtype_f32) return;
  scratch.resize(static_cast<std::size_t>(n) * 2);
  f32_store_as(x, n, dtype, scratch.data());
  for (std::int64_t k = 0; k < n; ++k) {
    std::uint16_t h;
    std::memcpy(&h, scratch.data() + 2 * k, 2);
    x[k] = dtype == DType::dtype_bf16 ? bf16_to_f32(h) : f16_to_f32(h);
  }
}

// The three parts of tensor i, planned at [first, first + 3): weight, scales, biases. The
// weight streams in row blocks; scales and biases (1/group_size of it) are held until it is
// done. A rank owning any part computes all, and appends the parts it owns.
struct QuantScratch {
  std::vector<float> f32, scales, biases;
  std::vector<std::uint32_t> packed;
  std::vector<std::uint8_t> rounded, scales_out, biases_out;
};

void quantized_write(ShardedWriter& out, std::size_t first, MergedSource& source, std::size_t i, MlxQuant q,
                     DType dtype, QuantScratch& s) {
  const MergedSource::Tensor& t = source.tensors()[i];
  const std::int64_t groups = t.cols / q.group_size, words = mlx_quant_words(t.cols, q.bits);
  const std::int64_t rows_per_block = source.block_rows(i);
  const std::int64_t block = std::min(rows_per_block, t.rows);
  s.f32.resize(static_cast<std::size_t>(block * t.cols));
  s.packed.resize(static_cast<std::size_t>(block * words));
  s.scales.resize(static_cast<std::size_t>(block * groups));
  s.biases.resize(static_cast<std::size_t>(block * groups));
  const std::size_t side_bytes = static_cast<std::size_t>(t.rows * groups) * dtype_size(dtype);
  s.scales_out.resize(side_bytes);
  s.biases_out.resize(side_bytes);
  for (std::int64_t row = 0; row < t.rows; row += rows_per_block) {
    const std::int64_t m = std::min(rows_per_block, t.rows - row);
    source.read_rows(i, row, m, s.f32.data());  // (m, cols)
    f32_round_to(s.f32.data(), m * t.cols, dtype, s.rounded);
    mlx_quantize_rows(s.f32.data(), m, t.cols, q, s.packed.data(), s.scales.data(), s.biases.data());
    if (out.tensor_owned(first)) out.append(s.packed.data(), static_cast<std::size_t>(m * words) * 4);
    const std::size_t at = static_cast<std::size_t>(row * groups) * dtype_size(dtype);
    f32_store_as(s.scales.data(), m * groups, dtype, s.scales_out.data() + at);
    f32_store_as(s.biases.data(), m * groups, dtype, s.biases_out.data() + at);
  }
  if (out.tensor_owned(first + 1)) out.append(s.scales_out.data(), side_bytes);
  if (out.tensor_owned(first + 2)) out.append(s.biases_out.data(), side_bytes);
  source.release(i);
}

}  // namespace

ExportSummary export_mlx_merged(const ExportAdapter& adapter, const std::string& dir, const ExportOptions& options,
                                ShardRanks ranks) {
  const DType dtype = export_dtype_resolve(options, adapter.base_dir);
  const bool quantize = options.mlx_bits != 0;
  const MlxQuant q{options.mlx_bits, options.mlx_group_size};
  if (quantize) {
    ANVIL_CHECK_INPUT(mlx_quant_supported(q.bits, q.group_size), "export: --bits must be 4 or 8 and --group-size ",
                      "32, 64 or 128, got ", q.bits, " and ", q.group_size);
    // mlx-lm stacks a MoE model's experts when it loads them, and for Qwen3-MoE only their
    // weights, not scales and biases: quantized experts would have to be written stacked.
    ANVIL_CHECK_INPUT(!adapter.spec.is_moe(), "export: --format mlx --bits does not support mixture-of-experts ",
                      "models yet; export without --bits and quantize with mlx_lm.convert -q");
  }
  nlohmann::ordered_json cfg = export_config_read(adapter.base_dir, dtype);
  const auto tie = cfg.find("tie_word_embeddings");
  const bool tied = tie != cfg.end() && tie->is_boolean() && tie->get<bool>();

  MergedSource source(adapter);
  // Every rank plans all tensors (in the base's order), so that the shards come out as one
  // process would write them. by_source[k]: where source tensor k's first part is planned.
  std::vector<ShardTensor> planned;
  std::vector<std::size_t> by_source(source.tensors().size(), SIZE_MAX);
  std::vector<bool> quantized(source.tensors().size(), false);
  for (std::size_t k = 0; k < source.tensors().size(); ++k) {
    const MergedSource::Tensor& t = source.tensors()[k];
    if (tied && t.name == "lm_head.weight") continue;
    by_source[k] = planned.size();
    if (!quantize || !mlx_quantizes(t, q.group_size)) {
      planned.push_back({t.name, dtype, t.shape});
      continue;
    }
    quantized[k] = true;
    const std::string module = t.name.substr(0, t.name.size() - std::string(".weight").size());
    planned.push_back({t.name, DType::dtype_u32, Shape{t.rows, mlx_quant_words(t.cols, q.bits)}});
    planned.push_back({module + ".scales", dtype, Shape{t.rows, t.cols / q.group_size}});
    planned.push_back({module + ".biases", dtype, Shape{t.rows, t.cols / q.group_size}});
  }
  ShardedWriter out(dir, planned, options.max_shard_bytes, ranks);
  std::vector<float> f32;
  std::vector<std::uint8_t> cast;
  QuantScratch scratch;
  ExportSummary summary;
  for (std::size_t k = 0; k < source.tensors().size(); ++k) {
    const std::size_t first = by_source[k];
    if (first == SIZE_MAX) continue;
    const std::size_t parts = quantized[k] ? 3 : 1;
    bool any = false;
    for (std::size_t p = 0; p < parts; ++p) {
      if (!out.tensor_owned(first + p)) continue;
      any = true;
      ++summary.tensors;
    }
    if (!any) continue;
    // Counted once over the ranks: by the owner of the first part.
    if (out.tensor_owned(first)) summary.merged += static_cast<std::size_t>(source.tensors()[k].adapters);
    if (quantized[k])
      quantized_write(out, first, source, k, q, dtype, scratch);
    else
      merged_tensor_write(out, source, k, dtype, f32, cast);
  }
  if (quantize) {
    // mlx_lm.convert's block; its save_config repeats it as quantization_config.
    const nlohmann::ordered_json block = {{"group_size", q.group_size}, {"bits", q.bits}, {"mode", "affine"}};
    cfg["quantization"] = block;
    cfg["quantization_config"] = block;
  }
  return merged_dir_finish(out, source, summary, cfg, adapter.base_dir, dir, dtype, ranks);
}

}  // namespace anvil::exporting
