// The vectorizable exp of cpu_exp.h. exp(x) = 2^n * exp(r) with n = round(x / ln 2) and
// r = x - n ln 2 in [-0.347, 0.347]: r is formed in two steps (ln 2 split into a part with
// few significant bits, whose product with n is exact, and the rest), exp(r) is its Taylor
// polynomial of degree 7 (truncation error below 6e-9 relative), and 2^n is built from its
// exponent bits in two halves so that n near either end of the range needs no special case.
#include "backend/cpu/cpu_exp.h"

#include <bit>
#include <limits>

#include "core/vector_clones.h"

namespace anvil::backend {

namespace {

constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;  // 355/512: n * kLn2Hi is exact for |n| < 2^15
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding and taking it away rounds to an integer
constexpr float kLow = -87.3365448f;   // ln(FLT_MIN): below it exp(x) is subnormal
constexpr float kHigh = 88.7228391f;   // ln(FLT_MAX)

inline float pow2(std::int32_t e) {  // 2^e for e in [-126, 127]
  return std::bit_cast<float>(static_cast<std::int32_t>((e + 127) << 23));
}

inline float exp_core(float x) {
  float c = x > kLow ? x : kLow;  // NaN clamps to kLow here; the final select returns it
  c = c < kHigh ? c : kHigh;
  const float n = (c * kLog2e + kRound) - kRound;
  const float r = (c - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const auto ni = static_cast<std::int32_t>(n);  // in [-126, 128]
  const std::int32_t half = ni >> 1;
  const float v = p * pow2(half) * pow2(ni - half);
  const float above = x <= kHigh ? v : std::numeric_limits<float>::infinity();
  const float below = x < kLow ? 0.0f : x;  // below the range, or NaN
  return x >= kLow ? above : below;
}

}  // namespace

float exp_scalar(float x) { return exp_core(x); }

ANVIL_VECTOR_CLONES void exp_shifted(const float* x, float shift, float* y, std::int64_t n) {
#pragma omp simd
  for (std::int64_t j = 0; j < n; ++j) y[j] = exp_core(x[j] - shift);
}

ANVIL_VECTOR_CLONES void exp_negated(const float* x, float* y, std::int64_t n) {
#pragma omp simd
  for (std::int64_t j = 0; j < n; ++j) y[j] = exp_core(-x[j]);
}

}  // namespace anvil::backend
