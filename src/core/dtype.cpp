#include "core/dtype.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif
#include <limits>

#include "core/error.h"

namespace anvil {

namespace {
struct DTypeInfo {
  DType type;
  std::size_t bits;
  std::string_view name;
  std::string_view short_name;
  bool is_float;
};

constexpr DTypeInfo kInfo[] = {
    {DType::dtype_f64, 64, "F64", "f64", true},   {DType::dtype_f32, 32, "F32", "f32", true},
    {DType::dtype_f16, 16, "F16", "f16", true},   {DType::dtype_bf16, 16, "BF16", "bf16", true},
    {DType::dtype_i64, 64, "I64", "i64", false},  {DType::dtype_i32, 32, "I32", "i32", false},
    {DType::dtype_i16, 16, "I16", "i16", false},  {DType::dtype_i8, 8, "I8", "i8", false},
    {DType::dtype_u8, 8, "U8", "u8", false},      {DType::dtype_bool, 8, "BOOL", "bool", false},
    {DType::dtype_fp8_e4m3, 8, "F8_E4M3", "fp8_e4m3", true},
    {DType::dtype_u32, 32, "U32", "u32", false},
    // Not a safetensors type: the name is only what messages print.
    {DType::dtype_nf4, 4, "NF4", "nf4", true},
};

const DTypeInfo& info(DType t) {
  for (const auto& i : kInfo)
    if (i.type == t) return i;
  ANVIL_CHECK(false, "unknown dtype ", static_cast<int>(t));
}
}  // namespace

std::size_t dtype_size(DType t) {
  const std::size_t bits = info(t).bits;
  ANVIL_CHECK(bits % 8 == 0, dtype_name(t), " packs several elements per byte");
  return bits / 8;
}
std::size_t dtype_bits(DType t) { return info(t).bits; }
bool dtype_is_float(DType t) { return info(t).is_float; }
std::string_view dtype_name(DType t) { return info(t).name; }
std::string_view dtype_short_name(DType t) { return info(t).short_name; }

std::optional<DType> dtype_from_name(std::string_view name) {
  for (const auto& i : kInfo)
    if (i.name == name && i.type != DType::dtype_nf4) return i.type;
  return std::nullopt;
}

std::optional<DType> dtype_from_short_name(std::string_view name) {
  for (const auto& i : kInfo)
    if (i.short_name == name) return i.type;
  return std::nullopt;
}

namespace {

// f32_to_f16's body, forced inline into f32_store_as's loop: as a call per element it
// was a third of the time of a GGUF f16 export.
[[gnu::always_inline]] inline std::uint16_t f32_to_f16_inline(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u);  // NaN
  if (abs >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (abs < 0x38800000u) {
    // Result is subnormal (or zero): value = m * 2^-24 with m rounded to nearest even.
    if (abs < 0x33000000u) return static_cast<std::uint16_t>(sign);  // below half the smallest
    const std::uint32_t exp = abs >> 23;
    const std::uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126u - exp;  // 14..24
    std::uint32_t m = mant >> shift;
    const std::uint32_t rem = mant & ((1u << shift) - 1u);
    const std::uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (m & 1u))) ++m;
    return static_cast<std::uint16_t>(sign | m);
  }
  // Normal: rebias the exponent (127 -> 15) and round the 13 dropped mantissa bits.
  std::uint32_t r = abs - 0x38000000u;
  r += 0xfffu + ((r >> 13) & 1u);
  return static_cast<std::uint16_t>(sign | (r >> 13));
}

}  // namespace

std::uint16_t f32_to_f16(float f) { return f32_to_f16_inline(f); }

