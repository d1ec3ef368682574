// NF4 quantization with double-quantized absmax, bit for bit as bitsandbytes does it on
// CPU (its torch path for the 4-bit codes, its C path for the 8-bit absmax codes): the
// products and quotients below are in the same order and precision as there.
#include "quant/nf4.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"

namespace anvil::quant {

using i64 = std::int64_t;

const std::array<float, 16>& nf4_code() {
  // bitsandbytes' table (the QLoRA paper's Appendix E), to the float32 it stores.
  static const std::array<float, 16> code = {
      -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
      -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
      0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
      0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};
  return code;
}

namespace {

// torch.linspace(start, end, n) in float32 as its CPU kernel computes it: the first half
// counts up from start, the second half down from end, each point one fused multiply-add
// (the kernel is built with FMA contraction; plain products differ in the last bit of 12
// of the map's 256 values).
std::vector<float> linspace_f32(float start, float end, int n) {
  const float step = (end - start) / static_cast<float>(n - 1);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (int k = 0; k < n; ++k)
    v[k] = k < n / 2 ? std::fma(step, static_cast<float>(k), start)
                     : std::fma(-step, static_cast<float>(n - k - 1), end);
  return v;
}

std::array<float, 256> make_dynamic_map() {
  // 7 exponent ranges 10^-6 .. 10^0; range i holds the midpoints of 2^i + 1 points on
  // [0.1, 1], with both signs; then 0 and 1.
  std::vector<float> data;
  for (int i = 0; i < 7; ++i) {
    const std::vector<float> b = linspace_f32(0.1f, 1.0f, (1 << i) + 1);
    const auto scale = static_cast<float>(std::pow(10.0, i - 6));
    for (std::size_t k = 0; k + 1 < b.size(); ++k) {
      const float mean = (b[k] + b[k + 1]) / 2.0f;
      data.push_back(scale * mean);
      data.push_back(-scale * mean);
    }
  }
  data.push_back(0.0f);
  data.push_back(1.0f);
  ANVIL_CHECK(data.size() == 256, "dynamic map has ", data.size(), " values");
  std::sort(data.begin(), data.end());
  std::array<float, 256> out{};
  std::copy(data.begin(), data.end(), out.begin());
  return out;
}

// The 15 midpoints between neighbouring NF4 codes: a value's code is the number of
// midpoints below it (torch.bucketize), so a tie goes to the lower code.
std::array<float, 15> nf4_bounds() {
  const auto& c = nf4_code();
  std::array<float, 15> b{};
  for (int i = 0; i < 15; ++i) b[i] = (c[i] + c[i + 1]) / 2.0f;
  return b;
}

std::uint8_t nf4_encode(float scaled, const std::array<float, 15>& bounds) {
  std::uint8_t q = 0;
  for (const float b : bounds) q += static_cast<std::uint8_t>(b < scaled);
  return q;
}

// 4-bit codes of x (n values) and the f32 absmax of each block. Full blocks multiply by
// the reciprocal of their absmax, the last partial block divides by it (as bitsandbytes).
void nf4_codes(const float* x, i64 n, std::uint8_t* packed, float* absmax) {
  const auto bounds = nf4_bounds();
  const i64 blocks = (n + kNf4Blocksize - 1) / kNf4Blocksize;
  for (i64 b = 0; b < blocks; ++b) {
    const i64 e0 = b * kNf4Blocksize, e1 = std::min(n, e0 + kNf4Blocksize);
    float amax = 0.0f;
    for (i64 i = e0; i < e1; ++i) amax = std::max(amax, std::fabs(x[i]));
    const bool full = e1 - e0 == kNf4Blocksize;
    const float safe = std::max(amax, 1e-38f), inv = 1.0f / safe;
    absmax[b] = full ? amax : safe;
    for (i64 i = e0; i < e1; ++i) {
      const float scaled = std::clamp(full ? x[i] * inv : x[i] / safe, -1.0f, 1.0f);
      const std::uint8_t q = nf4_encode(scaled, bounds);
      packed[i / 2] = static_cast<std::uint8_t>(i % 2 ? (packed[i / 2] | q) : (q << 4));
    }
  }
  if (n % 2) packed[n / 2] |= nf4_encode(0.0f, bounds);  // the pad element is a zero
}

// The nearest of the sorted 256 codes to v, a tie to the lower.
std::uint8_t nearest_code(const float* code, float v) {
  const float* hi = std::lower_bound(code, code + 256, v);
  if (hi == code) return 0;
  if (hi == code + 256) return 255;
  const float* lo = hi - 1;
  return static_cast<std::uint8_t>((std::fabs(v - *hi) < std::fabs(v - *lo) ? hi : lo) - code);
}

}  // namespace

const std::array<float, 256>& dynamic_map_signed() {
  static const std::array<float, 256> map = make_dynamic_map();
  return map;
}

void blockwise8_quantize(const float* x, i64 n, i64 blocksize, const float* code,
                         std::uint8_t* q, float* absmax) {
  for (i64 e0 = 0, b = 0; e0 < n; e0 += blocksize, ++b) {
    const i64 e1 = std::min(n, e0 + blocksize);
    float amax = 0.0f;
    for (i64 i = e0; i < e1; ++i) amax = std::max(amax, std::fabs(x[i]));
    absmax[b] = amax;
    // An all-zero block has no scale; any code dequantizes to 0 there, the nearest to 0 is kept.
    for (i64 i = e0; i < e1; ++i) q[i] = nearest_code(code, amax > 0.0f ? x[i] / amax : 0.0f);
  }
}

QuantTensor nf4_quantize(const float* x, i64 n) {
  ANVIL_CHECK(n > 0, "nf4: nothing to quantize");
  const i64 blocks = (n + kNf4Blocksize - 1) / kNf4Blocksize;
  QuantTensor t;
  t.codes.assign(static_cast<std::size_t>((n + 1) / 2), 0);
  std::vector<float> absmax(static_cast<std::size_t>(blocks));
  nf4_codes(x, n, t.codes.data(), absmax.data());
  // Double quantization: the absmax around its mean, 8-bit in blocks of 256.
  double sum = 0.0;
  for (const float a : absmax) sum += a;
  t.state.offset = static_cast<float>(sum / static_cast<double>(blocks));
  for (float& a : absmax) a -= t.state.offset;
  const auto& map = dynamic_map_signed();
  t.absmax_code.assign(map.begin(), map.end());
  t.absmax_q.resize(absmax.size());
  t.absmax2.resize(static_cast<std::size_t>((blocks + kAbsmaxBlocksize - 1) / kAbsmaxBlocksize));
  blockwise8_quantize(absmax.data(), blocks, kAbsmaxBlocksize, map.data(), t.absmax_q.data(),
                      t.absmax2.data());
  t.code.assign(nf4_code().begin(), nf4_code().end());
  t.state.blocksize = kNf4Blocksize;
  t.state.absmax_blocksize = kAbsmaxBlocksize;
  t.bind();
  return t;
}

float nf4_block_absmax(const QuantState& s, i64 b) {
  if (s.absmax_f32) return s.absmax_f32[b];
  const float scaled = s.absmax_code[s.absmax_q[b]] * s.absmax2[b / s.absmax_blocksize];
  return scaled + s.offset;
}

void nf4_dequantize(const QuantState& s, const std::uint8_t* codes, i64 first, i64 count,
                    float* dst) {
  const i64 end = first + count;
  for (i64 b = first / s.blocksize; b * s.blocksize < end; ++b) {
    const float amax = nf4_block_absmax(s, b);
    const i64 e0 = std::max(first, b * s.blocksize), e1 = std::min(end, (b + 1) * s.blocksize);
    float lut[16];
    for (int k = 0; k < 16; ++k) lut[k] = s.code[k] * amax;
    i64 i = e0;
    if (i % 2 && i < e1) {  // starts on a low nibble
      dst[i - first] = lut[codes[i / 2] & 0xf];
      ++i;
    }
    for (; i + 1 < e1; i += 2) {  // whole bytes: high nibble first
      const std::uint8_t byte = codes[i / 2];
      dst[i - first] = lut[byte >> 4];
      dst[i + 1 - first] = lut[byte & 0xf];
    }
    if (i < e1) dst[i - first] = lut[codes[i / 2] >> 4];
  }
}

}  // namespace anvil::quant
