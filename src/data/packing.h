// Tokenized samples into fixed-length rows: the one place that decides what a row holds,
// so that every record format (text, prompt/completion, and chat later) packs the same way.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace anvil::data {

// Fixed-length sequences, row-major (count, seq_len) arrays.
struct SequenceSet {
  std::int64_t seq_len = 0, count = 0;
  std::vector<std::int32_t> ids;        // (count, seq_len) input tokens; padding is pad_id
  std::vector<std::int32_t> targets;    // (count, seq_len) the token to predict after this position; -100 = not trained
  std::vector<std::int32_t> positions;  // (count, seq_len) restart at 0 for each sample (and for the padding)
  std::vector<std::int32_t> segments;   // (count, seq_len) sample number within the row, 0,1,2...; padding gets its own
  std::int32_t pad_id = 0;
  // Stats. samples: samples in the rows; truncated: samples cut to seq_len (kept or not);
  // dropped: samples left out because nothing of them was trained once cut to seq_len.
  std::int64_t samples = 0, trained_tokens = 0, truncated = 0, dropped = 0;
};

inline constexpr std::int32_t kIgnoreTarget = -100;

// Greedy, in the order samples arrive: a sample goes into the open row when it fits,
// otherwise the row is padded and a new one opened. A sample longer than seq_len is cut to
// its first seq_len tokens. Without packing every sample has a row of its own.
class SequencePacker {
 public:
  SequencePacker(std::int64_t seq_len, bool packing, std::int32_t pad_id);

  // trained[i]: whether predicting ids[i] from ids[i-1] is trained (trained[0] is unused).
  // No target points across the sample's end: its last token's target is kIgnoreTarget.
  void add(std::span<const std::int32_t> ids, std::span<const std::uint8_t> trained);
  // Pads the last row and hands over the set; the packer is empty afterwards.
  SequenceSet finish();

 private:
  void close_row();

  SequenceSet set_;
  bool packing_;
  bool row_open_ = false;
  std::int64_t row_fill_ = 0;      // tokens in the open row
  std::int32_t row_segments_ = 0;  // samples in the open row
};

}  // namespace anvil::data
