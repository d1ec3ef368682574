#include "model/llama4_ops.h"

namespace anvil::model {

void llama4_chunk_segments(std::int32_t* out, const std::int32_t* segments, const std::int32_t* positions,
                           std::int64_t batch, std::int64_t seq, std::int64_t chunk) {
  for (std::int64_t b = 0; b < batch; ++b) {
    std::int32_t id = 0;
    for (std::int64_t t = 0; t < seq; ++t) {
      const std::int64_t i = b * seq + t;
      const bool same = t > 0 && positions[i] / chunk == positions[i - 1] / chunk &&
                        (!segments || segments[i] == segments[i - 1]);
      if (t > 0 && !same) ++id;
      out[i] = id;
    }
  }
}

}  // namespace anvil::model
