#include "data/packing.h"

#include <algorithm>

#include "core/error.h"

namespace anvil::data {

SequencePacker::SequencePacker(std::int64_t seq_len, bool packing, std::int32_t pad_id)
    : packing_(packing) {
  ANVIL_CHECK_INPUT(seq_len >= 2, "data: seq_len must be at least 2, not ", seq_len);
  set_.seq_len = seq_len;
  set_.pad_id = pad_id;
}

void SequencePacker::add(std::span<const std::int32_t> ids, std::span<const std::uint8_t> trained) {
  ANVIL_CHECK(ids.size() == trained.size(), ids.size(), " ids, ", trained.size(), " flags");
  const std::int64_t seq_len = set_.seq_len;
  const std::int64_t len = std::min<std::int64_t>(static_cast<std::int64_t>(ids.size()), seq_len);
  if (static_cast<std::int64_t>(ids.size()) > seq_len) ++set_.truncated;
  std::int64_t sample_trained = 0;
  for (std::int64_t t = 1; t < len; ++t) sample_trained += trained[t] != 0;
  if (sample_trained == 0) {
    // Nothing to learn (a prompt that fills seq_len): a row of ignored targets would only
    // cost compute, and a batch of them would have no loss at all.
    ++set_.dropped;
    return;
  }

  if (row_open_ && (!packing_ || row_fill_ + len > seq_len)) close_row();
  if (!row_open_) {
    ++set_.count;
    const auto size = static_cast<std::size_t>(set_.count * seq_len);
    set_.ids.resize(size);
    set_.targets.resize(size);
    set_.positions.resize(size);
    set_.segments.resize(size);
    row_open_ = true;
    row_fill_ = 0;
    row_segments_ = 0;
  }

  const std::int64_t base = (set_.count - 1) * seq_len + row_fill_;
  for (std::int64_t t = 0; t < len; ++t) {
    const auto i = static_cast<std::size_t>(base + t);
    set_.ids[i] = ids[t];
    set_.targets[i] = t + 1 < len && trained[t + 1] != 0 ? ids[t + 1] : kIgnoreTarget;
    set_.positions[i] = static_cast<std::int32_t>(t);
    set_.segments[i] = row_segments_;
  }
  row_fill_ += len;
  ++row_segments_;
  ++set_.samples;
  set_.trained_tokens += sample_trained;
}

void SequencePacker::close_row() {
  // The padding is a document of its own: attention masked by segment never lets a
  // sample see it, and its positions stay small.
  const std::int64_t base = (set_.count - 1) * set_.seq_len;
  for (std::int64_t t = row_fill_; t < set_.seq_len; ++t) {
    const auto i = static_cast<std::size_t>(base + t);
    set_.ids[i] = set_.pad_id;
    set_.targets[i] = kIgnoreTarget;
    set_.positions[i] = static_cast<std::int32_t>(t - row_fill_);
    set_.segments[i] = row_segments_;
  }
  row_open_ = false;
}

SequenceSet SequencePacker::finish() {
  if (row_open_) close_row();
  SequenceSet out = std::move(set_);
  set_ = SequenceSet{};
  set_.seq_len = out.seq_len;
  set_.pad_id = out.pad_id;
  return out;
}

}  // namespace anvil::data
