// The pieces of the hf writer that the mlx writer shares: the export dtype, a merged tensor
// streamed into the current shard as dense weights of that dtype, and the end of the export.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>
#include <string>

#include "core/dtype.h"
#include "export/export.h"
#include "export/merged_source.h"
#include "export/shard_writer.h"

namespace anvil::exporting {

// Tensor i of `source` in row blocks of about 4 MiB of fp32, cast to `dtype` and appended to
// `out`; a stored tensor already in that dtype is copied as its bytes are. f32 and cast are
// scratch buffers, grown as needed and reused across calls.
void merged_tensor_write(ShardedWriter& out, MergedSource& source, std::size_t i, DType dtype,
                         std::vector<float>& f32, std::vector<std::uint8_t>& cast);

// --dtype, or the base's (export_default_dtype); f32, bf16 or f16, else a user error.
DType export_dtype_resolve(const ExportOptions& options, const std::string& base_dir);

// Finishes `out` (its last shard, the index), checks on a single rank that every adapter was
// merged, writes `cfg` as config.json and the side files from rank 0, and returns `summary`
// (this rank's tensors and merged count) with this rank's shards and bytes.
ExportSummary merged_dir_finish(ShardedWriter& out, const MergedSource& source, ExportSummary summary,
                                const nlohmann::ordered_json& cfg, const std::string& base_dir, const std::string& dir,
                                DType dtype, ShardRanks ranks);

}  // namespace anvil::exporting
