// Sharded safetensors output: the plan is fixed before the first byte (every shard's
// header must list its tensors), then bytes flow through one SafetensorsWriter at a time.
#include "export/shard_writer.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <utility>

#include "core/error.h"
#include "io/files.h"

namespace anvil::exporting {

std::uint64_t shard_size_parse(const std::string& text, const std::string& what) {
  std::size_t pos = 0;
  double value = 0;
  try {
    value = std::stod(text, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  std::string unit = pos > 0 ? text.substr(pos) : "?";
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  const std::pair<const char*, double> units[] = {{"", 1},          {"B", 1},          {"KB", 1e3},
                                                  {"MB", 1e6},      {"GB", 1e9},       {"KIB", 1024.0},
                                                  {"MIB", 1048576.0}, {"GIB", 1073741824.0}};
  for (const auto& [name, mult] : units)
    if (unit == name && value * mult >= 1 && value * mult < 1e18) return static_cast<std::uint64_t>(value * mult);
  throw_user_error(what, ": '", text, "' is not a size (e.g. 5GB, 500MB, 2GiB)");
}

std::uint64_t ShardTensor::nbytes() const {
  return static_cast<std::uint64_t>(shape.numel()) * dtype_size(dtype);
}

std::vector<std::vector<std::size_t>> shard_plan(const std::vector<ShardTensor>& tensors,
                                                 std::uint64_t max_bytes) {
  ANVIL_CHECK(max_bytes > 0, "shard size must be positive");
  std::vector<std::vector<std::size_t>> shards(1);
  std::uint64_t bytes = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const std::uint64_t b = tensors[i].nbytes();
    if (!shards.back().empty() && bytes + b > max_bytes) {
      shards.emplace_back();
      bytes = 0;
    }
    shards.back().push_back(i);
    bytes += b;
  }
  return shards;
}

std::string shard_file_name(std::size_t index, std::size_t count) {
  if (count == 1) return "model.safetensors";
  char name[64];
  std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", index + 1, count);
  return name;
}

ShardedWriter::ShardedWriter(std::string dir, std::vector<ShardTensor> tensors, std::uint64_t max_shard_bytes,
                             ShardRanks ranks)
    : dir_(std::move(dir)), tensors_(std::move(tensors)), ranks_(ranks) {
  ANVIL_CHECK(ranks_.size > 0 && ranks_.rank >= 0 && ranks_.rank < ranks_.size, "bad shard ranks ", ranks_.rank,
              " of ", ranks_.size);
  plan_ = shard_plan(tensors_, max_shard_bytes);
  shard_of_.resize(tensors_.size());
  for (std::size_t s = 0; s < plan_.size(); ++s)
    for (const std::size_t i : plan_[s]) shard_of_[i] = s;
  for (const auto& t : tensors_) total_bytes_ += t.nbytes();
  if (!tensors_.empty()) left_ = owned_left(0);
}

std::size_t ShardedWriter::owned_shard_count() const {
  std::size_t n = 0;
  for (std::size_t s = 0; s < plan_.size(); ++s) n += ranks_.owns(s) ? 1 : 0;
  return n;
}

std::uint64_t ShardedWriter::owned_bytes() const {
  std::uint64_t n = 0;
  for (std::size_t i = 0; i < tensors_.size(); ++i) n += owned_left(i);
  return n;
}

ShardedWriter::~ShardedWriter() = default;

void ShardedWriter::open_shard(std::size_t s) {
  if (writer_ && open_shard_ == s) return;
  if (writer_) writer_->finish();
  writer_ = std::make_unique<io::SafetensorsWriter>(dir_ + "/" + shard_file_name(s, plan_.size()));
  for (const std::size_t i : plan_[s]) writer_->declare(tensors_[i].name, tensors_[i].dtype, tensors_[i].shape);
  open_shard_ = s;
}

// Moves past complete tensors and those of other ranks' shards (complete from the start,
// as far as this rank is concerned). Each owned one's shard is opened on the way, so that
// a shard whose tensors are all empty is still written.
void ShardedWriter::skip_complete() {
  while (current_ < tensors_.size() && left_ == 0) {
    if (tensor_owned(current_)) open_shard(shard_of_[current_]);
    if (++current_ < tensors_.size()) left_ = owned_left(current_);
  }
}

void ShardedWriter::append(const void* data, std::size_t nbytes) {
  ANVIL_CHECK(!finished_, "append after finish() in ", dir_);
  const auto* p = static_cast<const std::uint8_t*>(data);
  while (nbytes > 0) {
    skip_complete();
    ANVIL_CHECK(current_ < tensors_.size(), "more data than declared for the shards in ", dir_);
    open_shard(shard_of_[current_]);
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left_, nbytes));
    writer_->append(p, n);
    p += n;
    nbytes -= n;
    left_ -= n;
  }
}

void ShardedWriter::finish() {
  ANVIL_CHECK(!finished_, "finish() twice in ", dir_);
  skip_complete();
  ANVIL_CHECK(current_ == tensors_.size(), "tensor '", current_ < tensors_.size() ? tensors_[current_].name : "",
              "' is incomplete (", left_, " bytes missing) in ", dir_);
  if (tensors_.empty() && ranks_.owns(0)) open_shard(0);  // no tensors: one empty model.safetensors
  if (writer_) writer_->finish();  // null on a rank that owns no shard
  writer_.reset();
  finished_ = true;
  if (plan_.size() == 1 || ranks_.rank != 0) return;
  nlohmann::json weight_map = nlohmann::json::object();
  for (std::size_t i = 0; i < tensors_.size(); ++i)
    weight_map[tensors_[i].name] = shard_file_name(shard_of_[i], plan_.size());
  const nlohmann::json index = {{"metadata", {{"total_size", total_bytes_}}}, {"weight_map", weight_map}};
  io::write_text_file_atomic(dir_ + "/model.safetensors.index.json", index.dump(2) + "\n");
}

}  // namespace anvil::exporting
