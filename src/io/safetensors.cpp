// The safetensors reader: MappedFile and the strict validation of one file.
// Nothing here trusts the file: every offset is checked against the buffer before a view
// can be made, so any input either parses or throws a user error (fuzzed in tests/fuzz).
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/json_strict.h"

namespace anvil::io {

void mapping_pages_release(const void* p, std::size_t n) {
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t lo = (begin + page - 1) / page * page;
  const std::uintptr_t hi = (begin + n) / page * page;
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

using json = nlohmann::json;

// ---- MappedFile ---------------------------------------------------------------------

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_user_error(path, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw_user_error(path, ": cannot stat: ", std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw_user_error(path, ": not a regular file");
  }
  std::shared_ptr<MappedFile> file(new MappedFile());
  file->path_ = path;
  file->size_ = static_cast<std::size_t>(st.st_size);
  if (file->size_ > 0) {  // mmap of length 0 fails; an empty file simply has no bytes
    void* p = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw_user_error(path, ": cannot map: ", std::strerror(err));
    }
    file->data_ = static_cast<const std::uint8_t*>(p);
  }
  ::close(fd);  // the mapping keeps the file alive
  return file;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<std::uint8_t*>(data_), size_);
}

// ---- SafetensorsFile ----------------------------------------------------------------

