// The GGUF reader: a bounds-checked cursor over the mapping, the metadata and tensor-info
// sections, and the checks that every tensor lies aligned, inside the data section and
// apart from every other. Nothing here trusts the file (fuzzed in tests/fuzz).
#include "io/gguf.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "io/json_strict.h"

namespace anvil::io {

namespace {

using detail::escape_for_message;

constexpr std::uint32_t kMinVersion = 2;  // v1 used 32-bit counts and lengths
constexpr std::uint32_t kMaxVersion = 3;

// Reads little-endian values from [p, end), throwing a user error that names the file
// and what was being read when the bytes run out.
class Cursor {
 public:
  Cursor(const std::uint8_t* begin, std::size_t size, const std::string& label)
      : begin_(begin), pos_(begin), end_(begin + size), label_(label) {}

  std::uint64_t offset() const { return static_cast<std::uint64_t>(pos_ - begin_); }
  std::uint64_t remaining() const { return static_cast<std::uint64_t>(end_ - pos_); }

  template <typename T>
  T read(std::string_view what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, pos_, sizeof(T));  // the host is little-endian (static_assert below)
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(std::string_view what) {
    const auto n = read<std::uint64_t>(what);
    need(n, what);
    std::string s(reinterpret_cast<const char*>(pos_), static_cast<std::size_t>(n));
    pos_ += n;
    return s;
  }

  void need(std::uint64_t n, std::string_view what) const {
    ANVIL_CHECK_INPUT(n <= remaining(), label_, ": ", what, " at byte ", offset(), " needs ", n,
                      " bytes but the file ends ", remaining(), " bytes later (truncated?)");
  }

 private:
  const std::uint8_t* begin_;
  const std::uint8_t* pos_;
  const std::uint8_t* end_;
  const std::string& label_;
};

static_assert(std::endian::native == std::endian::little, "the GGUF reader assumes a little-endian host");

// The fewest bytes one array element of this type can take: bounds a declared count by
// what is left of the file before anything is allocated for it.
std::uint64_t min_value_bytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::gguf_u8:
    case GgufValueType::gguf_i8:
    case GgufValueType::gguf_bool: return 1;
    case GgufValueType::gguf_u16:
    case GgufValueType::gguf_i16: return 2;
    case GgufValueType::gguf_u32:
    case GgufValueType::gguf_i32:
    case GgufValueType::gguf_f32: return 4;
    case GgufValueType::gguf_string:
    case GgufValueType::gguf_u64:
    case GgufValueType::gguf_i64:
    case GgufValueType::gguf_f64: return 8;
    case GgufValueType::gguf_array: return 12;
  }
  return 0;
}

// The double whose decimal form is the float's shortest round-trip one: an rms eps
// stored as f32 1e-6 reads as 1e-6, not 9.99999997e-7, and goes into config.json so.
double f32_as_shortest_double(float f) {
  if (!std::isfinite(f)) return f;
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, f);
  double d = f;
  if (ec == std::errc()) std::from_chars(buf, end, d);
  return d;
}

GgufValueType read_value_type(Cursor& c, const std::string& label, const std::string& where) {
  const auto t = c.read<std::uint32_t>("a value type");
  ANVIL_CHECK_INPUT(t <= static_cast<std::uint32_t>(GgufValueType::gguf_f64), label, ": ", where,
                    ": unknown value type ", t, " (GGUF defines 0..12)");
  return static_cast<GgufValueType>(t);
}

GgufValue read_value(Cursor& c, GgufValueType type, const std::string& label, const std::string& where,
                     int depth);

void read_array(Cursor& c, GgufValue& v, const std::string& label, const std::string& where, int depth) {
  ANVIL_CHECK_INPUT(depth < GgufFile::kMaxArrayDepth, label, ": ", where, ": arrays nested deeper than ",
                    GgufFile::kMaxArrayDepth);
  v.elem_type = read_value_type(c, label, where);
  const auto count = c.read<std::uint64_t>("an array length");
  ANVIL_CHECK_INPUT(count <= c.remaining() / min_value_bytes(v.elem_type), label, ": ", where, ": array of ",
                    count, " ", gguf_value_type_name(v.elem_type), " values runs past the end of the file (",
                    c.remaining(), " bytes left; truncated?)");
  v.items.reserve(static_cast<std::size_t>(count));
  for (std::uint64_t k = 0; k < count; ++k) v.items.push_back(read_value(c, v.elem_type, label, where, depth + 1));
}

