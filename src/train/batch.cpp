#include "train/batch.h"

#include <algorithm>

namespace anvil::train {

BatchBuffers::BatchBuffers(std::int64_t rows, std::int64_t seq) {
  const auto n = static_cast<std::size_t>(rows * seq);
  ids_.resize(n);
  targets_.resize(n);
  positions_.resize(n);
  segments_.resize(n);
}

model::TokenBatch BatchBuffers::gather(const data::SequenceSet& set, const std::int64_t* rows, std::int64_t count,
                                       std::int64_t row_offset) {
  const std::int64_t T = set.seq_len;
  for (std::int64_t i = 0; i < count; ++i)
    set.expand_row(rows[i], ids_.data() + i * T, targets_.data() + i * T, positions_.data() + i * T,
                   segments_.data() + i * T);
  model::TokenBatch b;
  b.batch = count;
  b.seq = T;
  b.ids = ids_.data();
  b.targets = targets_.data();
  b.positions = positions_.data();
  b.segments = segments_.data();
  b.row_offset = row_offset;
  return b;
}

std::pair<double, std::int64_t> evaluate(model::LlamaModel& model, const data::SequenceSet& set,
                                         std::int64_t micro_batch, BatchBuffers& buf, comm::Comm& dp,
                                         bool lockstep) {
  double sums[2] = {0.0, 0.0};  // loss, tokens
  std::vector<std::int64_t> rows;
  auto gather = [&](std::int64_t start) {
    const std::int64_t count = std::min(micro_batch, set.count - start);
    rows.clear();
    for (std::int64_t k = 0; k < count; ++k) rows.push_back(start + k);
    return buf.gather(set, rows.data(), count, 0);
  };
  // Batch i goes to rank i % size, in rounds of one batch per rank.
  const std::int64_t batches = (set.count + micro_batch - 1) / micro_batch;
  const std::int64_t rounds = (batches + dp.size() - 1) / dp.size();
  for (std::int64_t round = 0; round < rounds; ++round) {
    const std::int64_t i = round * dp.size() + dp.rank();
    if (i >= batches) {
      // The ep ranks exchange tokens inside every forward, so each must run one in every
      // round: this one runs the first batch again and drops its loss.
      if (lockstep) model.eval_loss(gather(0));
      continue;
    }
    const std::int64_t start = i * micro_batch;
    for (std::int64_t k = start; k < std::min(start + micro_batch, set.count); ++k)
      sums[1] += static_cast<double>(set.trained_tokens(k));
    sums[0] += model.eval_loss(gather(start));
  }
  dp.allreduce_sum(sums, 2);
  const auto tokens = static_cast<std::int64_t>(sums[1]);
  return {tokens > 0 ? sums[0] / sums[1] : 0.0, tokens};
}

}  // namespace anvil::train
