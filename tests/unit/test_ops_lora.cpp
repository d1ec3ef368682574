// CPU backend: LoRA forward/backward against an fp64 reference and central differences,
// and the dropout mask: drawn from philox_uniform at the global index, the same however
// rows or columns are split, kept with probability 1 - p, identical to no dropout at p = 0.
//
// Tolerances: 1e-5 (expect_close, relative with a floor at the mean magnitude) against the
// fp64 reference, 1e-4 against finite differences; mask checks are exact.
#include <gtest/gtest.h>

#include <cmath>

#include "backend/cpu/cpu_backend.h"
#include "ops_test_util.h"

namespace anvil::test {
namespace {

using backend::LoraDropout;

// keep / (1 - p) for every element of x (n, in), from the documented index.
DVec ref_mask(const LoraDropout& d, i64 n, i64 in) {
  DVec m(static_cast<std::size_t>(n * in), 1.0);
  if (d.p == 0.0f) return m;
  for (i64 i = 0; i < n; ++i)
    for (i64 j = 0; j < in; ++j) {
      const auto index =
          static_cast<std::uint64_t>((d.row_offset + i) * d.row_stride + d.col_offset + j);
      m[i * in + j] = philox_uniform(d.stream, index) >= d.p ? 1.0 / (1.0 - d.p) : 0.0;
    }
  return m;
}

struct Lora {
  i64 n, in, out, r;
  double scale;
  DVec mask;
};

// y = scale (mask * x) A^T B^T (without the base y), xa = (mask * x) A^T.
DVec ref_lora(const Lora& L, const DVec& x, const DVec& a, const DVec& b, DVec* xa = nullptr) {
  DVec t(static_cast<std::size_t>(L.n * L.r), 0.0), y(static_cast<std::size_t>(L.n * L.out), 0.0);
  for (i64 i = 0; i < L.n; ++i)
    for (i64 k = 0; k < L.r; ++k)
      for (i64 j = 0; j < L.in; ++j)
        t[i * L.r + k] += L.mask[i * L.in + j] * x[i * L.in + j] * a[k * L.in + j];
  for (i64 i = 0; i < L.n; ++i)
    for (i64 o = 0; o < L.out; ++o)
      for (i64 k = 0; k < L.r; ++k) y[i * L.out + o] += L.scale * t[i * L.r + k] * b[o * L.r + k];
  if (xa) *xa = t;
  return y;
}

struct LoraCase {
  Lora L;
  LoraDropout drop;
  Vec x, a, b, y0, dy;
  LoraCase(i64 n, i64 in, i64 out, i64 r, float p, std::uint32_t seed) {
    std::mt19937 rng(seed);
    drop.p = p;
    drop.stream = philox_stream(seed, 12, 3, 1);
    drop.row_offset = 17;
    drop.row_stride = in + 13;  // the layer's full width; this shard starts at column 9
    drop.col_offset = 9;
    L = {n, in, out, r, 0.75, ref_mask(drop, n, in)};
    x = random_vec(rng, n * in);
    a = random_vec(rng, r * in, 0.3f);
    b = random_vec(rng, out * r, 0.3f);
    y0 = random_vec(rng, n * out);
    dy = random_vec(rng, n * out);
  }
};

void check_lora(const LoraCase& c, bool fd, const std::string& what) {
  auto be = cpu();
  const Lora& L = c.L;
  const DVec xd = to_double(c.x), ad = to_double(c.a), bd = to_double(c.b), dyd = to_double(c.dy);
  DVec want_xa;
  DVec want_y = ref_lora(L, xd, ad, bd, &want_xa);
  for (std::size_t i = 0; i < want_y.size(); ++i) want_y[i] += c.y0[i];
  Vec y = c.y0, xa(static_cast<std::size_t>(L.n * L.r), NAN);
  be->lora_forward(y.data(), xa.data(), c.x.data(), c.a.data(), c.b.data(), L.n, L.in, L.out, L.r,
                   static_cast<float>(L.scale), c.drop);
  expect_close(y, want_y, 1e-5, what + " y");
  expect_close(xa, want_xa, 1e-5, what + " xa");

  // g = scale dy B;  db = scale dy^T xa;  da = g^T (mask x);  dx = mask (g A). The
  // gradients accumulate into what is there.
  DVec g(static_cast<std::size_t>(L.n * L.r), 0.0), want_da(c.a.size(), 0.5),
      want_db(c.b.size(), 0.5), want_dx(c.x.size(), 0.5);
  for (i64 i = 0; i < L.n; ++i)
    for (i64 k = 0; k < L.r; ++k)
      for (i64 o = 0; o < L.out; ++o)
        g[i * L.r + k] += L.scale * dyd[i * L.out + o] * bd[o * L.r + k];
  for (i64 o = 0; o < L.out; ++o)
    for (i64 k = 0; k < L.r; ++k)
      for (i64 i = 0; i < L.n; ++i)
        want_db[o * L.r + k] += L.scale * dyd[i * L.out + o] * xa[i * L.r + k];
  for (i64 i = 0; i < L.n; ++i)
    for (i64 k = 0; k < L.r; ++k)
      for (i64 j = 0; j < L.in; ++j) {
        const i64 at = i * L.in + j;
        want_da[k * L.in + j] += g[i * L.r + k] * L.mask[at] * xd[at];
        want_dx[at] += L.mask[at] * g[i * L.r + k] * ad[k * L.in + j];
      }
  Vec dx(c.x.size(), 0.5f), da(c.a.size(), 0.5f), db(c.b.size(), 0.5f);
  be->lora_backward(dx.data(), da.data(), db.data(), c.dy.data(), c.x.data(), xa.data(), c.a.data(),
                    c.b.data(), L.n, L.in, L.out, L.r, static_cast<float>(L.scale), c.drop);
  expect_close(dx, want_dx, 1e-5, what + " dx");
  expect_close(da, want_da, 1e-5, what + " da");
  expect_close(db, want_db, 1e-5, what + " db");
  if (!fd) return;
  // Central differences of sum(y * dy) with the same mask (gradients minus the 0.5 start).
  for (auto* v : {&dx, &da, &db})
    for (auto& e : *v) e -= 0.5f;
  expect_close(dx, finite_diff([&](const DVec& x) { return dot(ref_lora(L, x, ad, bd), dyd); }, xd),
               1e-4, what + " dx vs FD");
  expect_close(da, finite_diff([&](const DVec& a) { return dot(ref_lora(L, xd, a, bd), dyd); }, ad),
               1e-4, what + " da vs FD");
  expect_close(db, finite_diff([&](const DVec& b) { return dot(ref_lora(L, xd, ad, b), dyd); }, bd),
               1e-4, what + " db vs FD");
}

TEST(OpsLora, NoDropoutAgainstReferenceAndFiniteDifferences) {
  check_lora(LoraCase(6, 12, 10, 3, 0.0f, 50), true, "p=0");
}

TEST(OpsLora, DropoutAgainstReferenceAndFiniteDifferences) {
  check_lora(LoraCase(6, 12, 10, 3, 0.5f, 51), true, "p=0.5");
}

// 300 rows: two row blocks of the backward, odd widths.
TEST(OpsLora, ManyRows) {
  ASSERT_LT(backend::kLoraRows, 300);
  check_lora(LoraCase(300, 72, 40, 8, 0.0f, 52), false, "many rows p=0");
  check_lora(LoraCase(300, 72, 40, 8, 0.3f, 53), false, "many rows p=0.3");
}

// p = 0 takes x as it is: bit-identical to no dropout settings at all, forward and backward.
TEST(OpsLora, ZeroDropoutIsNoDropout) {
  auto be = cpu();
  LoraCase c(40, 24, 16, 4, 0.0f, 54);
  auto run = [&](const LoraDropout& d) {
    Vec y = c.y0, xa(static_cast<std::size_t>(40 * 4)), dx(c.x.size(), 0.0f), da(c.a.size(), 0.0f),
        db(c.b.size(), 0.0f);
    be->lora_forward(y.data(), xa.data(), c.x.data(), c.a.data(), c.b.data(), 40, 24, 16, 4, 2.0f,
                     d);
    be->lora_backward(dx.data(), da.data(), db.data(), c.dy.data(), c.x.data(), xa.data(),
                      c.a.data(), c.b.data(), 40, 24, 16, 4, 2.0f, d);
    return std::vector<Vec>{y, xa, dx, da, db};
  };
  EXPECT_EQ(run(c.drop), run(LoraDropout{}));
}

// With A = I, B = I and scale 1, y = dropout(x) exactly: the mask is observable bit for bit.
Vec dropout_via_lora(backend::Backend& be, const Vec& x, i64 n, i64 in, const LoraDropout& d) {
  Vec eye(static_cast<std::size_t>(in * in), 0.0f), y(static_cast<std::size_t>(n * in), 0.0f),
      xa(static_cast<std::size_t>(n * in));
  for (i64 i = 0; i < in; ++i) eye[i * in + i] = 1.0f;
  be.lora_forward(y.data(), xa.data(), x.data(), eye.data(), eye.data(), n, in, in, in, 1.0f, d);
  return y;
}

TEST(OpsLora, DropoutMaskFollowsGlobalIndex) {
  auto be = cpu();
  std::mt19937 rng(55);
  const i64 n = 300, in = 16;
  const Vec x = random_vec(rng, n * in);
  LoraDropout d;
  d.p = 0.5f;
  d.stream = philox_stream(7, 3, 2, 5);
  d.row_offset = 1000;
  d.row_stride = in;
  const Vec whole = dropout_via_lora(*be, x, n, in, d);

  // The documented mask, element by element; kept values doubled exactly.
  const DVec mask = ref_mask(d, n, in);
  i64 kept = 0;
  for (i64 i = 0; i < n * in; ++i) {
    ASSERT_EQ(whole[i], static_cast<float>(mask[i] * x[i])) << i;
    kept += whole[i] != 0.0f;
  }
  // Standard deviation of the kept fraction: sqrt(p (1-p) / 4800) ~ 0.0072.
  EXPECT_NEAR(static_cast<double>(kept) / (n * in), 0.5, 0.03);

  // Rows split over two calls (micro-batches / ranks) with their row offsets.
  LoraDropout d2 = d;
  Vec head(x.begin(), x.begin() + 100 * in), tail(x.begin() + 100 * in, x.end());
  Vec split = dropout_via_lora(*be, head, 100, in, d);
  d2.row_offset = d.row_offset + 100;
  const Vec rest = dropout_via_lora(*be, tail, n - 100, in, d2);
  split.insert(split.end(), rest.begin(), rest.end());
  EXPECT_EQ(split, whole);

  // Columns split over two shards (tensor parallel) with their column offsets.
  for (i64 c0 : {i64{0}, i64{7}}) {
    const i64 w = c0 == 0 ? 7 : in - 7;
    Vec xs;
    for (i64 i = 0; i < n; ++i)
      xs.insert(xs.end(), x.begin() + i * in + c0, x.begin() + i * in + c0 + w);
    LoraDropout ds = d;
    ds.col_offset = c0;
    const Vec ys = dropout_via_lora(*be, xs, n, w, ds);
    for (i64 i = 0; i < n; ++i)
      for (i64 j = 0; j < w; ++j) ASSERT_EQ(ys[i * w + j], whole[i * in + c0 + j]);
  }

  // Another step's stream gives another mask.
  LoraDropout d3 = d;
  d3.stream = philox_stream(7, 4, 2, 5);
  EXPECT_NE(dropout_via_lora(*be, x, n, in, d3), whole);
}

TEST(OpsLora, KeptFractionFollowsP) {
  auto be = cpu();
  std::mt19937 rng(56);
  const i64 n = 500, in = 40;
  const Vec x = random_vec(rng, n * in);
  for (float p : {0.1f, 0.2f, 0.8f}) {
    LoraDropout d;
    d.p = p;
    d.stream = philox_stream(11, 1, 0, 0);
    d.row_stride = in;
    const Vec y = dropout_via_lora(*be, x, n, in, d);
    i64 kept = 0;
    for (float v : y) kept += v != 0.0f;
    const double sd = std::sqrt(p * (1.0 - p) / (n * in));
    EXPECT_NEAR(static_cast<double>(kept) / (n * in), 1.0 - p, 5 * sd) << "p=" << p;
  }
}

}  // namespace
}  // namespace anvil::test