GgufValue read_value(Cursor& c, GgufValueType type, const std::string& label, const std::string& where,
                     int depth) {
  GgufValue v;
  v.type = type;
  switch (type) {
    case GgufValueType::gguf_u8: v.u = c.read<std::uint8_t>(where); break;
    case GgufValueType::gguf_i8: v.i = c.read<std::int8_t>(where); break;
    case GgufValueType::gguf_u16: v.u = c.read<std::uint16_t>(where); break;
    case GgufValueType::gguf_i16: v.i = c.read<std::int16_t>(where); break;
    case GgufValueType::gguf_u32: v.u = c.read<std::uint32_t>(where); break;
    case GgufValueType::gguf_i32: v.i = c.read<std::int32_t>(where); break;
    case GgufValueType::gguf_u64: v.u = c.read<std::uint64_t>(where); break;
    case GgufValueType::gguf_i64: v.i = c.read<std::int64_t>(where); break;
    case GgufValueType::gguf_f32: v.f = f32_as_shortest_double(c.read<float>(where)); break;
    case GgufValueType::gguf_f64: v.f = c.read<double>(where); break;
    case GgufValueType::gguf_bool: {
      v.u = c.read<std::uint8_t>(where);
      ANVIL_CHECK_INPUT(v.u <= 1, label, ": ", where, ": bool value ", v.u, " is neither 0 nor 1");
      break;
    }
    case GgufValueType::gguf_string: v.s = c.read_string(where); break;
    case GgufValueType::gguf_array: read_array(c, v, label, where, depth); break;
  }
  return v;
}

void read_metadata(Cursor& c, std::uint64_t kv_count, const std::string& label,
                   std::map<std::string, GgufValue, std::less<>>& out) {
  for (std::uint64_t k = 0; k < kv_count; ++k) {
    std::string key = c.read_string("a metadata key");
    const std::string where = str_cat("metadata '", escape_for_message(key), "'");
    ANVIL_CHECK_INPUT(!key.empty(), label, ": metadata entry ", k, " has an empty key");
    ANVIL_CHECK_INPUT(!out.contains(key), label, ": duplicate ", where);
    const GgufValueType type = read_value_type(c, label, where);
    GgufValue v = read_value(c, type, label, where, 0);
    out.emplace(std::move(key), std::move(v));
  }
}

GgufTensorInfo read_tensor_info(Cursor& c, const std::string& label) {
  GgufTensorInfo t;
  t.name = c.read_string("a tensor name");
  const std::string where = str_cat(label, ": tensor '", escape_for_message(t.name), "': ");
  const auto n_dims = c.read<std::uint32_t>("a tensor's dimension count");
  ANVIL_CHECK_INPUT(n_dims >= 1 && n_dims <= GgufFile::kMaxDims, where, n_dims, " dimensions (1..",
                    GgufFile::kMaxDims, " allowed)");
  for (std::uint32_t d = 0; d < n_dims; ++d) t.dims.push_back(c.read<std::uint64_t>("a tensor dimension"));
  t.type = c.read<std::uint32_t>("a tensor type");
  t.offset = c.read<std::uint64_t>("a tensor offset");

  const GgmlBlock block = ggml_block(t.type);
  ANVIL_CHECK_INPUT(block.elems != 0, where, "unknown ggml type ", t.type);
  constexpr std::uint64_t kMaxI64 = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  t.numel = 1;
  for (const std::uint64_t d : t.dims) {
    ANVIL_CHECK_INPUT(d <= kMaxI64 && (d == 0 || t.numel <= kMaxI64 / d), where, "element count of dims ",
                      Shape(t.shape()).str(), " overflows");
    t.numel *= d;
  }
  ANVIL_CHECK_INPUT(t.dims[0] % block.elems == 0, where, "row length ", t.dims[0], " is not a multiple of ",
                    ggml_type_name(t.type), "'s block of ", block.elems, " elements");
  const std::uint64_t blocks = t.numel / block.elems;
  ANVIL_CHECK_INPUT(blocks <= kMaxI64 / block.bytes, where, "byte length overflows");
  t.nbytes = blocks * block.bytes;
  return t;
}

std::uint32_t read_alignment(const std::map<std::string, GgufValue, std::less<>>& meta, const std::string& label) {
  const auto it = meta.find("general.alignment");
  if (it == meta.end()) return GgufFile::kDefaultAlignment;
  const GgufValue& v = it->second;
  ANVIL_CHECK_INPUT(v.type == GgufValueType::gguf_u32, label, ": general.alignment must be a u32, not ",
                    gguf_value_type_name(v.type));
  ANVIL_CHECK_INPUT(v.u != 0 && (v.u & (v.u - 1)) == 0, label, ": general.alignment ", v.u,
                    " is not a power of two");
  return static_cast<std::uint32_t>(v.u);
}

std::uint32_t read_version(Cursor& c, const std::string& label) {
  const auto version = c.read<std::uint32_t>("the version");
  const std::uint32_t swapped = __builtin_bswap32(version);
  ANVIL_CHECK_INPUT(!(swapped >= 1 && swapped <= 0xffff && version > 0xffff), label,
                    ": big-endian GGUF (version ", swapped, " written big-endian) is not supported");
  ANVIL_CHECK_INPUT(version >= kMinVersion && version <= kMaxVersion, label, ": GGUF version ", version,
                    " is not supported (", kMinVersion, " and ", kMaxVersion, " are)");
  return version;
}

}  // namespace

// ---- GgufFile -----------------------------------------------------------------------

GgufFile GgufFile::open(const std::string& path) {
  auto file = MappedFile::open(path);
  GgufFile g = parse(file->data(), file->size(), path);
  g.file_ = std::move(file);
  return g;
}

