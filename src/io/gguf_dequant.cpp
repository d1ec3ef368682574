// Block dequantizers, one per ggml type, written from ggml's block layouts:
//   32-element blocks   Q8_0 {f16 d; i8 q[32]}            y = d·q
//                       Q4_0 {f16 d; u8 q[16]}            y = d·(q - 8)     (low nibbles are
//                       Q4_1 {f16 d, m; u8 q[16]}         y = d·q + m        elements 0..15,
//                       Q5_0 {f16 d; u32 qh; u8 q[16]}    y = d·(q - 16)     high ones 16..31;
//                       Q5_1 {f16 d, m; u32 qh; u8 q[16]} y = d·q + m        qh bit j: 5th bit of j)
//   256-element blocks (sub-blocks of 16 or 32 elements with their own scales):
//                       Q2_K {u8 sc[16]; u8 q[64]; f16 d, dmin}
//                       Q3_K {u8 hmask[32]; u8 q[64]; u8 sc[12]; f16 d}
//                       Q4_K {f16 d, dmin; u8 sc[12]; u8 q[128]}
//                       Q5_K {f16 d, dmin; u8 sc[12]; u8 qh[32]; u8 q[128]}
//                       Q6_K {u8 ql[128]; u8 qh[64]; i8 sc[16]; f16 d}
#include "io/gguf_dequant.h"

#include <cstring>

#include "core/dtype.h"
#include "core/error.h"
#include "io/json_strict.h"

