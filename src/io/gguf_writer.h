// Writing GGUF files (the layout io/gguf.h reads): the header is laid out first, from the
// metadata and each tensor's name, dims and type, which fixes every tensor's offset; the
// data is then written tensor by tensor at those offsets, by one process or by several
// (each its own tensors), and the bytes are the same either way.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/gguf.h"

namespace anvil::io {

// One metadata entry.
struct GgufKv {
  std::string key;
  GgufValue value;
};

GgufValue gguf_value_string(std::string s);
GgufValue gguf_value_u32(std::uint32_t v);
GgufValue gguf_value_i32(std::int32_t v);
GgufValue gguf_value_f32(float v);
GgufValue gguf_value_bool(bool v);
GgufValue gguf_value_array(GgufValueType elem_type, std::vector<GgufValue> items);
GgufValue gguf_value_strings(const std::vector<std::string>& items);
GgufValue gguf_value_i32s(const std::vector<std::int32_t>& items);
GgufValue gguf_value_f32s(const std::vector<float>& items);

struct GgufTensorDecl {
  std::string name;
  std::vector<std::uint64_t> dims;  // ggml order: dims[0] is the row length
  std::uint32_t type = 0;           // GgmlType
};

class GgufLayout {
 public:
  // Checks what the reader would refuse (duplicate keys or names, a row that is not whole
  // blocks of its type, unknown types) as internal errors: the caller built them.
  GgufLayout(const std::vector<GgufKv>& metadata, std::vector<GgufTensorDecl> tensors,
             std::uint32_t alignment = GgufFile::kDefaultAlignment);

  // Everything before the data section, padding included.
  const std::string& header() const { return header_; }
  const std::vector<GgufTensorDecl>& tensors() const { return tensors_; }
  // From the start of the file.
  std::uint64_t tensor_offset(std::size_t i) const { return header_.size() + offsets_[i]; }
  std::uint64_t tensor_bytes(std::size_t i) const { return bytes_[i]; }
  std::uint64_t row_bytes(std::size_t i) const;
  std::uint64_t file_size() const { return file_size_; }

 private:
  std::vector<GgufTensorDecl> tensors_;
  std::string header_;
  std::vector<std::uint64_t> offsets_;  // into the data section
  std::vector<std::uint64_t> bytes_;
  std::uint64_t file_size_ = 0;
};

// A GGUF file written at known offsets. The creating process writes the header and gives
// the file its full size on disk (allocated, so a disk without room fails here, before
// anything is computed; the padding reads as zeros); then any number of processes open it
// and write their tensors' bytes.
class GgufFileWriter {
 public:
  static void create(const std::string& path, const GgufLayout& layout);
  GgufFileWriter(const std::string& path, const GgufLayout& layout);
  ~GgufFileWriter();
  GgufFileWriter(const GgufFileWriter&) = delete;
  GgufFileWriter& operator=(const GgufFileWriter&) = delete;

  // Bytes [at, at + n) of tensor i; a user error names the file when the write fails.
  void write(std::size_t i, std::uint64_t at, const void* data, std::size_t n);
  // Flushes this process's writes to disk.
  void sync();

 private:
  std::string path_;
  const GgufLayout& layout_;
  int fd_ = -1;
};

}  // namespace anvil::io
