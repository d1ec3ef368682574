// GGUF: the single-file model format of llama.cpp (weights, hyperparameters, tokenizer).
//
// Layout (all little-endian):
//   "GGUF"  u32 version (2 or 3)  u64 tensor_count  u64 kv_count
//   kv_count × { string key, u32 value_type, value }
//   tensor_count × { string name, u32 n_dims, u64 dims[n_dims], u32 ggml_type, u64 offset }
//   padding to general.alignment (default 32), then the data section; tensor offsets are
//   relative to its start and multiples of the alignment.
// A string is u64 length + bytes; an array is u32 element type + u64 count + elements.
// dims are in ggml order: dims[0] is the fastest-varying (a row), so a ggml [ne0, ne1]
// tensor is a row-major (ne1, ne0) matrix.
//
// The reader maps the file and validates everything before handing out a byte view, so
// any input either parses or throws a user error naming the file and the rule it breaks.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "io/safetensors.h"  // MappedFile

namespace anvil::io {

enum class GgufValueType : std::uint32_t {
  gguf_u8 = 0,
  gguf_i8 = 1,
  gguf_u16 = 2,
  gguf_i16 = 3,
  gguf_u32 = 4,
  gguf_i32 = 5,
  gguf_f32 = 6,
  gguf_bool = 7,
  gguf_string = 8,
  gguf_array = 9,
  gguf_u64 = 10,
  gguf_i64 = 11,
  gguf_f64 = 12,
};

const char* gguf_value_type_name(GgufValueType t);

// One metadata value. Integers are widened to u64/i64 and floats to double as they are
// read; `type` keeps the type the file declared. An array keeps its element type and its
// items (which may themselves be arrays).
struct GgufValue {
  GgufValueType type = GgufValueType::gguf_u8;
  std::uint64_t u = 0;  // u8..u64, bool
  std::int64_t i = 0;   // i8..i64
  double f = 0;         // f32, f64
  std::string s;        // string
  GgufValueType elem_type = GgufValueType::gguf_u8;  // array
  std::vector<GgufValue> items;                      // array

  bool is_integer() const;
  bool is_float() const;
};

// ggml tensor types. The reader knows the block layout of every one (to check sizes);
// which of them can be converted to floats is up to gguf_dequant.h.
enum class GgmlType : std::uint32_t {
  ggml_f32 = 0,
  ggml_f16 = 1,
  ggml_q4_0 = 2,
  ggml_q4_1 = 3,
  ggml_q5_0 = 6,
  ggml_q5_1 = 7,
  ggml_q8_0 = 8,
  ggml_q8_1 = 9,
  ggml_q2_k = 10,
  ggml_q3_k = 11,
  ggml_q4_k = 12,
  ggml_q5_k = 13,
  ggml_q6_k = 14,
  ggml_q8_k = 15,
  ggml_bf16 = 30,
};

// Elements per block and bytes per block of a ggml type id; {0, 0} for an unknown id.
struct GgmlBlock {
  std::uint32_t elems = 0;
  std::uint32_t bytes = 0;
};
GgmlBlock ggml_block(std::uint32_t type);
// "Q4_K", "IQ2_XXS", ... or "type <id>" for an id ggml does not define.
std::string ggml_type_name(std::uint32_t type);

struct GgufTensorInfo {
  std::string name;
  std::uint32_t type = 0;           // a GgmlType value (possibly one anvil cannot convert)
  std::vector<std::uint64_t> dims;  // ggml order: dims[0] is the row length
  std::uint64_t offset = 0;         // into the data section
  std::uint64_t nbytes = 0;
  std::uint64_t numel = 0;

  // The row-major shape: dims reversed, as Hugging Face names it.
  Shape shape() const;
};

class GgufFile {
 public:
  static constexpr std::uint32_t kDefaultAlignment = 32;
  static constexpr std::uint32_t kMaxDims = 4;  // GGML_MAX_DIMS
  static constexpr int kMaxArrayDepth = 4;

  // Maps and validates `path`; any violation is a user error naming the file and the rule.
  static GgufFile open(const std::string& path);
  // Validates bytes already in memory (`label` names them in errors); they must outlive
  // the object. Used by the fuzzer and by tests.
  static GgufFile parse(const std::uint8_t* bytes, std::size_t size, std::string label);

  const std::string& path() const { return label_; }
  std::uint32_t version() const { return version_; }
  std::uint32_t alignment() const { return alignment_; }
  std::uint64_t data_offset() const { return data_offset_; }  // from the start of the file
  const std::map<std::string, GgufValue, std::less<>>& metadata() const { return metadata_; }
  // nullptr when absent.
  const GgufValue* find(std::string_view key) const;
  // Tensors in the order the file lists them.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;
  // The tensor's bytes inside the mapping (nbytes long, validated to lie in the file).
  const std::uint8_t* data(const GgufTensorInfo& t) const { return bytes_ + data_offset_ + t.offset; }

  // Typed metadata lookups: a user error naming the key when it is absent or has another
  // type. Any integer type is accepted where the value fits.
  std::uint64_t get_u64(std::string_view key) const;
  double get_f64(std::string_view key) const;  // any integer or float
  const std::string& get_string(std::string_view key) const;
  const std::vector<GgufValue>& get_array(std::string_view key) const;

 private:
  // Places the data section after the header and checks every tensor lies inside it.
  void check_data_section(std::uint64_t header_end);
  const GgufValue& get(std::string_view key, std::string_view wanted) const;

  std::shared_ptr<MappedFile> file_;
  const std::uint8_t* bytes_ = nullptr;
  std::size_t size_ = 0;
  std::string label_;
  std::uint32_t version_ = 0;
  std::uint32_t alignment_ = kDefaultAlignment;
  std::uint64_t data_offset_ = 0;
  std::map<std::string, GgufValue, std::less<>> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, std::size_t, std::less<>> by_name_;
};

}  // namespace anvil::io
