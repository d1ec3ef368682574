// The k-quants Q4_K, Q5_K and Q6_K: 256-element super-blocks whose sub-blocks carry their
// own scale, itself quantized against one f16 scale per super-block.
//
// These reproduce ggml's reference (no importance matrix) encoders step by step, in f32,
// with every sum taken in element order and no FMA contraction (see CMakeLists.txt): the
// fitted scales are the result of searches that compare errors, so a different rounding
// anywhere can pick another candidate and change a whole sub-block's codes.
//
// Q4_K / Q5_K (affine, codes 0..nmax, nmax = 15 or 31). Per 32-element sub-block:
//   1. fit (scale, min) with weights w_i = rms(x) + |x_i| (large elements matter more):
//      start from the range [min(x, 0), max(x)], then try nstep + 1 slightly different
//      inverse scales; for each, round the codes and solve the weighted least-squares
//      problem x ≈ scale·q + min in closed form (min clamped to <= 0); keep the candidate
//      of least weighted squared error (the best min so far is the origin of the next
//      candidates' rounding).
//   2. quantize the eight scales and eight mins to 6 bits against their maxima
//      (d = max_scale / 63, dmin = max_min / 63, both f16).
//   3. recompute every code from the stored (rounded) d·scale and dmin·min.
// Q6_K (symmetric, codes -32..31). Per 16-element sub-block fit one signed scale with
// weights x_i² by trying 19 inverse scales around -32 / (the element of largest
// magnitude); then quantize the sixteen scales to int8 against the largest one
// (d = -max_scale / 128, f16) and recompute the codes from the stored d·scale.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "io/gguf_quant_blocks.h"

