#include "data/packing.h"

#include <algorithm>

#include "core/error.h"

namespace anvil::data {

const char* overflow_name(Overflow overflow) {
  switch (overflow) {
    case Overflow::overflow_truncate: return "truncate";
    case Overflow::overflow_split: return "split";
    case Overflow::overflow_drop: return "drop";
  }
  return "?";
}

void SequenceSet::expand_row(std::int64_t row, std::int32_t* ids_out, std::int32_t* targets,
                             std::int32_t* positions, std::int32_t* segments) const {
  ANVIL_CHECK(row >= 0 && row < count, "row ", row, " of ", count);
  const std::int32_t* id = ids + row * seq_len;
  const std::uint8_t* flag = flags + row * seq_len;
  std::int32_t position = 0, segment = -1;
  for (std::int64_t t = 0; t < seq_len; ++t) {
    if ((flag[t] & kDocStart) != 0 || t == 0) {
      position = 0;
      ++segment;
    }
    ids_out[t] = id[t];
    targets[t] = (flag[t] & kTrainTarget) != 0 ? id[t + 1] : kIgnoreTarget;
    positions[t] = position++;
    segments[t] = segment;
  }
}

std::int64_t SequenceSet::trained_tokens(std::int64_t row) const {
  const std::uint8_t* flag = flags + row * seq_len;
  std::int64_t n = 0;
  for (std::int64_t t = 0; t < seq_len; ++t) n += flag[t] & kTrainTarget;
  return n;
}

double SequenceSet::efficiency() const {
  return count > 0 ? static_cast<double>(stats.trained_tokens) / static_cast<double>(count * seq_len) : 0.0;
}

SequencePacker::SequencePacker(std::int64_t seq_len, bool packing, std::int32_t pad_id, Overflow overflow)
    : seq_len_(seq_len), packing_(packing), pad_id_(pad_id), overflow_(overflow) {
  ANVIL_CHECK_INPUT(seq_len >= 2, "data: seq_len must be at least 2, not ", seq_len);
}

void SequencePacker::add(std::span<const std::int32_t> ids, std::span<const std::uint8_t> trained) {
  ANVIL_CHECK(ids.size() == trained.size(), ids.size(), " ids, ", trained.size(), " flags");
  const auto n = static_cast<std::int64_t>(ids.size());
  const std::int64_t documents_before = stats_.documents;
  if (n <= seq_len_) {
    add_document(ids, trained);
  } else if (overflow_ == Overflow::overflow_drop) {
    ++stats_.dropped_long;
  } else if (overflow_ == Overflow::overflow_truncate) {
    ++stats_.truncated;
    add_document(ids.first(static_cast<std::size_t>(seq_len_)), trained.first(static_cast<std::size_t>(seq_len_)));
  } else {
    ++stats_.split;
    for (std::int64_t from = 0; from < n; from += seq_len_) {
      const auto len = static_cast<std::size_t>(std::min(seq_len_, n - from));
      add_document(ids.subspan(static_cast<std::size_t>(from), len), trained.subspan(static_cast<std::size_t>(from), len));
    }
  }
  // A sample counts once it put a document in the rows (not all left out as untrained).
  stats_.samples += stats_.documents > documents_before;
}

void SequencePacker::add_document(std::span<const std::int32_t> ids, std::span<const std::uint8_t> trained) {
  const auto len = static_cast<std::int64_t>(ids.size());
  std::int64_t doc_trained = 0;
  for (std::int64_t t = 1; t < len; ++t) doc_trained += trained[t] != 0;
  if (doc_trained == 0) {
    // Nothing to learn (a prompt that fills seq_len, a one-token piece): a row of ignored
    // targets would only cost compute, and a batch of them would have no loss at all.
    ++stats_.dropped_untrained;
    return;
  }
  if (row_open_ && (!packing_ || row_fill_ + len > seq_len_)) close_row();
  if (!row_open_) {
    ++count_;
    const auto size = static_cast<std::size_t>(count_ * seq_len_);
    ids_.resize(size);
    flags_.resize(size);
    row_open_ = true;
    row_fill_ = 0;
  }
  const std::int64_t base = (count_ - 1) * seq_len_ + row_fill_;
  for (std::int64_t t = 0; t < len; ++t) {
    const auto i = static_cast<std::size_t>(base + t);
    ids_[i] = ids[t];
    std::uint8_t flag = t == 0 ? kDocStart : 0;
    if (t + 1 < len && trained[t + 1] != 0) flag |= kTrainTarget;
    flags_[i] = flag;
  }
  row_fill_ += len;
  ++stats_.documents;
  stats_.tokens += len;
  stats_.trained_tokens += doc_trained;
}

void SequencePacker::close_row() {
  // The padding is a document of its own: attention masked by segment never lets a
  // sample see it, and its positions stay small.
  const std::int64_t base = (count_ - 1) * seq_len_;
  for (std::int64_t t = row_fill_; t < seq_len_; ++t) {
    const auto i = static_cast<std::size_t>(base + t);
    ids_[i] = pad_id_;
    flags_[i] = t == row_fill_ ? kDocStart : 0;
  }
  row_open_ = false;
}

SequenceSet SequencePacker::finish() {
  if (row_open_) close_row();
  SequenceSet out = sequence_set_from(seq_len_, pad_id_, std::move(ids_), std::move(flags_), stats_);
  ids_.clear();
  flags_.clear();
  stats_ = PackStats{};
  count_ = 0;
  return out;
}

SequenceSet sequence_set_from(std::int64_t seq_len, std::int32_t pad_id, std::vector<std::int32_t> ids,
                              std::vector<std::uint8_t> flags, const PackStats& stats) {
  ANVIL_CHECK(seq_len > 0 && ids.size() == flags.size() && ids.size() % static_cast<std::size_t>(seq_len) == 0,
              ids.size(), " ids, ", flags.size(), " flags, seq_len ", seq_len);
  struct Owned {
    std::vector<std::int32_t> ids;
    std::vector<std::uint8_t> flags;
  };
  auto owned = std::make_shared<Owned>(Owned{std::move(ids), std::move(flags)});
  SequenceSet s;
  s.seq_len = seq_len;
  s.count = static_cast<std::int64_t>(owned->ids.size()) / seq_len;
  s.pad_id = pad_id;
  s.ids = owned->ids.data();
  s.flags = owned->flags.data();
  s.stats = stats;
  s.storage = std::move(owned);
  return s;
}

}  // namespace anvil::data
