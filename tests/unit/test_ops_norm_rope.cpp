// CPU backend: RMSNorm and rotary embeddings against fp64 references and central finite
// differences.
//
// Tolerances (expect_close, relative with a floor at the mean magnitude): 2e-6 for the
// forward passes (a few fp32 roundings per element; the sums of squares are in double),
// 1e-5 for backward against the fp64 formula, 1e-4 against finite differences.
#include <gtest/gtest.h>

#include <cmath>

#include "ops_test_util.h"

namespace anvil::test {
namespace {

// out = w x r, r = 1 / sqrt(mean(x^2) + eps), in double.
DVec ref_rmsnorm(const DVec& x, const DVec& w, i64 n, i64 c, double eps, DVec* rstd = nullptr) {
  DVec out(x.size());
  if (rstd) rstd->assign(static_cast<std::size_t>(n), 0.0);
  for (i64 i = 0; i < n; ++i) {
    double ss = 0.0;
    for (i64 j = 0; j < c; ++j) ss += x[i * c + j] * x[i * c + j];
    const double r = 1.0 / std::sqrt(ss / static_cast<double>(c) + eps);
    if (rstd) (*rstd)[i] = r;
    for (i64 j = 0; j < c; ++j) out[i * c + j] = w[j] * x[i * c + j] * r;
  }
  return out;
}

struct NormCase {
  i64 n, c = 72;
  float eps = 1e-5f;
  Vec x, w, dout;
  NormCase(std::mt19937& rng, i64 rows) : n(rows) {
    x = random_vec(rng, n * c, 3.0f);
    w = random_vec(rng, c, 1.5f);
    round_to_bf16(w);  // so that a bf16 view of w holds the same numbers
    dout = random_vec(rng, n * c);
  }
};

TEST(OpsRmsnorm, ForwardF32AndMisalignedBf16) {
  std::mt19937 rng(20);
  auto be = cpu();
  for (i64 rows : {5, 600}) {  // 600 rows take the multi-threaded path
    NormCase k(rng, rows);
    DVec rstd_ref;
    const DVec want = ref_rmsnorm(to_double(k.x), to_double(k.w), k.n, k.c, k.eps, &rstd_ref);
    WeightBuf bf(k.w, {k.c}, DType::dtype_bf16, 1);
    for (const TensorView& wv : {f32_view(k.w, {k.c}), bf.view}) {
      Vec out(k.x.size(), NAN), rstd(static_cast<std::size_t>(k.n), NAN);
      be->rmsnorm_forward(out.data(), rstd.data(), k.x.data(), wv, k.n, k.c, k.eps);
      expect_close(out, want, 2e-6, "rmsnorm forward");
      expect_close(rstd, rstd_ref, 2e-6, "rmsnorm rstd");
    }
  }
}

// Backward against the fp64 formula and, with `fd`, central differences.
void check_rmsnorm_backward(i64 rows, bool fd) {
  std::mt19937 rng(21);
  auto be = cpu();
  NormCase k(rng, rows);
  const DVec xd = to_double(k.x), wd = to_double(k.w), gd = to_double(k.dout);
  Vec out(k.x.size()), rstd(static_cast<std::size_t>(k.n));
  be->rmsnorm_forward(out.data(), rstd.data(), k.x.data(), f32_view(k.w, {k.c}), k.n, k.c, k.eps);

  // The fp64 formula: dx_j = r w_j g_j - r^3/c x_j sum_k g_k w_k x_k;  dw_j = sum g_j x_j r.
  DVec rs;
  ref_rmsnorm(xd, wd, k.n, k.c, k.eps, &rs);
  DVec want_dx(xd.size()), want_dw(static_cast<std::size_t>(k.c), 0.0);
  for (i64 i = 0; i < k.n; ++i) {
    double s = 0.0;
    for (i64 j = 0; j < k.c; ++j) s += gd[i * k.c + j] * wd[j] * xd[i * k.c + j];
    const double r = rs[i];
    for (i64 j = 0; j < k.c; ++j) {
      want_dx[i * k.c + j] = r * wd[j] * gd[i * k.c + j] - r * r * r / k.c * xd[i * k.c + j] * s;
      want_dw[j] += gd[i * k.c + j] * xd[i * k.c + j] * r;
    }
  }
  auto loss_x = [&](const DVec& x) { return dot(ref_rmsnorm(x, wd, k.n, k.c, k.eps), gd); };
  auto loss_w = [&](const DVec& w) { return dot(ref_rmsnorm(xd, w, k.n, k.c, k.eps), gd); };
  const DVec fd_dx = fd ? finite_diff(loss_x, xd) : DVec{};
  const DVec fd_dw = fd ? finite_diff(loss_w, wd) : DVec{};

  WeightBuf bf(k.w, {k.c}, DType::dtype_bf16, 1);
  for (const TensorView& wv : {f32_view(k.w, {k.c}), bf.view}) {
    Vec dx(k.x.size(), NAN), dw(static_cast<std::size_t>(k.c), 0.0f);
    be->rmsnorm_backward(dx.data(), dw.data(), k.dout.data(), k.x.data(), wv, rstd.data(), k.n, k.c,
                         0.0f);
    expect_close(dx, want_dx, 1e-5, "rmsnorm dx");
    expect_close(dw, want_dw, 1e-5, "rmsnorm dw");
    if (fd) {
      expect_close(dx, fd_dx, 1e-4, "rmsnorm dx vs FD");
      expect_close(dw, fd_dw, 1e-4, "rmsnorm dw vs FD");
    }

    // beta = 1 adds to dx (the residual stream); dw keeps accumulating; dw may be null.
    Vec dx2 = dx, dw2 = dw;
    be->rmsnorm_backward(dx2.data(), dw2.data(), k.dout.data(), k.x.data(), wv, rstd.data(), k.n,
                         k.c, 1.0f);
    DVec twice_dx(want_dx), twice_dw(want_dw);
    for (auto& v : twice_dx) v *= 2;
    for (auto& v : twice_dw) v *= 2;
    expect_close(dx2, twice_dx, 1e-5, "rmsnorm dx beta=1");
    expect_close(dw2, twice_dw, 1e-5, "rmsnorm dw accumulates");
    Vec dx3(k.x.size());
    be->rmsnorm_backward(dx3.data(), nullptr, k.dout.data(), k.x.data(), wv, rstd.data(), k.n, k.c,
                         0.0f);
    EXPECT_EQ(dx3, dx);
  }
}

TEST(OpsRmsnorm, BackwardAgainstFormulaAndFiniteDifferences) { check_rmsnorm_backward(5, true); }

TEST(OpsRmsnorm, BackwardManyRows) { check_rmsnorm_backward(600, false); }

// HF: angle = float(pos) * inv_freq in fp32, then cos / sin (here in double of that angle);
// out_i = x_i cos - x_{i+D/2} sin, out_{i+D/2} = x_{i+D/2} cos + x_i sin.
DVec ref_rope(const DVec& x, const std::vector<std::int32_t>& pos, const Vec& inv_freq, i64 n,
              i64 heads, i64 d, double sign = 1.0) {
  DVec out(x);
  const i64 half = d / 2;
  for (i64 t = 0; t < n; ++t)
    for (i64 h = 0; h < heads; ++h)
      for (i64 i = 0; i < half; ++i) {
        const double angle = static_cast<float>(static_cast<float>(pos[t]) * inv_freq[i]);
        const double c = std::cos(angle), s = sign * std::sin(angle);
        const i64 at = (t * heads + h) * d + i;
        out[at] = x[at] * c - x[at + half] * s;
        out[at + half] = x[at + half] * c + x[at] * s;
      }
  return out;
}

Vec llama_inv_freq(i64 d, double theta) {
  Vec f(static_cast<std::size_t>(d / 2));
  for (i64 i = 0; i < d / 2; ++i)
    f[i] = static_cast<float>(1.0 / std::pow(theta, static_cast<double>(2 * i) / d));
  return f;
}

TEST(OpsRope, ForwardBackwardAgainstReference) {
  std::mt19937 rng(22);
  auto be = cpu();
  const i64 n = 9, heads = 3, d = 18;
  const Vec inv_freq = llama_inv_freq(d, 500000.0);
  // Packed documents: positions restart; one large position where the fp32 angle matters.
  const std::vector<std::int32_t> pos = {0, 1, 2, 3, 0, 1, 2, 0, 70001};
  const Vec x = random_vec(rng, n * heads * d);
  Vec y = x;
  be->rope_forward(y.data(), pos.data(), inv_freq.data(), n, heads, d);
  expect_close(y, ref_rope(to_double(x), pos, inv_freq, n, heads, d), 2e-6, "rope forward");

  // Backward is the transpose: the finite-difference gradient of sum(rope(x) * g).
  const Vec g = random_vec(rng, n * heads * d);
  Vec dx = g;
  be->rope_backward(dx.data(), pos.data(), inv_freq.data(), n, heads, d);
  expect_close(dx, ref_rope(to_double(g), pos, inv_freq, n, heads, d, -1.0), 2e-6, "rope backward");
  auto loss = [&](const DVec& xx) {
    return dot(ref_rope(xx, pos, inv_freq, n, heads, d), to_double(g));
  };
  expect_close(dx, finite_diff(loss, to_double(x)), 1e-4, "rope backward vs FD");

  // A rotation: backward undoes forward.
  be->rope_backward(y.data(), pos.data(), inv_freq.data(), n, heads, d);
  expect_close(y, to_double(x), 2e-6, "rope round trip");
}

// Enough rows for the multi-threaded path; positions up to 4095.
TEST(OpsRope, ManyTokens) {
  std::mt19937 rng(24);
  auto be = cpu();
  const i64 n = 700, heads = 4, d = 18;
  const Vec inv_freq = llama_inv_freq(d, 10000.0);
  std::vector<std::int32_t> pos(n);
  for (i64 t = 0; t < n; ++t) pos[t] = static_cast<std::int32_t>((t * 37) % 4096);
  const Vec x = random_vec(rng, n * heads * d);
  Vec y = x;
  be->rope_forward(y.data(), pos.data(), inv_freq.data(), n, heads, d);
  expect_close(y, ref_rope(to_double(x), pos, inv_freq, n, heads, d), 2e-6, "rope forward");
  be->rope_backward(y.data(), pos.data(), inv_freq.data(), n, heads, d);
  expect_close(y, to_double(x), 2e-6, "rope round trip");
}

// Each packed document, rotated alone with its positions from 0, gives the same rows.
TEST(OpsRope, PackedDocumentsEqualDocumentsAlone) {
  std::mt19937 rng(23);
  auto be = cpu();
  const i64 heads = 2, d = 6;
  const Vec inv_freq = llama_inv_freq(d, 10000.0);
  const std::vector<i64> lens = {4, 1, 6};
  std::vector<std::int32_t> pos;
  for (i64 len : lens)
    for (i64 t = 0; t < len; ++t) pos.push_back(static_cast<std::int32_t>(t));
  const i64 n = static_cast<i64>(pos.size());
  Vec packed = random_vec(rng, n * heads * d);
  const Vec orig = packed;
  be->rope_forward(packed.data(), pos.data(), inv_freq.data(), n, heads, d);
  i64 start = 0;
  for (i64 len : lens) {
    Vec alone(orig.begin() + start * heads * d, orig.begin() + (start + len) * heads * d);
    std::vector<std::int32_t> p(static_cast<std::size_t>(len));
    for (i64 t = 0; t < len; ++t) p[t] = static_cast<std::int32_t>(t);
    be->rope_forward(alone.data(), p.data(), inv_freq.data(), len, heads, d);
    for (i64 i = 0; i < len * heads * d; ++i) ASSERT_EQ(alone[i], packed[start * heads * d + i]);
    start += len;
  }
  // Position 0 is the identity.
  for (i64 i = 0; i < heads * d; ++i) EXPECT_EQ(packed[i], orig[i]);
}

}  // namespace
}  // namespace anvil::test
