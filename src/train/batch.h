// Rows of a SequenceSet gathered into one contiguous micro-batch, and the evaluation pass
// over a whole set.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "comm/comm.h"
#include "data/packing.h"
#include "model/llama.h"

namespace anvil::train {

// Host buffers of one micro-batch, (B, T) each, reused every step.
class BatchBuffers {
 public:
  BatchBuffers(std::int64_t rows, std::int64_t seq);
  // rows[0..count) of `set` as one batch; row_offset: the first row's index in the global
  // batch (dropout masks are keyed by it, so any DP split draws the same ones).
  model::TokenBatch gather(const data::SequenceSet& set, const std::int64_t* rows, std::int64_t count,
                           std::int64_t row_offset);

 private:
  std::vector<std::int32_t> ids_, targets_, positions_, segments_;
};

// Mean token loss over the whole set (no dropout), and the token count. Micro-batch i goes
// to data-parallel replica i mod dp; the sums meet in one all-reduce over `dp`. `lockstep`
// (expert parallelism): every rank runs as many forwards as the busiest one.
std::pair<double, std::int64_t> evaluate(model::LlamaModel& model, const data::SequenceSet& set,
                                         std::int64_t micro_batch, BatchBuffers& buf, comm::Comm& dp,
                                         bool lockstep = false);

}  // namespace anvil::train
