// A model's tensors streamed into safetensors shards the way Hugging Face's save_pretrained
// lays them out: one model.safetensors when everything fits under the shard limit, else
// model-0000i-of-0000n.safetensors plus model.safetensors.index.json
// ({"metadata": {"total_size": bytes}, "weight_map": {tensor: shard file}}).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "io/safetensors.h"

namespace anvil::exporting {

// "5GB", "500MB", "2GiB", "1234" (bytes): the max_shard_size spellings of HF, any case.
// A user error names `what` (the option) when the text is not a size.
std::uint64_t shard_size_parse(const std::string& text, const std::string& what);

struct ShardTensor {
  std::string name;
  DType dtype = DType::dtype_f32;
  Shape shape;
  std::uint64_t nbytes() const;
};

// Greedy in the given order: a shard ends when the next tensor would push it past
// max_bytes (a tensor larger than that gets a shard alone). Indices into `tensors`; never
// empty (no tensors: one empty shard).
std::vector<std::vector<std::size_t>> shard_plan(const std::vector<ShardTensor>& tensors,
                                                 std::uint64_t max_bytes);

// The ranks that write one export together: shard i is written by rank i % size, so
// every rank derives the same plan and the same owner for each shard without talking.
struct ShardRanks {
  int rank = 0;
  int size = 1;
  bool owns(std::size_t shard) const { return static_cast<int>(shard % static_cast<std::size_t>(size)) == rank; }
};

// "model.safetensors" for a single shard, else "model-00002-of-00005.safetensors".
std::string shard_file_name(std::size_t index, std::size_t count);

// Declared up front, then the bytes of every tensor in order, in chunks of any size; a
// shard is finished (and its file renamed into place) as soon as its last tensor is
// complete, so only the current shard is ever open and nothing is held in memory.
// A writer destroyed before finish() removes its open shard's partial file; finished
// shards stay (write into a staging directory, staged_dir.h, to drop them too).
// With several ranks each writer takes the bytes of its own shards' tensors only
// (tensor_owned), in the same order; rank 0 writes the index.
class ShardedWriter {
 public:
  ShardedWriter(std::string dir, std::vector<ShardTensor> tensors, std::uint64_t max_shard_bytes,
                ShardRanks ranks = {});
  ~ShardedWriter();
  ShardedWriter(const ShardedWriter&) = delete;
  ShardedWriter& operator=(const ShardedWriter&) = delete;

  // Whether this rank writes tensor i (it lies in one of this rank's shards).
  bool tensor_owned(std::size_t i) const { return ranks_.owns(shard_of_[i]); }
  // Bytes of the current tensor (the first owned one not yet complete).
  void append(const void* data, std::size_t nbytes);
  // Finishes the last shard and writes the index when there are several. Misuse (too
  // many or too few bytes) is an internal error.
  void finish();

  std::size_t shard_count() const { return plan_.size(); }
  std::uint64_t total_bytes() const { return total_bytes_; }
  // This rank's share: the shards it writes and their tensor bytes.
  std::size_t owned_shard_count() const;
  std::uint64_t owned_bytes() const;

 private:
  void skip_complete();
  // Finishes the open shard unless it is `shard`, and opens `shard`.
  void open_shard(std::size_t shard);

  std::uint64_t owned_left(std::size_t i) const { return tensor_owned(i) ? tensors_[i].nbytes() : 0; }

  std::string dir_;
  std::vector<ShardTensor> tensors_;
  ShardRanks ranks_;
  std::vector<std::vector<std::size_t>> plan_;
  std::vector<std::size_t> shard_of_;  // by tensor
  std::uint64_t total_bytes_ = 0;
  std::size_t current_ = 0;     // the tensor receiving bytes
  std::uint64_t left_ = 0;      // bytes of it still to come
  std::size_t open_shard_ = 0;  // valid while writer_ is set
  std::unique_ptr<io::SafetensorsWriter> writer_;
  bool finished_ = false;
};

}  // namespace anvil::exporting