namespace anvil::io {

namespace {

constexpr int kQKK = 256;            // elements of a super-block
constexpr float kTinyMax = 1e-15f;   // a sub-block below this magnitude is all zeros

// Round to nearest, ties to even, for |v| < 2^22: adding 1.5·2^23 moves the binary point
// to the end of the mantissa, so the float's low 23 bits hold v's rounded value offset by
// 2^22. This is the rounding ggml's k-quants use (a fast lrintf for the default mode).
inline int round_even(float v) {
  const float shifted = v + 12582912.0f;
  std::uint32_t bits;
  std::memcpy(&bits, &shifted, 4);
  return static_cast<int>(bits & 0x007fffffu) - 0x00400000;
}

inline int clamp_int(int v, int lo, int hi) { return std::min(hi, std::max(lo, v)); }

float load_f16(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

void store_f16(std::uint8_t* p, float v) {
  const std::uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

// Step 1 of Q4_K / Q5_K for one 32-element sub-block: codes into q, returns the scale and
// writes -min (>= 0) to *neg_min. rmin, rdelta, nstep: the inverse scales tried are
// (nmax + rmin + rdelta·k) / range for k = 0..nstep.
float fit_scale_min(const float* x, const float* w, int nmax, float rmin, float rdelta, int nstep,
                    std::uint8_t* q, float* neg_min) {
  constexpr int n = 32;
  float lo = x[0], hi = x[0];
  float sum_w = w[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  lo = std::min(lo, 0.0f);  // the offset only ever lowers: min <= 0
  if (hi == lo) {
    std::memset(q, 0, n);
    *neg_min = -lo;
    return 0.0f;
  }
  float iscale = static_cast<float>(nmax) / (hi - lo);
  float scale = 1.0f / iscale;
  float best_err = 0.0f;
  for (int i = 0; i < n; ++i) {
    q[i] = static_cast<std::uint8_t>(clamp_int(round_even(iscale * (x[i] - lo)), 0, nmax));
    float diff = scale * static_cast<float>(q[i]) + lo - x[i];
    diff = diff * diff;
    best_err += w[i] * diff;
  }
  for (int k = 0; k <= nstep; ++k) {
    // As in ggml, once a candidate wins, its (lower) min also moves the range and the
    // origin of the rounding for the candidates after it.
    iscale = (rmin + rdelta * static_cast<float>(k) + static_cast<float>(nmax)) / (hi - lo);
    // The rounding (vectorizable) apart from the sums (in element order).
    float lf[n];
    for (int i = 0; i < n; ++i) lf[i] = static_cast<float>(clamp_int(round_even(iscale * (x[i] - lo)), 0, nmax));
    float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
    for (int i = 0; i < n; ++i) {
      const float wl = w[i] * lf[i];
      sum_l += wl;
      sum_l2 += wl * lf[i];
      sum_xl += wl * x[i];
    }
    // Weighted least squares for x ≈ s·l + m: the 2x2 normal equations' determinant.
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (!(det > 0.0f)) continue;
    float s = (sum_w * sum_xl - sum_x * sum_l) / det;
    float m = (sum_l2 * sum_x - sum_l * sum_xl) / det;
    if (m > 0.0f) {  // a positive offset cannot be stored: refit the scale alone
      m = 0.0f;
      s = sum_xl / sum_l2;
    }
    float err = 0.0f;
    for (int i = 0; i < n; ++i) {
      float diff = s * lf[i] + m - x[i];
      diff = diff * diff;
      err += w[i] * diff;
    }
    if (err < best_err) {
      for (int i = 0; i < n; ++i) q[i] = static_cast<std::uint8_t>(lf[i]);
      best_err = err;
      scale = s;
      lo = m;
    }
  }
  *neg_min = -lo;
  return scale;
}

// Steps 1 to 3 of Q4_K / Q5_K: the header {f16 d, dmin; u8 sc[12]} at `b` and the codes
// (0..nmax, element order) in L.
void quant_k_affine(const float* x, int nmax, float rmin, int nstep, std::uint8_t* b, std::uint8_t* L) {
  float scales[8], mins[8];
  float max_scale = 0.0f, max_min = 0.0f;
  for (int j = 0; j < 8; ++j) {
    const float* xs = x + 32 * j;
    float sum_x2 = 0.0f;
    for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
    const float rms = std::sqrt(sum_x2 / 32.0f);
    float w[32];
    for (int l = 0; l < 32; ++l) w[l] = rms + std::fabs(xs[l]);
    scales[j] = fit_scale_min(xs, w, nmax, rmin, 0.1f, nstep, L + 32 * j, &mins[j]);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
  const float inv_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
  int ls[8], lm[8];
  for (int j = 0; j < 8; ++j) {
    // Through u8 as in ggml: a (never seen) negative fitted scale wraps and saturates at 63.
    ls[j] = std::min(63, static_cast<int>(static_cast<std::uint8_t>(round_even(inv_scale * scales[j]))));
    lm[j] = std::min(63, static_cast<int>(static_cast<std::uint8_t>(round_even(inv_min * mins[j]))));
  }
  // The 12 scale bytes (gguf_dequant.cpp's k_scale_min reads them back): sub-blocks 0..3
  // whole in bytes 0..3 (scale) and 4..7 (min); 4..7 split into a low nibble in bytes
  // 8..11 and their top two bits in the top of bytes 0..7.
  std::uint8_t* sc = b + 4;
  for (int j = 0; j < 4; ++j) {
    sc[j] = static_cast<std::uint8_t>(ls[j] | ((ls[j + 4] >> 4) << 6));
    sc[j + 4] = static_cast<std::uint8_t>(lm[j] | ((lm[j + 4] >> 4) << 6));
    sc[j + 8] = static_cast<std::uint8_t>((ls[j + 4] & 0x0F) | ((lm[j + 4] & 0x0F) << 4));
  }
  store_f16(b, max_scale / 63.0f);
  store_f16(b + 2, max_min / 63.0f);
  // Codes from the scales as they will be read back; a sub-block whose stored scale is 0
  // keeps its fitted codes (they multiply 0).
  const float d = load_f16(b);
  const float dmin = load_f16(b + 2);
  for (int j = 0; j < 8; ++j) {
    const float dl = d * static_cast<float>(ls[j]);
    if (dl == 0.0f) continue;
    const float ml = dmin * static_cast<float>(lm[j]);
    for (int l = 0; l < 32; ++l)
      L[32 * j + l] = static_cast<std::uint8_t>(clamp_int(round_even((x[32 * j + l] + ml) / dl), 0, nmax));
  }
}

// Q6_K's fit of one 16-element sub-block: codes (biased by 32) into L, returns the scale.
float fit_scale_signed(const float* x, std::int8_t* L) {
  constexpr int n = 16, nmax = 32;
  float amax = 0.0f, m = 0.0f;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      m = x[i];
    }
  }
  if (amax < kTinyMax) {
    std::memset(L, 0, n);
    return 0.0f;
  }
  float w[n];
  for (int i = 0; i < n; ++i) w[i] = x[i] * x[i];
  // The 19 candidate inverse scales: -nmax / m first, then -(nmax + 0.1 k) / m for k = -9..9
  // without 0. Each candidate's codes (as floats) and its two sums, each sum in element
  // order as ggml takes it; the candidates' sums are independent chains, so they advance
  // side by side (one vector of candidates per element) instead of one serial chain after
  // another, with the same bits.
  constexpr int kCand = 19;
  float iscale[kCand];
  iscale[0] = static_cast<float>(-nmax) / m;
  for (int k = -9, c = 1; k <= 9; ++k)
    if (k != 0) iscale[c++] = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(k)) / m;
  float lf[n][kCand];
  for (int i = 0; i < n; ++i)
    for (int c = 0; c < kCand; ++c)
      lf[i][c] = static_cast<float>(clamp_int(round_even(iscale[c] * x[i]), -nmax, nmax - 1));
  float sumlx[kCand] = {}, suml2[kCand] = {};
  for (int i = 0; i < n; ++i) {
    const float wx = w[i] * x[i];
    for (int c = 0; c < kCand; ++c) {
      sumlx[c] += wx * lf[i][c];
      suml2[c] += w[i] * lf[i][c] * lf[i][c];
    }
  }
  // The choice, in ggml's order: the first candidate, then each later one that does better.
  int win = 0;
  float scale = suml2[0] != 0.0f ? sumlx[0] / suml2[0] : 0.0f;
  float best = scale * sumlx[0];  // the weighted error is const - sumlx²/suml2: maximize this
  for (int c = 1; c < kCand; ++c) {
    if (suml2[c] > 0.0f && sumlx[c] * sumlx[c] > best * suml2[c]) {
      win = c;
      scale = sumlx[c] / suml2[c];
      best = scale * sumlx[c];
    }
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<std::int8_t>(static_cast<int>(lf[i][win]) + nmax);
  return scale;
}

}  // namespace

// {f16 d, dmin; u8 sc[12]; u8 q[128]}: element 64c + 32s + l in nibble s of q[32c + l].
void gguf_quant_block_q4_k(const float* x, std::uint8_t* b) {
  std::uint8_t L[kQKK];
  quant_k_affine(x, 15, -1.0f, 20, b, L);
  std::uint8_t* q = b + 16;
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) q[32 * c + l] = static_cast<std::uint8_t>(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
}

// {f16 d, dmin; u8 sc[12]; u8 qh[32]; u8 q[128]}: as Q4_K, plus the fifth bit of element
// 32g + l in bit g of qh[l].
void gguf_quant_block_q5_k(const float* x, std::uint8_t* b) {
  std::uint8_t L[kQKK];
  quant_k_affine(x, 31, -0.5f, 15, b, L);
  std::uint8_t* qh = b + 16;
  std::uint8_t* q = b + 48;
  std::memset(qh, 0, 32);
  for (int g = 0; g < 8; ++g)
    for (int l = 0; l < 32; ++l) qh[l] = static_cast<std::uint8_t>(qh[l] | (((L[32 * g + l] >> 4) & 1) << g));
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l)
      q[32 * c + l] = static_cast<std::uint8_t>((L[64 * c + l] & 0x0F) | ((L[64 * c + 32 + l] & 0x0F) << 4));
}

// {u8 ql[128]; u8 qh[64]; i8 sc[16]; f16 d}: element 128h + r takes nibble r / 64 of
// ql[64h + r % 64] and bits 2·(r / 32) of qh[32h + r % 32] as its top two bits.
void gguf_quant_block_q6_k(const float* x, std::uint8_t* b) {
  std::int8_t L[kQKK];
  float scales[16];
  float max_scale = 0.0f, max_abs = 0.0f;
  for (int s = 0; s < 16; ++s) {
    scales[s] = fit_scale_signed(x + 16 * s, L + 16 * s);
    if (std::fabs(scales[s]) > max_abs) {
      max_abs = std::fabs(scales[s]);
      max_scale = scales[s];
    }
  }
  std::memset(b, 0, 210);
  if (max_abs < kTinyMax) return;  // an all-zero block: d = 0
  const float iscale = -128.0f / max_scale;
  store_f16(b + 208, 1.0f / iscale);
  auto* sc = reinterpret_cast<std::int8_t*>(b + 192);
  for (int s = 0; s < 16; ++s) sc[s] = static_cast<std::int8_t>(std::min(127, round_even(iscale * scales[s])));
  const float d = load_f16(b + 208);
  for (int s = 0; s < 16; ++s) {
    const float dl = d * static_cast<float>(sc[s]);
    if (dl == 0.0f) continue;
    for (int i = 0; i < 16; ++i)
      L[16 * s + i] = static_cast<std::int8_t>(clamp_int(round_even(x[16 * s + i] / dl), -32, 31) + 32);
  }
  std::uint8_t* ql = b;
  std::uint8_t* qh = b + 128;
  for (int h = 0; h < 2; ++h) {
    const std::int8_t* Lh = L + 128 * h;
    for (int l = 0; l < 32; ++l) {
      ql[64 * h + l] = static_cast<std::uint8_t>((Lh[l] & 0x0F) | ((Lh[l + 64] & 0x0F) << 4));
      ql[64 * h + l + 32] = static_cast<std::uint8_t>((Lh[l + 32] & 0x0F) | ((Lh[l + 96] & 0x0F) << 4));
      qh[32 * h + l] = static_cast<std::uint8_t>((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) | ((Lh[l + 64] >> 4) << 4) |
                                                 ((Lh[l + 96] >> 4) << 6));
    }
  }
}

}  // namespace anvil::io
