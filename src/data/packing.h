// Tokenized samples into fixed-length rows: the one place that decides what a row holds,
// so that every record format (text, prompt/completion, chat) packs the same way.
//
// A row is stored as ids and one flag byte per token (5 bytes a token, the layout of the
// token cache, data/token_cache.h); targets, positions and segments follow from them:
//   kTrainTarget at t: the prediction of ids[t+1] from ids[..t] is trained (same document);
//   kDocStart at t: a document, or the padding at the end of the row, starts at t.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace anvil::data {

inline constexpr std::int32_t kIgnoreTarget = -100;
inline constexpr std::uint8_t kTrainTarget = 1;
inline constexpr std::uint8_t kDocStart = 2;

// What happens to a sample longer than seq_len.
enum class Overflow {
  overflow_truncate,  // keep its first seq_len tokens
  overflow_split,     // cut it into documents of seq_len tokens (each its own positions)
  overflow_drop,      // leave it out
};

struct PackStats {
  std::int64_t samples = 0;         // samples that reached the rows (a split one counts once)
  std::int64_t documents = 0;       // documents in the rows (a split sample gives several)
  std::int64_t tokens = 0;          // tokens in documents (not padding)
  std::int64_t trained_tokens = 0;  // trained predictions
  std::int64_t truncated = 0;       // samples cut to seq_len
  std::int64_t split = 0;           // samples cut into several documents
  std::int64_t dropped_long = 0;    // samples left out for their length (overflow: drop)
  std::int64_t dropped_untrained = 0;  // samples (or split pieces) with nothing trained in them
  bool operator==(const PackStats&) const = default;
};

// (count, seq_len) packed rows; the arrays live in `storage` (the packer's vectors or a
// mapped cache file), so copies of a SequenceSet share them.
struct SequenceSet {
  std::int64_t seq_len = 0, count = 0;
  std::int32_t pad_id = 0;
  const std::int32_t* ids = nullptr;
  const std::uint8_t* flags = nullptr;
  PackStats stats;
  std::shared_ptr<const void> storage;

  // Row `row` as the model reads it: input ids, targets (kIgnoreTarget where not trained),
  // positions restarting at each document, segment numbers 0, 1, ... (the padding is a
  // segment of its own). Each output holds seq_len values.
  void expand_row(std::int64_t row, std::int32_t* ids_out, std::int32_t* targets, std::int32_t* positions,
                  std::int32_t* segments) const;
  std::int64_t trained_tokens(std::int64_t row) const;
  // Trained predictions / token slots: the share of the compute that trains something.
  double efficiency() const;
};

// Greedy, in the order samples arrive: a document goes into the open row when it fits,
// otherwise the row is padded and a new one opened. Without packing every document has a
// row of its own.
class SequencePacker {
 public:
  SequencePacker(std::int64_t seq_len, bool packing, std::int32_t pad_id, Overflow overflow = Overflow::overflow_truncate);

  // trained[i]: whether predicting ids[i] from ids[..i-1] is trained (trained[0] is unused).
  // No target points across a document's end.
  void add(std::span<const std::int32_t> ids, std::span<const std::uint8_t> trained);
  // Pads the last row and hands over the set; the packer is empty afterwards.
  SequenceSet finish();

 private:
  void add_document(std::span<const std::int32_t> ids, std::span<const std::uint8_t> trained);
  void close_row();

  std::int64_t seq_len_;
  bool packing_;
  std::int32_t pad_id_;
  Overflow overflow_;
  std::vector<std::int32_t> ids_;
  std::vector<std::uint8_t> flags_;
  PackStats stats_;
  std::int64_t count_ = 0;
  bool row_open_ = false;
  std::int64_t row_fill_ = 0;  // tokens in the open row
};

// A set owning copies of the given arrays (tests, and sets built in memory).
SequenceSet sequence_set_from(std::int64_t seq_len, std::int32_t pad_id, std::vector<std::int32_t> ids,
                              std::vector<std::uint8_t> flags, const PackStats& stats);

const char* overflow_name(Overflow overflow);

}  // namespace anvil::data