namespace {

// A header needs three levels: the top object, a tensor entry, its shape list.
constexpr int kMaxHeaderDepth = 3;

std::uint64_t read_u64_le(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

TensorInfo parse_tensor_entry(const std::string& label, const std::string& name, const json& entry) {
  const std::string where = str_cat(label, ": tensor '", detail::escape_for_message(name), "': ");
  ANVIL_CHECK_INPUT(entry.is_object(), where, "entry is not a JSON object");
  for (const auto& item : entry.items()) {
    const std::string& key = item.key();
    ANVIL_CHECK_INPUT(key == "dtype" || key == "shape" || key == "data_offsets", where, "unknown field '",
                      detail::escape_for_message(key), "'");
  }
  const auto dtype_it = entry.find("dtype");
  const auto shape_it = entry.find("shape");
  const auto offsets_it = entry.find("data_offsets");
  ANVIL_CHECK_INPUT(dtype_it != entry.end() && dtype_it->is_string(), where, "missing or non-string 'dtype'");
  ANVIL_CHECK_INPUT(shape_it != entry.end() && shape_it->is_array(), where,
                    "'shape' must be a list of non-negative integers");
  ANVIL_CHECK_INPUT(offsets_it != entry.end() && offsets_it->is_array() && offsets_it->size() == 2, where,
                    "'data_offsets' must be a list [begin, end]");

  TensorInfo t;
  t.name = name;
  const std::string& dtype = dtype_it->get_ref<const std::string&>();
  const auto dt = dtype_from_name(dtype);
  ANVIL_CHECK_INPUT(dt.has_value(), where, "unknown dtype '", detail::escape_for_message(dtype),
                    "' (known: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
  t.dtype = *dt;

  const json& shape = *shape_it;
  ANVIL_CHECK_INPUT(shape.size() <= static_cast<std::size_t>(Shape::kMaxDims), where, "shape has ",
                    shape.size(), " dimensions (at most ", Shape::kMaxDims, " are supported)");
  // numel and its byte length are computed in u64 with explicit overflow checks; both
  // must also fit in the int64 that Shape and TensorView use.
  constexpr std::uint64_t kMaxI64 = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  std::uint64_t numel = 1;
  bool overflow = false;
  for (const auto& d : shape) {
    ANVIL_CHECK_INPUT(d.is_number_unsigned(), where, "'shape' must be a list of non-negative integers, got ",
                      detail::escape_for_message(shape.dump()));
    const std::uint64_t dim = d.get<std::uint64_t>();
    if (dim > kMaxI64 || (dim != 0 && numel > kMaxI64 / dim)) overflow = true;
    numel = overflow ? 0 : numel * dim;
    t.shape.push_back(static_cast<std::int64_t>(std::min(dim, kMaxI64)));
  }
  const std::uint64_t esize = dtype_size(t.dtype);
  ANVIL_CHECK_INPUT(!overflow && numel <= kMaxI64 / esize, where, "element count of shape ",
                    detail::escape_for_message(shape.dump()), " overflows");
  const std::uint64_t nbytes = numel * esize;

  for (const auto& o : *offsets_it)
    ANVIL_CHECK_INPUT(o.is_number_unsigned(), where, "'data_offsets' must be non-negative integers, got ",
                      detail::escape_for_message(offsets_it->dump()));
  t.begin = (*offsets_it)[0].get<std::uint64_t>();
  t.end = (*offsets_it)[1].get<std::uint64_t>();
  ANVIL_CHECK_INPUT(t.begin <= t.end, where, "data_offsets [", t.begin, ", ", t.end, "] are reversed");
  ANVIL_CHECK_INPUT(t.end - t.begin == nbytes, where, "byte length ", t.end - t.begin, " (data_offsets [",
                    t.begin, ", ", t.end, "]) does not match shape ", t.shape.str(), " of ", dtype, " (",
                    nbytes, " bytes)");
  return t;
}

}  // namespace

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  auto file = MappedFile::open(path);
  SafetensorsFile st = parse(file->data(), file->size(), path);
  st.file_ = std::move(file);
  return st;
}

SafetensorsFile SafetensorsFile::parse(const std::uint8_t* bytes, std::size_t size, std::string label) {
  SafetensorsFile st;
  st.bytes_ = bytes;
  st.size_ = size;
  st.label_ = std::move(label);
  const std::string& L = st.label_;

  ANVIL_CHECK_INPUT(size >= 8, L, ": too short for a safetensors file (", size,
                    " bytes; the 8-byte header length is missing)");
  const std::uint64_t n = read_u64_le(bytes);
  ANVIL_CHECK_INPUT(n <= kMaxHeaderBytes, L, ": header length ", n, " exceeds the limit of ", kMaxHeaderBytes,
                    " bytes");
  ANVIL_CHECK_INPUT(n <= size - 8, L, ": header length ", n, " runs past the end of the file (", size,
                    " bytes; truncated?)");
  st.header_bytes_ = n;

  const std::string_view text(reinterpret_cast<const char*>(bytes + 8), static_cast<std::size_t>(n));
  const json header = detail::parse_json_strict(text, L, "header", "tensor name", kMaxHeaderDepth);
  ANVIL_CHECK_INPUT(header.is_object(), L, ": header is not a JSON object (it is ", header.type_name(), ")");

  for (const auto& item : header.items()) {
    const std::string& key = item.key();
    const json& value = item.value();
    if (key == "__metadata__") {
      ANVIL_CHECK_INPUT(value.is_object(), L, ": __metadata__ must be an object of strings to strings");
      for (const auto& meta : value.items()) {
        ANVIL_CHECK_INPUT(meta.value().is_string(), L, ": __metadata__ value of '",
                          detail::escape_for_message(meta.key()), "' is not a string");
        st.metadata_[meta.key()] = meta.value().get<std::string>();
      }
      continue;
    }
    st.tensors_.push_back(parse_tensor_entry(L, key, value));
  }

  // The tensors must tile the data buffer exactly: in offset order each starts where the
  // previous ended, and the last ends at the end of the file. Empty tensors take no bytes.
  std::sort(st.tensors_.begin(), st.tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const std::uint64_t data_size = size - 8 - n;
  std::uint64_t cursor = 0;
  for (const auto& t : st.tensors_) {
    const std::string name = detail::escape_for_message(t.name);
    ANVIL_CHECK_INPUT(t.begin >= cursor, L, ": tensor '", name, "' (data_offsets [", t.begin, ", ", t.end,
                      "]) overlaps the tensor before it, which ends at ", cursor);
    ANVIL_CHECK_INPUT(t.end <= data_size, L, ": tensor '", name, "' (data_offsets [", t.begin, ", ", t.end,
                      "]) runs past the end of the file (", data_size,
                      " bytes of data after the header; truncated?)");
    ANVIL_CHECK_INPUT(t.begin == cursor, L, ": gap in the data buffer before tensor '", name, "' (bytes ",
                      cursor, "..", t.begin, " belong to no tensor)");
    cursor = t.end;
  }
  ANVIL_CHECK_INPUT(cursor == data_size, L, ": ", data_size - cursor,
                    " trailing bytes after the last tensor (the data buffer must end with the file)");

  st.by_name_.resize(st.tensors_.size());
  for (std::size_t i = 0; i < st.by_name_.size(); ++i) st.by_name_[i] = static_cast<std::uint32_t>(i);
  std::sort(st.by_name_.begin(), st.by_name_.end(),
            [&](std::uint32_t a, std::uint32_t b) { return st.tensors_[a].name < st.tensors_[b].name; });
  return st;
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  const auto it = std::lower_bound(by_name_.begin(), by_name_.end(), name,
                                   [&](std::uint32_t i, std::string_view n) { return tensors_[i].name < n; });
  if (it == by_name_.end() || tensors_[*it].name != name) return nullptr;
  return &tensors_[*it];
}

TensorView SafetensorsFile::view(const TensorInfo& t) const {
  // parse() proved begin <= end <= data size for every tensor it returned.
  ANVIL_CHECK(size_ >= 8 + header_bytes_ && t.end <= size_ - 8 - header_bytes_, "tensor '", t.name,
              "' is not from ", label_);
  auto* p = const_cast<std::uint8_t*>(bytes_ + 8 + header_bytes_ + t.begin);
  return TensorView{p, t.dtype, t.shape};
}

}  // namespace anvil::io
