// The element-wise types and the 32-element quants, the row driver, and the file types.
//
// Each block encoder is written to reproduce ggml's reference quantizer (the path
// llama-quantize takes without an importance matrix) operation for operation, in f32 and
// without FMA contraction (see CMakeLists.txt), so its bytes equal llama.cpp's and those of
// gguf.quants.quantize in the Python `gguf` package:
//   Q8_0  d = amax / 127,          q = round-half-away(x / d)             (i8)
//   Q4_0  d = -m / 8,              q = min(15, trunc(x / d + 8.5))        m: the value of
//   Q5_0  d = -m / 16,             q = min(31, trunc(x / d + 16.5))          largest |x|
//   Q4_1  d = (max - min) / 15,    q = min(15, trunc((x - min) / d + 0.5))
//   Q5_1  d = (max - min) / 31,    q = min(31, trunc((x - min) / d + 0.5))
// where "/ d" is a product with 1/d (0 when d is 0) and d, min are stored as f16 while the
// codes use the unrounded f32 values. A negative d (Q4_0/Q5_0) puts the largest magnitude at
// code 0 exactly, which buys one more level on that side than a symmetric scale.
#include "io/gguf_quant.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <optional>

#include "core/dtype.h"
#include "core/error.h"
#include "core/vector_clones.h"
#include "io/gguf.h"
#include "io/gguf_quant_blocks.h"

