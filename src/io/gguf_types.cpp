// GGUF's value types and ggml's tensor types: names and block layouts.
#include <array>

#include "core/error.h"
#include "io/gguf.h"

namespace anvil::io {

namespace {

struct GgmlTypeRow {
  std::uint32_t id;
  const char* name;
  GgmlBlock block;
};

// Every ggml type id a GGUF file may carry, with (elements, bytes) per block as ggml
// defines them. QK_K-quants use 256-element super-blocks.
constexpr std::array kGgmlTypes = {
    GgmlTypeRow{0, "F32", {1, 4}},
    GgmlTypeRow{1, "F16", {1, 2}},
    GgmlTypeRow{2, "Q4_0", {32, 2 + 16}},
    GgmlTypeRow{3, "Q4_1", {32, 2 + 2 + 16}},
    GgmlTypeRow{6, "Q5_0", {32, 2 + 4 + 16}},
    GgmlTypeRow{7, "Q5_1", {32, 2 + 2 + 4 + 16}},
    GgmlTypeRow{8, "Q8_0", {32, 2 + 32}},
    GgmlTypeRow{9, "Q8_1", {32, 4 + 4 + 32}},
    GgmlTypeRow{10, "Q2_K", {256, 2 + 2 + 16 + 64}},
    GgmlTypeRow{11, "Q3_K", {256, 2 + 64 + 32 + 12}},
    GgmlTypeRow{12, "Q4_K", {256, 2 + 2 + 12 + 128}},
    GgmlTypeRow{13, "Q5_K", {256, 2 + 2 + 12 + 32 + 128}},
    GgmlTypeRow{14, "Q6_K", {256, 2 + 128 + 64 + 16}},
    GgmlTypeRow{15, "Q8_K", {256, 4 + 256 + 32}},
    GgmlTypeRow{16, "IQ2_XXS", {256, 2 + 64}},
    GgmlTypeRow{17, "IQ2_XS", {256, 2 + 64 + 8}},
    GgmlTypeRow{18, "IQ3_XXS", {256, 2 + 64 + 32}},
    GgmlTypeRow{19, "IQ1_S", {256, 2 + 32 + 16}},
    GgmlTypeRow{20, "IQ4_NL", {32, 2 + 16}},
    GgmlTypeRow{21, "IQ3_S", {256, 2 + 64 + 32 + 8 + 4}},
    GgmlTypeRow{22, "IQ2_S", {256, 2 + 64 + 16}},
    GgmlTypeRow{23, "IQ4_XS", {256, 2 + 2 + 4 + 128}},
    GgmlTypeRow{24, "I8", {1, 1}},
    GgmlTypeRow{25, "I16", {1, 2}},
    GgmlTypeRow{26, "I32", {1, 4}},
    GgmlTypeRow{27, "I64", {1, 8}},
    GgmlTypeRow{28, "F64", {1, 8}},
    GgmlTypeRow{29, "IQ1_M", {256, 32 + 16 + 8}},
    GgmlTypeRow{30, "BF16", {1, 2}},
    GgmlTypeRow{34, "TQ1_0", {256, 2 + 4 * 13}},
    GgmlTypeRow{35, "TQ2_0", {256, 2 + 64}},
    GgmlTypeRow{39, "MXFP4", {32, 1 + 16}},
    GgmlTypeRow{40, "NVFP4", {64, 4 + 32}},
    GgmlTypeRow{41, "Q1_0", {128, 2 + 16}},
};

const GgmlTypeRow* ggml_type_row(std::uint32_t type) {
  for (const auto& row : kGgmlTypes)
    if (row.id == type) return &row;
  return nullptr;
}

}  // namespace

const char* gguf_value_type_name(GgufValueType t) {
  switch (t) {
    case GgufValueType::gguf_u8: return "u8";
    case GgufValueType::gguf_i8: return "i8";
    case GgufValueType::gguf_u16: return "u16";
    case GgufValueType::gguf_i16: return "i16";
    case GgufValueType::gguf_u32: return "u32";
    case GgufValueType::gguf_i32: return "i32";
    case GgufValueType::gguf_f32: return "f32";
    case GgufValueType::gguf_bool: return "bool";
    case GgufValueType::gguf_string: return "string";
    case GgufValueType::gguf_array: return "array";
    case GgufValueType::gguf_u64: return "u64";
    case GgufValueType::gguf_i64: return "i64";
    case GgufValueType::gguf_f64: return "f64";
  }
  return "unknown";
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufValueType::gguf_u8:
    case GgufValueType::gguf_i8:
    case GgufValueType::gguf_u16:
    case GgufValueType::gguf_i16:
    case GgufValueType::gguf_u32:
    case GgufValueType::gguf_i32:
    case GgufValueType::gguf_u64:
    case GgufValueType::gguf_i64: return true;
    default: return false;
  }
}

bool GgufValue::is_float() const { return type == GgufValueType::gguf_f32 || type == GgufValueType::gguf_f64; }

GgmlBlock ggml_block(std::uint32_t type) {
  const GgmlTypeRow* row = ggml_type_row(type);
  return row ? row->block : GgmlBlock{};
}

std::string ggml_type_name(std::uint32_t type) {
  const GgmlTypeRow* row = ggml_type_row(type);
  return row ? std::string(row->name) : str_cat("type ", type);
}

Shape GgufTensorInfo::shape() const {
  Shape s;
  for (auto d = dims.rbegin(); d != dims.rend(); ++d) s.push_back(static_cast<std::int64_t>(*d));
  return s;
}

}  // namespace anvil::io
