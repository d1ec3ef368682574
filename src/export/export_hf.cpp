// The merged Hugging Face model: base tensors streamed from the mapping, an adapter folded
// into each targeted projection block by block, cast, appended to the current shard.
#include "export/export_hf.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "export/export.h"
#include "export/export_config.h"
#include "export/merged_source.h"
#include "export/shard_writer.h"
#include "io/files.h"
#include "io/safetensors.h"
#include "model/model_spec.h"

namespace anvil::exporting {

namespace {

}  // namespace

void merged_tensor_write(ShardedWriter& out, MergedSource& source, std::size_t i, DType dtype,
                         std::vector<float>& f32, std::vector<std::uint8_t>& cast) {
  const MergedSource::Tensor& t = source.tensors()[i];
  if (const TensorView* stored = source.stored(i); stored != nullptr && stored->dtype == dtype) {
    const auto* bytes = static_cast<const std::uint8_t*>(stored->data);
    const std::size_t n = stored->nbytes(), chunk = MergedSource::kBlockElems * dtype_size(dtype);
    for (std::size_t at = 0; at < n; at += chunk) {
      out.append(bytes + at, std::min(chunk, n - at));
      io::mapping_pages_release(bytes + at, std::min(chunk, n - at));
    }
    return;
  }
  const std::int64_t rows_per_block = source.block_rows(i);
  const auto block = static_cast<std::size_t>(std::min(rows_per_block, t.rows) * t.cols);  // one row may exceed a block
  if (f32.size() < block) f32.resize(block);
  if (cast.size() < block * dtype_size(dtype)) cast.resize(block * dtype_size(dtype));
  for (std::int64_t row = 0; row < t.rows; row += rows_per_block) {
    const std::int64_t m = std::min(rows_per_block, t.rows - row);
    source.read_rows(i, row, m, f32.data());  // (m, cols)
    f32_store_as(f32.data(), m * t.cols, dtype, cast.data());
    out.append(cast.data(), static_cast<std::size_t>(m * t.cols) * dtype_size(dtype));
  }
  source.release(i);
}

DType export_default_dtype(const std::string& base_dir) {
  const std::string path = base_dir + "/config.json";
  const auto cfg = nlohmann::json::parse(io::read_text_file(path), nullptr, false);
  ANVIL_CHECK_INPUT(cfg.is_object(), path, ": not a JSON object");
  for (const char* key : {"torch_dtype", "dtype"}) {
    const auto it = cfg.find(key);
    if (it == cfg.end() || !it->is_string()) continue;
    const std::string v = it->get<std::string>();
    if (v == "float32") return DType::dtype_f32;
    if (v == "bfloat16") return DType::dtype_bf16;
    if (v == "float16") return DType::dtype_f16;
  }
  const auto weights = model::model_weights_open(base_dir);
  const auto* embed = weights.find("model.embed_tokens.weight");
  if (embed && (embed->info->dtype == DType::dtype_bf16 || embed->info->dtype == DType::dtype_f16))
    return embed->info->dtype;
  return DType::dtype_f32;
}

DType export_dtype_resolve(const ExportOptions& options, const std::string& base_dir) {
  const DType dtype = options.dtype ? *options.dtype : export_default_dtype(base_dir);
  ANVIL_CHECK_INPUT(dtype == DType::dtype_f32 || dtype == DType::dtype_bf16 || dtype == DType::dtype_f16,
                    "export: --dtype must be f32, bf16 or f16, got ", dtype_short_name(dtype));
  return dtype;
}

ExportSummary merged_dir_finish(ShardedWriter& out, const MergedSource& source, ExportSummary summary,
                                const nlohmann::ordered_json& cfg, const std::string& base_dir, const std::string& dir,
                                DType dtype, ShardRanks ranks) {
  out.finish();
  // A rank's share cannot tell; export_to_dir checks the total over ranks.
  if (ranks.size == 1)
    ANVIL_CHECK(summary.merged == source.merged_count(), "export: merged ", summary.merged, " of ",
                source.merged_count(), " adapted weights");
  if (ranks.rank == 0) {
    export_config_write(cfg, dir);
    export_side_files_copy(base_dir, dir);
  }
  summary.out_dir = dir;
  summary.dtype = dtype;
  summary.shards = out.owned_shard_count();
  summary.bytes = out.owned_bytes();
  return summary;
}

ExportSummary export_hf_merged(const ExportAdapter& adapter, const std::string& dir, const ExportOptions& options,
                               ShardRanks ranks) {
  const DType dtype = export_dtype_resolve(options, adapter.base_dir);
  MergedSource source(adapter);
  // In the base's own order. Every rank plans all tensors, so that the shards (and their
  // names) come out as one process would write them.
  std::vector<ShardTensor> planned;
  for (const auto& t : source.tensors()) planned.push_back({t.stored_name, dtype, t.shape});
  ShardedWriter out(dir, planned, options.max_shard_bytes, ranks);
  std::vector<float> f32;
  std::vector<std::uint8_t> cast;
  ExportSummary summary;
  for (std::size_t i = 0; i < planned.size(); ++i) {
    if (!out.tensor_owned(i)) continue;
    ++summary.tensors;
    summary.merged += static_cast<std::size_t>(source.tensors()[i].adapters);
    merged_tensor_write(out, source, i, dtype, f32, cast);
  }
  return merged_dir_finish(out, source, summary, export_config_read(adapter.base_dir, dtype), adapter.base_dir, dir,
                           dtype, ranks);
}

}  // namespace anvil::exporting
