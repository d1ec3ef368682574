// The piece of the hf writer that the mlx writer shares: a merged tensor streamed into the
// current shard as dense weights of the export dtype.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "export/merged_source.h"
#include "export/shard_writer.h"

namespace anvil::exporting {

// Tensor i of `source` in row blocks of about 4 MiB of fp32, cast to `dtype` and appended to
// `out`; a stored tensor already in that dtype is copied as its bytes are. f32 and cast are
// scratch buffers, grown as needed and reused across calls.
void merged_tensor_write(ShardedWriter& out, MergedSource& source, std::size_t i, DType dtype,
                         std::vector<float>& f32, std::vector<std::uint8_t>& cast);

}  // namespace anvil::exporting