GgufFile GgufFile::parse(const std::uint8_t* bytes, std::size_t size, std::string label) {
  GgufFile g;
  g.bytes_ = bytes;
  g.size_ = size;
  g.label_ = std::move(label);
  const std::string& L = g.label_;

  ANVIL_CHECK_INPUT(size >= 4 && std::memcmp(bytes, "GGUF", 4) == 0, L,
                    ": not a GGUF file (it does not start with the magic 'GGUF')");
  Cursor c(bytes, size, L);
  c.read<std::uint32_t>("the magic");
  g.version_ = read_version(c, L);
  const auto tensor_count = c.read<std::uint64_t>("the tensor count");
  const auto kv_count = c.read<std::uint64_t>("the metadata count");
  // Each entry takes at least a string length and a type: bound the counts by the file.
  ANVIL_CHECK_INPUT(kv_count <= c.remaining() / 12, L, ": ", kv_count,
                    " metadata entries cannot fit in the rest of the file (truncated?)");
  read_metadata(c, kv_count, L, g.metadata_);
  ANVIL_CHECK_INPUT(tensor_count <= c.remaining() / 32, L, ": ", tensor_count,
                    " tensor infos cannot fit in the rest of the file (truncated?)");
  for (std::uint64_t k = 0; k < tensor_count; ++k) {
    g.tensors_.push_back(read_tensor_info(c, L));
    const auto [it, fresh] = g.by_name_.emplace(g.tensors_.back().name, g.tensors_.size() - 1);
    ANVIL_CHECK_INPUT(fresh, L, ": duplicate tensor '", escape_for_message(it->first), "'");
  }
  g.alignment_ = read_alignment(g.metadata_, L);
  g.check_data_section(c.offset());
  return g;
}

void GgufFile::check_data_section(std::uint64_t header_end) {
  const std::string& L = label_;
  const std::uint64_t a = alignment_;
  data_offset_ = (header_end + a - 1) / a * a;
  // With no tensors a file may end right after its header, before the padding.
  if (tensors_.empty() && data_offset_ > size_) data_offset_ = size_;
  ANVIL_CHECK_INPUT(data_offset_ <= size_, L, ": the data section (at byte ", data_offset_,
                    ") starts past the end of the file (", size_, " bytes; truncated?)");
  const std::uint64_t data_size = size_ - data_offset_;

  std::vector<const GgufTensorInfo*> by_offset;
  for (const auto& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensorInfo* x, const GgufTensorInfo* y) { return x->offset < y->offset; });
  std::uint64_t cursor = 0;
  for (const GgufTensorInfo* t : by_offset) {
    const std::string where = str_cat(L, ": tensor '", escape_for_message(t->name), "' (offset ", t->offset,
                                      ", ", t->nbytes, " bytes)");
    ANVIL_CHECK_INPUT(t->offset % a == 0, where, " is not aligned to ", a, " bytes");
    ANVIL_CHECK_INPUT(t->offset >= cursor, where, " overlaps the tensor before it, which ends at ", cursor);
    ANVIL_CHECK_INPUT(t->offset <= data_size && t->nbytes <= data_size - t->offset, where,
                      " runs past the end of the file (", data_size, " bytes of data; truncated?)");
    cursor = t->offset + t->nbytes;
  }
}

const GgufValue* GgufFile::find(std::string_view key) const {
  const auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

const GgufValue& GgufFile::get(std::string_view key, std::string_view wanted) const {
  const GgufValue* v = find(key);
  ANVIL_CHECK_INPUT(v != nullptr, label_, ": metadata '", key, "' is missing (", wanted, " expected)");
  return *v;
}

std::uint64_t GgufFile::get_u64(std::string_view key) const {
  const GgufValue& v = get(key, "an integer");
  ANVIL_CHECK_INPUT(v.is_integer() && v.i >= 0, label_, ": metadata '", key,
                    "' must be a non-negative integer, not ", gguf_value_type_name(v.type));
  return v.u + static_cast<std::uint64_t>(v.i);  // one of the two is 0
}

double GgufFile::get_f64(std::string_view key) const {
  const GgufValue& v = get(key, "a number");
  ANVIL_CHECK_INPUT(v.is_integer() || v.is_float(), label_, ": metadata '", key, "' must be a number, not ",
                    gguf_value_type_name(v.type));
  if (v.is_float()) return v.f;
  return v.i != 0 ? static_cast<double>(v.i) : static_cast<double>(v.u);
}

const std::string& GgufFile::get_string(std::string_view key) const {
  const GgufValue& v = get(key, "a string");
  ANVIL_CHECK_INPUT(v.type == GgufValueType::gguf_string, label_, ": metadata '", key,
                    "' must be a string, not ", gguf_value_type_name(v.type));
  return v.s;
}

const std::vector<GgufValue>& GgufFile::get_array(std::string_view key) const {
  const GgufValue& v = get(key, "an array");
  ANVIL_CHECK_INPUT(v.type == GgufValueType::gguf_array, label_, ": metadata '", key,
                    "' must be an array, not ", gguf_value_type_name(v.type));
  return v.items;
}

}  // namespace anvil::io