float f16_to_f32(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t mant = h & 0x3ffu;
  std::uint32_t u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {
    u = sign | ((exp + 112u) << 23) | (mant << 13);
  } else {
    const float v = std::ldexp(static_cast<float>(mant), -24);
    std::memcpy(&u, &v, 4);
    u |= sign;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

std::uint8_t f32_to_fp8_e4m3(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  const auto sign = static_cast<std::uint8_t>((u >> 24) & 0x80u);
  const std::uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<std::uint8_t>(sign | 0x7fu);  // NaN
  if (abs >= 0x43e00000u) return static_cast<std::uint8_t>(sign | 0x7eu);  // >= 448: saturate
  if (abs < 0x3c800000u) {
    // Below the smallest normal (2^-6): value = m * 2^-9, m rounded to nearest even. The
    // product is exact, and m = 8 is the encoding of 2^-6 itself.
    float a;
    std::memcpy(&a, &abs, 4);
    return static_cast<std::uint8_t>(sign | static_cast<std::uint8_t>(std::nearbyint(a * 512.0f)));
  }
  // Normal: rebias the exponent (127 -> 7) and round the 20 dropped mantissa bits.
  std::uint32_t r = abs - 0x3c000000u;
  r += 0x7ffffu + ((r >> 20) & 1u);
  return static_cast<std::uint8_t>(sign | std::min<std::uint32_t>(r >> 20, 0x7eu));
}

float fp8_e4m3_to_f32(std::uint8_t b) {
  const int exp = (b >> 3) & 0xf, mant = b & 0x7;
  float v;
  if (exp == 0xf && mant == 0x7) v = std::numeric_limits<float>::quiet_NaN();
  else if (exp == 0) v = std::ldexp(static_cast<float>(mant), -9);
  else v = std::ldexp(static_cast<float>(8 + mant), exp - 10);
  return (b & 0x80) ? -v : v;
}

double dtype_load_as_f64(const void* data, DType t, std::size_t i) {
  const auto* p = static_cast<const unsigned char*>(data) + i * dtype_size(t);
  auto load = [p](auto v) {
    std::memcpy(&v, p, sizeof(v));
    return v;
  };
  switch (t) {
    case DType::dtype_f64: return load(double{});
    case DType::dtype_f32: return load(float{});
    case DType::dtype_f16: return f16_to_f32(load(std::uint16_t{}));
    case DType::dtype_bf16: return bf16_to_f32(load(std::uint16_t{}));
    case DType::dtype_i64: return static_cast<double>(load(std::int64_t{}));
    case DType::dtype_i32: return load(std::int32_t{});
    case DType::dtype_i16: return load(std::int16_t{});
    case DType::dtype_i8: return load(std::int8_t{});
    case DType::dtype_u8: return load(std::uint8_t{});
    case DType::dtype_u32: return load(std::uint32_t{});
    case DType::dtype_bool: return load(std::uint8_t{}) != 0 ? 1.0 : 0.0;
    case DType::dtype_fp8_e4m3: return fp8_e4m3_to_f32(load(std::uint8_t{}));
    case DType::dtype_nf4: break;  // codes without their scales are not values
  }
  ANVIL_CHECK(false, "unknown dtype");
}

namespace {

#if defined(__x86_64__)
// f32 -> f16 eight at a time with F16C's conversion (round to nearest even, as
// f32_to_f16_inline), where the CPU has it: twice the rate of the bit loop on a GGUF f16
// export. A block holding a NaN goes through the bit loop, which writes one canonical NaN.
// Returns how many elements it converted (a multiple of 8).
__attribute__((target("avx,f16c"))) std::int64_t f32_to_f16_f16c(const float* in, std::int64_t n,
                                                                  std::uint8_t* out) {
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(in + i);
    const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    if (!_mm256_testz_ps(nan, nan)) break;
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  }
  return i;
}

// AVX (which also says the OS saves the YMM state) and F16C, from CPUID leaf 1 (clang's
// __builtin_cpu_supports has no "f16c").
bool cpu_has_f16c() {
  static const bool has = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __builtin_cpu_supports("avx") && __get_cpuid(1, &a, &b, &c, &d) != 0 && (c & bit_F16C) != 0;
  }();
  return has;
}
#endif

}  // namespace

void f32_store_as(const float* in, std::int64_t n, DType dtype, std::uint8_t* out) {
  ANVIL_CHECK(dtype == DType::dtype_f32 || dtype == DType::dtype_bf16 || dtype == DType::dtype_f16,
              "f32_store_as: cannot store as ", dtype_name(dtype));
  if (dtype == DType::dtype_f32) {
    std::memcpy(out, in, static_cast<std::size_t>(n) * 4);
    return;
  }
  std::int64_t i = 0;
#if defined(__x86_64__)
  if (dtype == DType::dtype_f16 && cpu_has_f16c()) i = f32_to_f16_f16c(in, n, out);
#endif
  for (; i < n; ++i) {
    const std::uint16_t h = dtype == DType::dtype_bf16 ? f32_to_bf16(in[i]) : f32_to_f16_inline(in[i]);
    std::memcpy(out + 2 * i, &h, 2);
  }
}

}  // namespace anvil
