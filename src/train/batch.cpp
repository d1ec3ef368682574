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
                                         std::int64_t micro_batch, BatchBuffers& buf, comm::Comm& dp) {
  double sums[2] = {0.0, 0.0};  // loss, tokens
  std::vector<std::int64_t> rows;
  for (std::int64_t start = 0, i = 0; start < set.count; start += micro_batch, ++i) {
    if (i % dp.size() != dp.rank()) continue;
    const std::int64_t count = std::min(micro_batch, set.count - start);
    rows.clear();
    for (std::int64_t k = 0; k < count; ++k) {
      rows.push_back(start + k);
      sums[1] += static_cast<double>(set.trained_tokens(start + k));
    }
    sums[0] += model.eval_loss(buf.gather(set, rows.data(), count, 0));
  }
  dp.allreduce_sum(sums, 2);
  const auto tokens = static_cast<std::int64_t>(sums[1]);
  return {tokens > 0 ? sums[0] / sums[1] : 0.0, tokens};
}

}  // namespace anvil::train
