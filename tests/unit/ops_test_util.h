// Shared by the backend op tests: seeded random inputs, weight views (bf16, misaligned),
// the comparison against fp64 references, and central finite differences.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/dtype.h"
#include "core/tensor.h"

namespace anvil::test {

using backend::i64;
using Vec = std::vector<float>;
using DVec = std::vector<double>;

// Values in +-[lo, hi] with a random sign: never zero, so no product vanishes by accident.
inline Vec random_vec(std::mt19937& rng, i64 n, float hi = 1.0f, float lo = 0.1f) {
  std::uniform_real_distribution<float> mag(lo, hi);
  std::bernoulli_distribution neg(0.5);
  Vec v(static_cast<std::size_t>(n));
  for (auto& x : v) x = neg(rng) ? -mag(rng) : mag(rng);
  return v;
}

inline DVec to_double(const Vec& v) { return DVec(v.begin(), v.end()); }
inline Vec to_float(const DVec& v) { return Vec(v.begin(), v.end()); }

// Rounds every value to bf16, so that a bf16 copy of it holds exactly the same numbers.
inline void round_to_bf16(Vec& v) {
  for (auto& x : v) x = bf16_to_f32(f32_to_bf16(x));
}

// A weight stored as raw bytes at a chosen byte offset (1 makes bf16 misaligned, 2 makes
// f32 misaligned), like a tensor inside an mmapped safetensors file.
struct WeightBuf {
  std::vector<unsigned char> bytes;
  TensorView view;
  WeightBuf(const Vec& values, Shape shape, DType dtype, std::size_t offset = 0) {
    const std::size_t n = values.size(), es = dtype_size(dtype);
    bytes.assign(offset + n * es + 8, 0);
    unsigned char* at = bytes.data() + offset;
    for (std::size_t i = 0; i < n; ++i) {
      if (dtype == DType::dtype_bf16) {
        const std::uint16_t h = f32_to_bf16(values[i]);
        std::memcpy(at + 2 * i, &h, 2);
      } else {
        std::memcpy(at + 4 * i, &values[i], 4);
      }
    }
    view.data = at;
    view.dtype = dtype;
    view.shape = shape;
  }
};

// Every element within rtol * (|ref| + mean |ref|): a relative error with a floor at the
// typical magnitude, so values that cancel to near zero are judged on the tensor's scale.
// A part of a larger tensor (which may be all zeros: a one-token document's dq) passes that
// tensor's mean |value| as `scale`, the floor when it is larger.
inline void expect_close(const float* got, const double* ref, std::size_t n, double rtol,
                         const std::string& what, double scale = 0.0) {
  double mean_abs = 0.0;
  for (std::size_t i = 0; i < n; ++i) mean_abs += std::fabs(ref[i]);
  mean_abs = std::max(n ? mean_abs / static_cast<double>(n) : 0.0, scale);
  double worst = 0.0;
  std::size_t worst_at = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double err = std::fabs(got[i] - ref[i]) / (std::fabs(ref[i]) + mean_abs + 1e-30);
    if (!(err <= worst)) {  // NaN counts as worst
      worst = std::isnan(err) ? INFINITY : err;
      worst_at = i;
    }
  }
  EXPECT_LE(worst, rtol) << what << ": worst at [" << worst_at << "] got " << got[worst_at]
                         << " want " << ref[worst_at] << " (n=" << n << ")";
}
inline void expect_close(const Vec& got, const DVec& ref, double rtol, const std::string& what,
                         double scale = 0.0) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  expect_close(got.data(), ref.data(), got.size(), rtol, what, scale);
}

// mean |v|.
inline double mean_abs_of(const Vec& v) {
  double s = 0.0;
  for (float x : v) s += std::fabs(x);
  return v.empty() ? 0.0 : s / static_cast<double>(v.size());
}

// Central differences in double of a scalar function of one input vector.
inline DVec finite_diff(const std::function<double(const DVec&)>& f, DVec x, double eps = 1e-5) {
  DVec g(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + eps;
    const double up = f(x);
    x[i] = x0 - eps;
    const double down = f(x);
    x[i] = x0;
    g[i] = (up - down) / (2.0 * eps);
  }
  return g;
}

inline double dot(const DVec& a, const DVec& b) {
  double s = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

inline std::unique_ptr<backend::Backend> cpu() { return backend::make_cpu_backend(); }

inline TensorView f32_view(Vec& v, Shape shape) {
  TensorView t;
  t.data = v.data();
  t.dtype = DType::dtype_f32;
  t.shape = shape;
  return t;
}

}  // namespace anvil::test
