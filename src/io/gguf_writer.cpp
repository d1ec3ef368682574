// The GGUF writer: header serialization, offsets, and positioned writes.
#include "io/gguf_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "core/error.h"

namespace anvil::io {

namespace {

constexpr std::uint32_t kVersion = 3;

template <typename T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));  // little-endian host (gguf.cpp)
}

void put_string(std::string& out, const std::string& s) {
  put<std::uint64_t>(out, s.size());
  out += s;
}

// The value's bytes without its type tag (an array's tag and count included).
void put_value(std::string& out, GgufValueType type, const GgufValue& v) {
  switch (type) {
    case GgufValueType::gguf_u8: put<std::uint8_t>(out, static_cast<std::uint8_t>(v.u)); return;
    case GgufValueType::gguf_i8: put<std::int8_t>(out, static_cast<std::int8_t>(v.i)); return;
    case GgufValueType::gguf_u16: put<std::uint16_t>(out, static_cast<std::uint16_t>(v.u)); return;
    case GgufValueType::gguf_i16: put<std::int16_t>(out, static_cast<std::int16_t>(v.i)); return;
    case GgufValueType::gguf_u32: put<std::uint32_t>(out, static_cast<std::uint32_t>(v.u)); return;
    case GgufValueType::gguf_i32: put<std::int32_t>(out, static_cast<std::int32_t>(v.i)); return;
    case GgufValueType::gguf_f32: put<float>(out, static_cast<float>(v.f)); return;
    case GgufValueType::gguf_bool: put<std::uint8_t>(out, v.u != 0); return;
    case GgufValueType::gguf_string: put_string(out, v.s); return;
    case GgufValueType::gguf_u64: put<std::uint64_t>(out, v.u); return;
    case GgufValueType::gguf_i64: put<std::int64_t>(out, v.i); return;
    case GgufValueType::gguf_f64: put<double>(out, v.f); return;
    case GgufValueType::gguf_array:
      put<std::uint32_t>(out, static_cast<std::uint32_t>(v.elem_type));
      put<std::uint64_t>(out, v.items.size());
      for (const GgufValue& item : v.items) {
        ANVIL_CHECK(item.type == v.elem_type, "gguf: an array of ", gguf_value_type_name(v.elem_type), " holds a ",
                    gguf_value_type_name(item.type));
        put_value(out, v.elem_type, item);
      }
      return;
  }
  ANVIL_CHECK(false, "gguf: value type ", static_cast<std::uint32_t>(type));
}

std::uint64_t align_up(std::uint64_t n, std::uint64_t alignment) { return (n + alignment - 1) / alignment * alignment; }

template <typename T, typename F>
GgufValue array_of(GgufValueType elem, const std::vector<T>& items, F make) {
  GgufValue v;
  v.type = GgufValueType::gguf_array;
  v.elem_type = elem;
  v.items.reserve(items.size());
  for (const T& x : items) v.items.push_back(make(x));
  return v;
}

}  // namespace

GgufValue gguf_value_string(std::string s) {
  GgufValue v;
  v.type = GgufValueType::gguf_string;
  v.s = std::move(s);
  return v;
}

GgufValue gguf_value_u32(std::uint32_t x) {
  GgufValue v;
  v.type = GgufValueType::gguf_u32;
  v.u = x;
  return v;
}

GgufValue gguf_value_i32(std::int32_t x) {
  GgufValue v;
  v.type = GgufValueType::gguf_i32;
  v.i = x;
  return v;
}

GgufValue gguf_value_f32(float x) {
  GgufValue v;
  v.type = GgufValueType::gguf_f32;
  v.f = x;
  return v;
}

GgufValue gguf_value_bool(bool x) {
  GgufValue v;
  v.type = GgufValueType::gguf_bool;
  v.u = x ? 1 : 0;
  return v;
}

GgufValue gguf_value_array(GgufValueType elem_type, std::vector<GgufValue> items) {
  GgufValue v;
  v.type = GgufValueType::gguf_array;
  v.elem_type = elem_type;
  v.items = std::move(items);
  return v;
}

GgufValue gguf_value_strings(const std::vector<std::string>& items) {
  return array_of(GgufValueType::gguf_string, items, [](const std::string& s) { return gguf_value_string(s); });
}

GgufValue gguf_value_i32s(const std::vector<std::int32_t>& items) {
  return array_of(GgufValueType::gguf_i32, items, gguf_value_i32);
}

GgufValue gguf_value_f32s(const std::vector<float>& items) {
  return array_of(GgufValueType::gguf_f32, items, gguf_value_f32);
}