namespace anvil::io {

namespace {

constexpr int kQK = 32;    // elements of a simple quant block
constexpr int kQKK = 256;  // elements of a k-quant super-block

float load_f16(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// ---- 32-element blocks ----------------------------------------------------------------

void dequant_q8_0(const std::uint8_t* b, float* y) {
  const float d = load_f16(b);
  for (int j = 0; j < kQK; ++j) y[j] = d * static_cast<float>(static_cast<std::int8_t>(b[2 + j]));
}

void dequant_q4_0(const std::uint8_t* b, float* y) {
  const float d = load_f16(b);
  const std::uint8_t* q = b + 2;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = d * static_cast<float>((q[j] & 0x0F) - 8);
    y[j + kQK / 2] = d * static_cast<float>((q[j] >> 4) - 8);
  }
}

void dequant_q4_1(const std::uint8_t* b, float* y) {
  const float d = load_f16(b);
  const float m = load_f16(b + 2);
  const std::uint8_t* q = b + 4;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = d * static_cast<float>(q[j] & 0x0F) + m;
    y[j + kQK / 2] = d * static_cast<float>(q[j] >> 4) + m;
  }
}

// The 5-bit values of a Q5 block: low nibbles from q, the fifth bit from qh.
void unpack_q5(const std::uint8_t* qh_bytes, const std::uint8_t* q, int* out) {
  std::uint32_t qh;
  std::memcpy(&qh, qh_bytes, 4);
  for (int j = 0; j < kQK / 2; ++j) {
    out[j] = (q[j] & 0x0F) | static_cast<int>(((qh >> j) & 1u) << 4);
    out[j + kQK / 2] = (q[j] >> 4) | static_cast<int>(((qh >> (j + kQK / 2)) & 1u) << 4);
  }
}

void dequant_q5_0(const std::uint8_t* b, float* y) {
  const float d = load_f16(b);
  int q[kQK];
  unpack_q5(b + 2, b + 6, q);
  for (int j = 0; j < kQK; ++j) y[j] = d * static_cast<float>(q[j] - 16);
}

void dequant_q5_1(const std::uint8_t* b, float* y) {
  const float d = load_f16(b);
  const float m = load_f16(b + 2);
  int q[kQK];
  unpack_q5(b + 4, b + 8, q);
  for (int j = 0; j < kQK; ++j) y[j] = d * static_cast<float>(q[j]) + m;
}

// ---- 256-element super-blocks ---------------------------------------------------------

// Q2_K: element i = 128·h + 32·s + l takes bits 2s..2s+1 of q[32h + l]; 16-element
// sub-block g = i / 16 has scale d·(sc[g] & 15) and offset dmin·(sc[g] >> 4).
void dequant_q2_k(const std::uint8_t* b, float* y) {
  const std::uint8_t* sc = b;
  const std::uint8_t* q = b + 16;
  const float d = load_f16(b + 80);
  const float dmin = load_f16(b + 82);
  for (int i = 0; i < kQKK; ++i) {
    const int h = i / 128, s = (i / 32) % 4, l = i % 32;
    const int v = (q[32 * h + l] >> (2 * s)) & 3;
    const float dl = d * static_cast<float>(sc[i / 16] & 0x0F);
    const float ml = dmin * static_cast<float>(sc[i / 16] >> 4);
    y[i] = dl * static_cast<float>(v) - ml;
  }
}

// Q3_K's sixteen 6-bit signed scales: low nibbles in bytes 0..7 (sub-blocks 0..7 in the
// low halves, 8..15 in the high), the top two bits in bytes 8..11 (two bits per sub-block,
// sub-block k at bits 2·(k / 4) of byte 8 + k % 4). Stored biased by 32.
int q3_k_scale(const std::uint8_t* sc, int k) {
  const int low = (sc[k % 8] >> (4 * (k / 8))) & 0x0F;
  const int high = (sc[8 + k % 4] >> (2 * (k / 4))) & 0x03;
  return (low | (high << 4)) - 32;
}

// Q3_K: element i = 128·h + 32·s + l takes bits 2s..2s+1 of q[32h + l] and subtracts 4
// unless bit i / 32 of hmask[l] is set.
void dequant_q3_k(const std::uint8_t* b, float* y) {
  const std::uint8_t* hmask = b;
  const std::uint8_t* q = b + 32;
  const std::uint8_t* sc = b + 96;
  const float d = load_f16(b + 108);
  for (int i = 0; i < kQKK; ++i) {
    const int h = i / 128, s = (i / 32) % 4, l = i % 32;
    const int low = (q[32 * h + l] >> (2 * s)) & 3;
    const int high_set = (hmask[l] >> (i / 32)) & 1;
    const float dl = d * static_cast<float>(q3_k_scale(sc, i / 16));
    y[i] = dl * static_cast<float>(low - (high_set ? 0 : 4));
  }
}

// Q4_K/Q5_K's eight 6-bit scales and mins in 12 bytes: sub-blocks 0..3 in the low six bits
// of bytes 0..3 (scales) and 4..7 (mins); sub-blocks 4..7 take their low nibble from bytes
// 8..11 (scale low, min high) and their top two bits from the top of bytes 0..3 / 4..7.
void k_scale_min(const std::uint8_t* sc, int k, int* scale, int* min) {
  if (k < 4) {
    *scale = sc[k] & 0x3F;
    *min = sc[k + 4] & 0x3F;
  } else {
    *scale = (sc[k + 4] & 0x0F) | ((sc[k - 4] >> 6) << 4);
    *min = (sc[k + 4] >> 4) | ((sc[k] >> 6) << 4);
  }
}

// Q4_K and Q5_K: element i = 64·c + 32·s + l takes nibble s of q[32c + l]; Q5_K adds bit
// i / 32 of qh[l] as the fifth bit. 32-element sub-block g = i / 32 computes
// (d·scale_g)·q - dmin·min_g.
void dequant_k_4_5(const std::uint8_t* b, const std::uint8_t* qh, const std::uint8_t* q, float* y) {
  const float d = load_f16(b);
  const float dmin = load_f16(b + 2);
  const std::uint8_t* sc = b + 4;
  for (int g = 0; g < kQKK / 32; ++g) {
    int scale = 0, min = 0;
    k_scale_min(sc, g, &scale, &min);
    const float dl = d * static_cast<float>(scale);
    const float ml = dmin * static_cast<float>(min);
    for (int l = 0; l < 32; ++l) {
      int v = (q[32 * (g / 2) + l] >> (4 * (g % 2))) & 0x0F;
      if (qh) v |= ((qh[l] >> g) & 1) << 4;
      y[32 * g + l] = dl * static_cast<float>(v) - ml;
    }
  }
}

void dequant_q4_k(const std::uint8_t* b, float* y) { dequant_k_4_5(b, nullptr, b + 16, y); }
void dequant_q5_k(const std::uint8_t* b, float* y) { dequant_k_4_5(b, b + 16, b + 48, y); }

// Q6_K: element i = 128·h + r (r < 128) takes nibble r / 64 of ql[64h + r % 64] and bits
// 2·(r / 32)..+1 of qh[32h + r % 32] as its top two bits; biased by 32. 16-element
// sub-block i / 16 has the signed scale sc[i / 16].
void dequant_q6_k(const std::uint8_t* b, float* y) {
  const std::uint8_t* ql = b;
  const std::uint8_t* qh = b + 128;
  const std::uint8_t* sc = b + 192;
  const float d = load_f16(b + 208);
  for (int i = 0; i < kQKK; ++i) {
    const int h = i / 128, r = i % 128;
    const int low = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0F;
    const int high = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 0x03;
    const float dl = d * static_cast<float>(static_cast<std::int8_t>(sc[i / 16]));
    y[i] = dl * static_cast<float>((low | (high << 4)) - 32);
  }
}

// ---- Plain float types (one "block" per element) ------------------------------------

void dequant_f32(const std::uint8_t* b, float* y) { std::memcpy(y, b, 4); }
void dequant_f16(const std::uint8_t* b, float* y) { *y = load_f16(b); }
void dequant_bf16(const std::uint8_t* b, float* y) {
  std::uint16_t h;
  std::memcpy(&h, b, 2);
  *y = bf16_to_f32(h);
}

using BlockFn = void (*)(const std::uint8_t*, float*);

BlockFn block_fn(std::uint32_t type) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::ggml_f32: return dequant_f32;
    case GgmlType::ggml_f16: return dequant_f16;
    case GgmlType::ggml_bf16: return dequant_bf16;
    case GgmlType::ggml_q8_0: return dequant_q8_0;
    case GgmlType::ggml_q4_0: return dequant_q4_0;
    case GgmlType::ggml_q4_1: return dequant_q4_1;
    case GgmlType::ggml_q5_0: return dequant_q5_0;
    case GgmlType::ggml_q5_1: return dequant_q5_1;
    case GgmlType::ggml_q2_k: return dequant_q2_k;
    case GgmlType::ggml_q3_k: return dequant_q3_k;
    case GgmlType::ggml_q4_k: return dequant_q4_k;
    case GgmlType::ggml_q5_k: return dequant_q5_k;
    case GgmlType::ggml_q6_k: return dequant_q6_k;
    default: return nullptr;
  }
}

}  // namespace

bool gguf_can_dequantize(std::uint32_t type) { return block_fn(type) != nullptr; }

void gguf_check_dequantizable(const GgufTensorInfo& t, const std::string& label) {
  ANVIL_CHECK_INPUT(gguf_can_dequantize(t.type), label, ": tensor '", detail::escape_for_message(t.name), "' has type ",
                    ggml_type_name(t.type),
                    ", which anvil cannot convert (supported: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K "
                    "Q4_K Q5_K Q6_K)");
}

void gguf_dequantize(const GgufTensorInfo& t, const std::uint8_t* src, float* out, const std::string& label) {
  gguf_check_dequantizable(t, label);
  const BlockFn fn = block_fn(t.type);
  const GgmlBlock block = ggml_block(t.type);
  const std::uint64_t blocks = t.numel / block.elems;
  ANVIL_CHECK(t.nbytes == blocks * block.bytes, "tensor '", t.name, "': ", t.nbytes, " bytes for ", blocks,
              " blocks");
  for (std::uint64_t k = 0; k < blocks; ++k) fn(src + k * block.bytes, out + k * block.elems);
}

}  // namespace anvil::io
