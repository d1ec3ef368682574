// safetensors: the weight format of the Hugging Face ecosystem.
//
// Layout: u64 little-endian header length N, N bytes of UTF-8 JSON
//   {"__metadata__": {str: str}, "name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...}
// then the data buffer; offsets are relative to its start. The reader maps the file and
// validates it strictly; the writer streams tensors one at a time.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"

namespace anvil::io {

// Drops the pages of a read-only mapping that lie entirely inside [p, p + n) from this
// process (madvise DONTNEED): after their bytes were copied they are dead weight, and the
// kernel maps whole page-cache folios (up to 2 MiB) around every byte read. Pages shared
// with neighbouring bytes stay; a later read faults the pages back in from the file, and
// a failing madvise only costs memory.
void mapping_pages_release(const void* p, std::size_t n);

// A read-only memory mapping of a whole file.
class MappedFile {
 public:
  // Throws a user error naming the path if it cannot be opened or mapped.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  std::string path_;
};

struct TensorInfo {
  std::string name;
  DType dtype = DType::dtype_f32;
  Shape shape;
  std::uint64_t begin = 0;  // offsets into the data buffer (after the header)
  std::uint64_t end = 0;
};

// One validated safetensors file.
class SafetensorsFile {
 public:
  static constexpr std::uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;

  // Maps and validates `path`; any violation is a user error naming the file and the rule.
  static SafetensorsFile open(const std::string& path);
  // Validates bytes already in memory (`label` names them in errors). The bytes must
  // outlive the object. Used by the fuzzer and by tests.
  static SafetensorsFile parse(const std::uint8_t* bytes, std::size_t size, std::string label);

  const std::string& path() const { return label_; }
  // Tensors in data-buffer order.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // nullptr when absent.
  const TensorInfo* find(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // A view into the mapping. The data is read-only even though TensorView holds void*.
  // Only the data buffer's start is 8-byte aligned: a tensor after one of a smaller dtype
  // may be misaligned for its own type (files from Hugging Face order tensors by dtype
  // size, so theirs are aligned), so load elements with memcpy or check the alignment.
  TensorView view(const TensorInfo& t) const;
  std::uint64_t header_bytes() const { return header_bytes_; }

 private:
  std::shared_ptr<MappedFile> file_;
  const std::uint8_t* bytes_ = nullptr;
  std::size_t size_ = 0;
  std::string label_;
  std::uint64_t header_bytes_ = 0;
  std::vector<TensorInfo> tensors_;
  std::vector<std::uint32_t> by_name_;  // indices into tensors_, sorted by name
  std::map<std::string, std::string> metadata_;
};

// A single file or a Hugging Face model directory (model.safetensors, or shards listed in
// model.safetensors.index.json) seen as one set of named tensors.
class SafetensorsModel {
 public:
  // `path` is a .safetensors file, a model directory, or a model.safetensors.index.json
  // (any *.json path is read as an index). Every tensor of every shard must be listed in
  // the index under that shard, and every listed tensor must be there. Errors name the
  // file (and the tensor).
  static SafetensorsModel open(const std::string& path);
  // Entries point into files_, so a copy would dangle; moving keeps them valid.
  SafetensorsModel(const SafetensorsModel&) = delete;
  SafetensorsModel& operator=(const SafetensorsModel&) = delete;
  SafetensorsModel(SafetensorsModel&&) = default;
  SafetensorsModel& operator=(SafetensorsModel&&) = default;

  struct Entry {
    const SafetensorsFile* file;
    const TensorInfo* info;
    std::string_view name;  // the model's name for it: info->name, less the prefix of keep_under
  };
  // All tensors, sorted by name.
  std::vector<Entry> tensors() const;
  // nullptr when absent.
  const Entry* find(std::string_view name) const;
  const std::vector<SafetensorsFile>& files() const { return files_; }

  // Narrows the model to the tensors whose names start with `prefix`, found under their
  // names without it (a multimodal checkpoint's text model: "language_model.model.norm.weight"
  // as "model.norm.weight"); the others move to outside(), which find() and tensors() no
  // longer see. files() still lists every tensor under its stored name.
  void keep_under(std::string_view prefix);
  const std::string& prefix() const { return prefix_; }
  const std::vector<Entry>& outside() const { return outside_; }

 private:
  SafetensorsModel() = default;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, Entry, std::less<>> by_name_;
  std::string prefix_;
  std::vector<Entry> outside_;
};

// Streams a safetensors file: declare every tensor (name, dtype, shape) first, then write
// their bytes in declaration order, in one or several chunks each. The file is written
// as `path + ".partial"` and renamed into place by finish(); a writer destroyed before
// finish() removes the partial file, so nothing half-written is left behind.
//
// Header: JSON with keys sorted by name, "__metadata__" (default {"format": "pt"}; left
// out when the map is empty), padded with spaces to a multiple of 8 bytes. Data: tensors
// in declaration order, contiguous (declare larger dtypes first to keep every tensor
// aligned for its type).
// Misuse (declaring after data was written, too many or too few bytes) is an internal
// error; failing to create, write or rename the file is a user error naming it.
class SafetensorsWriter {
 public:
  explicit SafetensorsWriter(std::string path,
                             std::map<std::string, std::string> metadata = {{"format", "pt"}});
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  void declare(std::string name, DType dtype, Shape shape);
  // Appends bytes of the current tensor (the first declared one not yet complete).
  void append(const void* data, std::size_t nbytes);
  // Declared-order convenience: checks `name` is the next tensor, writes it whole.
  void write_tensor(std::string_view name, const void* data, std::size_t nbytes);
  // Flushes, fsyncs and renames into place. Throws if a declared tensor is incomplete.
  void finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace anvil::io