GgufLayout::GgufLayout(const std::vector<GgufKv>& metadata, std::vector<GgufTensorDecl> tensors,
                       std::uint32_t alignment)
    : tensors_(std::move(tensors)) {
  ANVIL_CHECK(alignment > 0 && alignment % 8 == 0, "gguf: alignment ", alignment);
  std::set<std::string> keys;
  bool alignment_key = false;
  put<std::uint32_t>(header_, 0x46554747u);  // "GGUF"
  put<std::uint32_t>(header_, kVersion);
  put<std::uint64_t>(header_, tensors_.size());
  put<std::uint64_t>(header_, metadata.size());
  for (const GgufKv& kv : metadata) {
    ANVIL_CHECK(keys.insert(kv.key).second, "gguf: metadata key ", kv.key, " twice");
    if (kv.key == "general.alignment") alignment_key = kv.value.u == alignment;
    put_string(header_, kv.key);
    put<std::uint32_t>(header_, static_cast<std::uint32_t>(kv.value.type));
    put_value(header_, kv.value.type, kv.value);
  }
  ANVIL_CHECK(alignment == GgufFile::kDefaultAlignment || alignment_key, "gguf: alignment ", alignment,
              " without general.alignment");
  std::set<std::string> names;
  std::uint64_t offset = 0;
  for (const GgufTensorDecl& t : tensors_) {
    ANVIL_CHECK(names.insert(t.name).second, "gguf: tensor ", t.name, " twice");
    ANVIL_CHECK(!t.dims.empty() && t.dims.size() <= GgufFile::kMaxDims, "gguf: tensor ", t.name, " has ",
                t.dims.size(), " dims");
    const GgmlBlock block = ggml_block(t.type);
    ANVIL_CHECK(block.elems > 0 && t.dims[0] % block.elems == 0, "gguf: tensor ", t.name, " rows of ", t.dims[0],
                " are not whole ", ggml_type_name(t.type), " blocks");
    std::uint64_t numel = 1;
    for (std::uint64_t d : t.dims) numel *= d;
    put_string(header_, t.name);
    put<std::uint32_t>(header_, static_cast<std::uint32_t>(t.dims.size()));
    for (std::uint64_t d : t.dims) put<std::uint64_t>(header_, d);
    put<std::uint32_t>(header_, t.type);
    put<std::uint64_t>(header_, offset);
    offsets_.push_back(offset);
    bytes_.push_back(numel / block.elems * block.bytes);
    offset = align_up(offset + bytes_.back(), alignment);
  }
  header_.resize(align_up(header_.size(), alignment), '\0');
  file_size_ = header_.size() + offset;
}

std::uint64_t GgufLayout::row_bytes(std::size_t i) const {
  const GgmlBlock block = ggml_block(tensors_[i].type);
  return tensors_[i].dims[0] / block.elems * block.bytes;
}

void GgufFileWriter::create(const std::string& path, const GgufLayout& layout) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ANVIL_CHECK_INPUT(fd >= 0, path, ": cannot create: ", std::strerror(errno));
  const auto fail = [&](const char* what, int err) {
    ::close(fd);
    throw_user_error(path, ": ", what, ": ", std::strerror(err));
  };
  // The whole file is allocated now: a disk without room for it fails before any work.
  if (const int err = ::posix_fallocate(fd, 0, static_cast<off_t>(layout.file_size())); err != 0)
    fail(str_cat("cannot allocate ", layout.file_size(), " bytes").c_str(), err);
  const std::string& h = layout.header();
  for (std::size_t done = 0; done < h.size();) {
    const ssize_t n = ::pwrite(fd, h.data() + done, h.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("cannot write the header", n < 0 ? errno : EIO);
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) fail("cannot sync", errno);
  ::close(fd);
}

GgufFileWriter::GgufFileWriter(const std::string& path, const GgufLayout& layout) : path_(path), layout_(layout) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  ANVIL_CHECK_INPUT(fd_ >= 0, path, ": cannot open for writing: ", std::strerror(errno));
}

GgufFileWriter::~GgufFileWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void GgufFileWriter::write(std::size_t i, std::uint64_t at, const void* data, std::size_t n) {
  ANVIL_CHECK(i < layout_.tensors().size() && at + n <= layout_.tensor_bytes(i), "gguf: bytes [", at, ", ", at + n,
              ") of tensor ", i);
  const auto* p = static_cast<const std::uint8_t*>(data);
  const std::uint64_t base = layout_.tensor_offset(i) + at;
  for (std::size_t done = 0; done < n;) {
    const ssize_t w = ::pwrite(fd_, p + done, n - done, static_cast<off_t>(base + done));
    if (w < 0 && errno == EINTR) continue;
    ANVIL_CHECK_INPUT(w > 0, path_, ": cannot write tensor ", layout_.tensors()[i].name, ": ",
                      std::strerror(w < 0 ? errno : EIO));
    done += static_cast<std::size_t>(w);
  }
}

void GgufFileWriter::sync() {
  ANVIL_CHECK_INPUT(::fsync(fd_) == 0, path_, ": cannot sync: ", std::strerror(errno));
}

}  // namespace anvil::io
