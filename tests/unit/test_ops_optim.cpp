// CPU backend: sum of squares, scaling and AdamW, against fp64 references and against
// values produced by torch.optim.AdamW.
//
// Tolerances: sum_squares 1e-12 relative (double accumulation of exact fp32 squares);
// scale exact; one AdamW step from the op's fp32 state against the fp64 step: 2e-7
// relative for p and m, 3e-7 for v (an ulp or two); five steps against the fp64 trajectory
// 1e-6; PyTorch's values to 1e-6 absolute.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "ops_test_util.h"

namespace anvil::test {
namespace {

using backend::AdamwArgs;

TEST(OpsOptim, SumSquares) {
  auto be = cpu();
  std::mt19937 rng(60);
  for (i64 n : {i64{0}, i64{1}, i64{63}, i64{100003}}) {
    const Vec x = random_vec(rng, n, 3.0f);
    double want = 0.0;
    for (float v : x) want += static_cast<double>(v) * v;
    const double got = be->sum_squares(x.data(), n);
    EXPECT_NEAR(got, want, 1e-12 * want) << "n=" << n;
    EXPECT_EQ(be->sum_squares(x.data(), n), got) << "deterministic";
  }
}

TEST(OpsOptim, Scale) {
  auto be = cpu();
  std::mt19937 rng(61);
  const Vec x = random_vec(rng, 1001);
  Vec y = x;
  be->scale(y.data(), 0.3f, 1001);
  for (std::size_t i = 0; i < x.size(); ++i) ASSERT_EQ(y[i], x[i] * 0.3f);
}

// AdamW in double: p *= 1 - lr wd; m, v moments; p -= lr/bc1 m / (sqrt(v)/sqrt(bc2) + eps).
struct RefAdamw {
  DVec p, m, v;
  void step(const DVec& g, const AdamwArgs& a) {
    const double lr = a.lr, b1 = a.beta1, b2 = a.beta2, eps = a.eps, wd = a.weight_decay;
    const double bc1 = 1.0 - std::pow(b1, static_cast<double>(a.step));
    const double bc2 = 1.0 - std::pow(b2, static_cast<double>(a.step));
    for (std::size_t i = 0; i < p.size(); ++i) {
      p[i] *= 1.0 - lr * wd;
      m[i] = b1 * m[i] + (1.0 - b1) * g[i];
      v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
      p[i] -= lr / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + eps);
    }
  }
};

TEST(OpsOptim, AdamwAgainstDoubleReference) {
  auto be = cpu();
  std::mt19937 rng(62);
  const i64 n = 10000;
  Vec p = random_vec(rng, n), m(n, 0.0f), v(n, 0.0f);
  RefAdamw ref{to_double(p), DVec(n, 0.0), DVec(n, 0.0)};
  AdamwArgs args;
  args.lr = 1e-2f;
  args.beta1 = 0.9f;
  args.beta2 = 0.95f;
  args.eps = 1e-8f;
  args.weight_decay = 0.1f;
  for (std::int64_t step = 1; step <= 5; ++step) {
    args.step = step;
    const Vec g = random_vec(rng, n, 0.5f, 1e-3f);
    // One step of the reference from the op's own fp32 state: the new p may differ by its
    // final rounding (2^-24 relative) plus rounding in an update of about lr.
    RefAdamw one{to_double(p), to_double(m), to_double(v)};
    one.step(to_double(g), args);
    ref.step(to_double(g), args);
    be->adamw_update(p.data(), g.data(), m.data(), v.data(), n, args);
    const std::string at = " step " + std::to_string(step);
    expect_close(m, one.m, 2e-7, "m" + at);
    expect_close(v, one.v, 3e-7, "v" + at);
    expect_close(p, one.p, 2e-7, "p" + at);
  }
  expect_close(p, ref.p, 1e-6, "p after 5 steps");
}

// torch.optim.AdamW([p], lr=0.01, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
// foreach=False), fp32 tensors, three steps with these gradients.
TEST(OpsOptim, AdamwMatchesPytorch) {
  auto be = cpu();
  Vec p = {0.5f, -0.25f, 1.5f, -2.0f}, m(4, 0.0f), v(4, 0.0f);
  const Vec grads[3] = {
      {0.1f, -0.2f, 0.3f, -0.4f}, {-0.05f, 0.5f, 0.0f, 1.0f}, {0.2f, 0.2f, -1e-3f, 3.0f}};
  const float want_p[3][4] = {{0.489500016f, -0.239749998f, 1.4885f, -1.98800004f},
                              {0.486326814f, -0.243892714f, 1.48022509f, -1.99039459f},
                              {0.47935304f, -0.249079764f, 1.47345293f, -1.99541879f}};
  const float want_m[4] = {0.0236000009f, 0.0487999991f, 0.0241999999f, 0.357600003f};
  const float want_v[4] = {0.00257000024f, 0.0156800002f, 0.00406129984f, 0.504720032f};
  AdamwArgs args;
  args.lr = 0.01f;
  args.beta1 = 0.9f;
  args.beta2 = 0.95f;
  args.eps = 1e-8f;
  args.weight_decay = 0.1f;
  for (int s = 0; s < 3; ++s) {
    args.step = s + 1;
    be->adamw_update(p.data(), grads[s].data(), m.data(), v.data(), 4, args);
    for (int i = 0; i < 4; ++i)
      EXPECT_NEAR(p[i], want_p[s][i], 1e-6) << "step " << s + 1 << " [" << i << "]";
  }
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(m[i], want_m[i], 1e-6);
    EXPECT_NEAR(v[i], want_v[i], 1e-6);
  }
  args.step = 0;
  EXPECT_THROW(be->adamw_update(p.data(), grads[0].data(), m.data(), v.data(), 4, args), Error);
}

}  // namespace
}  // namespace anvil::test
