// Element types and the conversions between the storage formats and fp32.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace anvil {

enum class DType : std::uint8_t {
  dtype_f64,
  dtype_f32,
  dtype_f16,
  dtype_bf16,
  dtype_i64,
  dtype_i32,
  dtype_i16,
  dtype_i8,
  dtype_u8,
  dtype_bool,
  dtype_fp8_e4m3,  // OCP float8 e4m3fn: 4 exponent bits (bias 7), 3 mantissa bits, no inf
  dtype_nf4,       // QLoRA 4-bit NormalFloat codes, two per byte; needs its QuantState
  dtype_u32,       // MLX's packed quantized weights (export --format mlx --bits)
};

// The plain element types (also F8_E4M3 reads from safetensors; nf4 lives in U8 tensors;
// U32 only the mlx export writes).
inline constexpr DType kAllDTypes[] = {
    DType::dtype_f64, DType::dtype_f32, DType::dtype_f16, DType::dtype_bf16, DType::dtype_i64,
    DType::dtype_i32, DType::dtype_i16, DType::dtype_i8,  DType::dtype_u8,   DType::dtype_bool,
};

// Bytes per element; a sub-byte type (nf4) has none, so asking is an internal error.
std::size_t dtype_size(DType t);
std::size_t dtype_bits(DType t);
bool dtype_is_float(DType t);
// The safetensors spelling: "F32", "BF16", "BOOL", ...
std::string_view dtype_name(DType t);
std::optional<DType> dtype_from_name(std::string_view name);
// The spelling used in configs and on the command line: "f32", "bf16", ...
std::string_view dtype_short_name(DType t);
std::optional<DType> dtype_from_short_name(std::string_view name);

// bf16: the upper half of an IEEE fp32. Round to nearest even; NaN stays NaN.
inline std::uint16_t f32_to_bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

inline float bf16_to_f32(std::uint16_t h) {
  std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// IEEE binary16. Round to nearest even, overflow to inf, subnormals kept.
std::uint16_t f32_to_f16(float f);
float f16_to_f32(std::uint16_t h);

// float8 e4m3fn. The encoder rounds to nearest even and saturates at +-448 (the type has
// no infinity); NaN stays NaN (0x7f with the sign).
std::uint8_t f32_to_fp8_e4m3(float f);
float fp8_e4m3_to_f32(std::uint8_t b);
// n f32 values stored as `dtype` (f32, bf16 or f16; rounding to nearest even) at `out`.
void f32_store_as(const float* in, std::int64_t n, DType dtype, std::uint8_t* out);

// Reads element i of a buffer of type t as a double (for inspection and tests).
double dtype_load_as_f64(const void* data, DType t, std::size_t i);

}  // namespace anvil