namespace anvil::io {

namespace {

constexpr int kQK = 32;  // elements of a simple quant block

void store_f16(std::uint8_t* p, float v) {
  const std::uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

// roundf: halves away from zero. int(a) truncates and a - trunc(a) is exact, so the test
// against 0.5 decides the tie the same way roundf does.
int round_half_away(float v) {
  const float a = std::fabs(v);
  int t = static_cast<int>(a);
  if (a - static_cast<float>(t) >= 0.5f) ++t;
  return v < 0 ? -t : t;
}

// The reductions below keep 8 independent lanes: a max or min is exact in any order, and
// one serial chain of maxss over 32 elements would cost more than the rest of a block.
constexpr int kLanes = 8;

float block_absmax(const float* x) {
  float lane[kLanes] = {};
  for (int j = 0; j < kQK; j += kLanes)
    for (int l = 0; l < kLanes; ++l) lane[l] = std::max(lane[l], std::fabs(x[j + l]));
  float amax = 0.0f;
  for (float v : lane) amax = std::max(amax, v);
  return amax;
}

// The element of largest magnitude, with its sign; the first one on ties.
float signed_absmax(const float* x) {
  const float amax = block_absmax(x);
  for (int j = 0; j < kQK; ++j)
    if (std::fabs(x[j]) == amax) return x[j];
  return 0.0f;  // all zeros (or NaN)
}

// A zero extreme keeps the sign of the first zero, as a serial scan would.
float first_zero(const float* x) {
  for (int j = 0; j < kQK; ++j)
    if (x[j] == 0.0f) return x[j];
  return 0.0f;
}

void block_min_max(const float* x, float* lo, float* hi) {
  float lane_lo[kLanes], lane_hi[kLanes];
  for (int l = 0; l < kLanes; ++l) lane_lo[l] = lane_hi[l] = x[l];
  for (int j = kLanes; j < kQK; j += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      lane_lo[l] = std::min(lane_lo[l], x[j + l]);
      lane_hi[l] = std::max(lane_hi[l], x[j + l]);
    }
  float mn = lane_lo[0], mx = lane_hi[0];
  for (int l = 1; l < kLanes; ++l) {
    mn = std::min(mn, lane_lo[l]);
    mx = std::max(mx, lane_hi[l]);
  }
  *lo = mn == 0.0f ? first_zero(x) : mn;
  *hi = mx == 0.0f ? first_zero(x) : mx;
}

// {f16 d; i8 q[32]}
void quant_q8_0(const float* x, std::uint8_t* b) {
  const float d = block_absmax(x) / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_f16(b, d);
  for (int j = 0; j < kQK; ++j) b[2 + j] = static_cast<std::uint8_t>(static_cast<std::int8_t>(round_half_away(x[j] * id)));
}

// Codes of 4 bits, element j in the low nibble of byte j and element j + 16 in the high one.
void pack_nibbles(const int* q, std::uint8_t* out) {
  for (int j = 0; j < kQK / 2; ++j) out[j] = static_cast<std::uint8_t>((q[j] & 0x0F) | ((q[j + kQK / 2] & 0x0F) << 4));
}

// The fifth bits of 5-bit codes: bit j of a little-endian u32 for element j.
void pack_high_bits(const int* q, std::uint8_t* out) {
  std::uint32_t qh = 0;
  for (int j = 0; j < kQK; ++j) qh |= static_cast<std::uint32_t>((q[j] >> 4) & 1) << j;
  std::memcpy(out, &qh, 4);
}

// Symmetric quants (Q4_0 / Q5_0): the scale maps the largest magnitude to -2^(bits-1).
void quant_symmetric(const float* x, int half, std::int32_t* q, float* d_out) {
  const float d = signed_absmax(x) / static_cast<float>(-half);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const float offset = static_cast<float>(half) + 0.5f;  // 8.5 or 16.5: bias and round
  for (int j = 0; j < kQK; ++j) q[j] = std::min(2 * half - 1, static_cast<int>(x[j] * id + offset));
  *d_out = d;
}

// Affine quants (Q4_1 / Q5_1): min at code 0, max at the top code.
void quant_affine(const float* x, int top, std::int32_t* q, float* d_out, float* min_out) {
  float mn, mx;
  block_min_max(x, &mn, &mx);
  const float d = (mx - mn) / static_cast<float>(top);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  for (int j = 0; j < kQK; ++j) q[j] = std::min(top, static_cast<int>((x[j] - mn) * id + 0.5f));
  *d_out = d;
  *min_out = mn;
}

// {f16 d; u8 q[16]}
void quant_q4_0(const float* x, std::uint8_t* b) {
  int q[kQK];
  float d;
  quant_symmetric(x, 8, q, &d);
  store_f16(b, d);
  pack_nibbles(q, b + 2);
}

// {f16 d, m; u8 q[16]}
void quant_q4_1(const float* x, std::uint8_t* b) {
  int q[kQK];
  float d, mn;
  quant_affine(x, 15, q, &d, &mn);
  store_f16(b, d);
  store_f16(b + 2, mn);
  pack_nibbles(q, b + 4);
}

// {f16 d; u32 qh; u8 q[16]}
void quant_q5_0(const float* x, std::uint8_t* b) {
  int q[kQK];
  float d;
  quant_symmetric(x, 16, q, &d);
  store_f16(b, d);
  pack_high_bits(q, b + 2);
  pack_nibbles(q, b + 6);
}

// {f16 d, m; u32 qh; u8 q[16]}
void quant_q5_1(const float* x, std::uint8_t* b) {
  int q[kQK];
  float d, mn;
  quant_affine(x, 31, q, &d, &mn);
  store_f16(b, d);
  store_f16(b + 2, mn);
  pack_high_bits(q, b + 4);
  pack_nibbles(q, b + 8);
}

using QuantBlockFn = void (*)(const float*, std::uint8_t*);
// A row's blocks (`bytes` each when encoded) through one encoder, the encoder inlined; one
// version per x86 instruction set (no FMA contraction in this file: every version gives the
// same bytes).
using QuantRowFn = void (*)(const float*, std::int64_t, std::size_t, std::uint8_t*);

#define ANVIL_QUANT_ROW(name, encode)                                                   \
  ANVIL_VECTOR_CLONES void name(const float* x, std::int64_t blocks, std::size_t bytes, \
                                std::uint8_t* out) {                                    \
    for (std::int64_t k = 0; k < blocks; ++k)                                           \
      encode(x + k * kQK, out + static_cast<std::size_t>(k) * bytes);                   \
  }
ANVIL_QUANT_ROW(rows_q8_0, quant_q8_0)
ANVIL_QUANT_ROW(rows_q4_0, quant_q4_0)
ANVIL_QUANT_ROW(rows_q4_1, quant_q4_1)
ANVIL_QUANT_ROW(rows_q5_0, quant_q5_0)
ANVIL_QUANT_ROW(rows_q5_1, quant_q5_1)
#undef ANVIL_QUANT_ROW

// The element-wise types go through f32_store_as a row at a time.
std::optional<DType> float_dtype(std::uint32_t type) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::ggml_f32: return DType::dtype_f32;
    case GgmlType::ggml_f16: return DType::dtype_f16;
    case GgmlType::ggml_bf16: return DType::dtype_bf16;
    default: return std::nullopt;
  }
}

// A quant type's block encoder and, for the 32-element types, its row loop.
struct Encoder {
  QuantBlockFn block = nullptr;
  QuantRowFn rows = nullptr;
};

Encoder quant_encoder(std::uint32_t type) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::ggml_q8_0: return {quant_q8_0, rows_q8_0};
    case GgmlType::ggml_q4_0: return {quant_q4_0, rows_q4_0};
    case GgmlType::ggml_q4_1: return {quant_q4_1, rows_q4_1};
    case GgmlType::ggml_q5_0: return {quant_q5_0, rows_q5_0};
    case GgmlType::ggml_q5_1: return {quant_q5_1, rows_q5_1};
    case GgmlType::ggml_q4_k: return {gguf_quant_block_q4_k, nullptr};
    case GgmlType::ggml_q5_k: return {gguf_quant_block_q5_k, nullptr};
    case GgmlType::ggml_q6_k: return {gguf_quant_block_q6_k, nullptr};
    default: return {};
  }
}

// Below this many elements a tensor is quantized on the calling thread: starting the
// OpenMP team costs more than it saves.
[[maybe_unused]] constexpr std::int64_t kParallelElems = 1 << 16;  // unused without OpenMP (the fuzz build)

struct FileTypeRow {
  GgufFileType ft;
  const char* name;
};

constexpr std::array kFileTypes = {
    FileTypeRow{GgufFileType::gguf_file_all_f32, "f32"},  FileTypeRow{GgufFileType::gguf_file_f16, "f16"},
    FileTypeRow{GgufFileType::gguf_file_bf16, "bf16"},    FileTypeRow{GgufFileType::gguf_file_q8_0, "q8_0"},
    FileTypeRow{GgufFileType::gguf_file_q4_0, "q4_0"},    FileTypeRow{GgufFileType::gguf_file_q4_1, "q4_1"},
    FileTypeRow{GgufFileType::gguf_file_q5_0, "q5_0"},    FileTypeRow{GgufFileType::gguf_file_q5_1, "q5_1"},
    FileTypeRow{GgufFileType::gguf_file_q4_k_s, "q4_k"},  FileTypeRow{GgufFileType::gguf_file_q5_k_s, "q5_k"},
    FileTypeRow{GgufFileType::gguf_file_q6_k, "q6_k"},    FileTypeRow{GgufFileType::gguf_file_q4_k_m, "q4_k_m"},
    FileTypeRow{GgufFileType::gguf_file_q5_k_m, "q5_k_m"},
};

}  // namespace

bool gguf_can_quantize(std::uint32_t ggml_type) {
  return float_dtype(ggml_type).has_value() || quant_encoder(ggml_type).block != nullptr;
}

std::size_t gguf_row_bytes(std::uint32_t ggml_type, std::int64_t row_len) {
  ANVIL_CHECK_INPUT(gguf_can_quantize(ggml_type), "anvil cannot write GGUF tensors of type ",
                    ggml_type_name(ggml_type),
                    " (supported: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K)");
  const GgmlBlock block = ggml_block(ggml_type);
  ANVIL_CHECK_INPUT(row_len > 0 && row_len % static_cast<std::int64_t>(block.elems) == 0, "a row of ", row_len,
                    " elements cannot be stored as ", ggml_type_name(ggml_type), ": its blocks have ", block.elems,
                    " elements");
  return static_cast<std::size_t>(row_len / static_cast<std::int64_t>(block.elems)) * block.bytes;
}

void gguf_quantize_rows(std::uint32_t ggml_type, const float* src, std::int64_t rows, std::int64_t row_len,
                        std::uint8_t* dst) {
  const std::size_t row_bytes = gguf_row_bytes(ggml_type, row_len);
  ANVIL_CHECK(rows >= 0, "rows ", rows);
  const std::optional<DType> dtype = float_dtype(ggml_type);
  const Encoder encoder = quant_encoder(ggml_type);
  const GgmlBlock block = ggml_block(ggml_type);
  const std::int64_t blocks_per_row = row_len / static_cast<std::int64_t>(block.elems);
  // Each row is encoded on its own, so its bytes do not depend on which thread runs it;
  // static scheduling gives each thread one contiguous range (rows cost the same).
#pragma omp parallel for schedule(static) if (rows * row_len >= kParallelElems)
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* x = src + r * row_len;
    std::uint8_t* out = dst + static_cast<std::size_t>(r) * row_bytes;
    if (dtype) {
      f32_store_as(x, row_len, *dtype, out);
      continue;
    }
    if (encoder.rows) {
      encoder.rows(x, blocks_per_row, block.bytes, out);
      continue;
    }
    for (std::int64_t k = 0; k < blocks_per_row; ++k) encoder.block(x + k * block.elems, out + k * block.bytes);
  }
}

GgufFileType gguf_file_type_from_name(std::string_view name) {
  for (const auto& row : kFileTypes)
    if (name == row.name) return row.ft;
  throw_user_error("unknown GGUF type '", name, "' (valid: ", gguf_file_type_names(), ")");
}

const char* gguf_file_type_name(GgufFileType ft) {
  for (const auto& row : kFileTypes)
    if (row.ft == ft) return row.name;
  ANVIL_CHECK(false, "GGUF file type ", static_cast<std::uint32_t>(ft));
  return "";
}

const char* gguf_file_type_names() { return "f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k q5_k q6_k q4_k_m q5_k_m"; }

}  // namespace anvil::io
