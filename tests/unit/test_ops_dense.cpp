// CPU backend: gemm, linear layers (f32, bf16, misaligned, converted in several blocks),
// embedding and SwiGLU against fp64 references and central finite differences.
//
// Tolerances (expect_close: |got - ref| <= rtol (|ref| + mean |ref|)): 1e-5 for sums of
// up to ~100 fp32 terms, 1e-4 for sums of 20000; 1e-6 for elementwise ops; exact for
// copies. Gradients against central differences (eps 1e-5 in double on the fp64
// reference): 1e-4 (the difference quotient itself is good to ~1e-9).
// Sizes are chosen so that each OpenMP loop runs both on one thread and on a team.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "ops_test_util.h"
#include "quant/quant_state.h"

namespace anvil::test {
namespace {

// C = alpha op(A) op(B) + beta C in double; op(X)[i][j] reads X[j*ld + i] when transposed.
DVec ref_gemm(bool ta, bool tb, i64 m, i64 n, i64 k, double alpha, const Vec& a, i64 lda,
              const Vec& b, i64 ldb, double beta, const Vec& c, i64 ldc) {
  DVec out = to_double(c);
  for (i64 i = 0; i < m; ++i)
    for (i64 j = 0; j < n; ++j) {
      double s = 0.0;
      for (i64 p = 0; p < k; ++p)
        s += static_cast<double>(ta ? a[p * lda + i] : a[i * lda + p]) *
             (tb ? b[j * ldb + p] : b[p * ldb + j]);
      out[i * ldc + j] = alpha * s + beta * c[i * ldc + j];
    }
  return out;
}

TEST(OpsGemm, AllTransposesWithLeadingDims) {
  std::mt19937 rng(1);
  auto be = cpu();
  const i64 m = 13, n = 9, k = 17;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      const i64 lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 2, ldc = n + 5;
      const Vec a = random_vec(rng, (ta ? k : m) * lda), b = random_vec(rng, (tb ? n : k) * ldb);
      Vec c = random_vec(rng, m * ldc);
      const DVec want = ref_gemm(ta, tb, m, n, k, 0.7, a, lda, b, ldb, 0.5, c, ldc);
      be->gemm(ta, tb, m, n, k, 0.7f, a.data(), lda, b.data(), ldb, 0.5f, c.data(), ldc);
      // Padding columns of C are compared too: they must be untouched.
      expect_close(c, want, 1e-5, "gemm ta=" + std::to_string(ta) + " tb=" + std::to_string(tb));
    }
}

TEST(OpsGemm, BetaZeroIgnoresGarbageAndEmptyK) {
  auto be = cpu();
  std::mt19937 rng(2);
  const Vec a = random_vec(rng, 4 * 3), b = random_vec(rng, 3 * 5);
  Vec c(4 * 5, NAN);
  be->gemm(false, false, 4, 5, 3, 1.0f, a.data(), 3, b.data(), 5, 0.0f, c.data(), 5);
  expect_close(c, ref_gemm(false, false, 4, 5, 3, 1, a, 3, b, 5, 0, Vec(20, 0.0f), 5), 1e-6,
               "beta 0");
  Vec d(4 * 5, 2.0f);
  be->gemm(false, false, 4, 5, 0, 1.0f, a.data(), 1, b.data(), 5, 0.5f, d.data(), 5);
  for (float x : d) EXPECT_EQ(x, 1.0f);
}

// y = x W^T + bias + beta y and dx = dy W + beta dx, in double.
DVec ref_linear(const DVec& x, const DVec& w, const DVec* bias, i64 m, i64 in, i64 out) {
  DVec y(static_cast<std::size_t>(m * out));
  for (i64 i = 0; i < m; ++i)
    for (i64 o = 0; o < out; ++o) {
      double s = bias ? (*bias)[o] : 0.0;
      for (i64 j = 0; j < in; ++j) s += x[i * in + j] * w[o * in + j];
      y[i * out + o] = s;
    }
  return y;
}

DVec ref_linear_dx(const DVec& dy, const DVec& w, i64 m, i64 in, i64 out) {
  DVec dx(static_cast<std::size_t>(m * in), 0.0);
  for (i64 i = 0; i < m; ++i)
    for (i64 o = 0; o < out; ++o)
      for (i64 j = 0; j < in; ++j) dx[i * in + j] += dy[i * out + o] * w[o * in + j];
  return dx;
}

// Forward and backward of one weight view against the references; the fp64 weights are
// the exact values the view holds.
void check_linear(const TensorView& wv, const Vec& wvals, i64 m, double rtol_fwd, double rtol_bwd,
                  const std::string& what) {
  std::mt19937 rng(3);
  auto be = cpu();
  const i64 out = wv.shape[0], in = wv.shape[1];
  const Vec x = random_vec(rng, m * in), bias = random_vec(rng, out), dy = random_vec(rng, m * out);
  const DVec w = to_double(wvals), bd = to_double(bias);
  Vec y(static_cast<std::size_t>(m * out), NAN);
  be->linear_forward(y.data(), x.data(), wv, bias.data(), m, 0.0f);
  expect_close(y, ref_linear(to_double(x), w, &bd, m, in, out), rtol_fwd, what + " forward");
  // beta = 1 accumulates (the residual stream), without bias.
  Vec y2 = y;
  be->linear_forward(y2.data(), x.data(), wv, nullptr, m, 1.0f);
  DVec want2 = ref_linear(to_double(x), w, nullptr, m, in, out);
  for (std::size_t i = 0; i < want2.size(); ++i) want2[i] += y[i];
  expect_close(y2, want2, rtol_fwd, what + " forward beta=1");

  Vec dx(static_cast<std::size_t>(m * in), NAN);
  be->linear_backward_input(dx.data(), dy.data(), wv, m, 0.0f);
  const DVec want_dx = ref_linear_dx(to_double(dy), w, m, in, out);
  expect_close(dx, want_dx, rtol_bwd, what + " backward");
  Vec dx2 = dx;
  be->linear_backward_input(dx2.data(), dy.data(), wv, m, 1.0f);
  DVec want_dx2 = want_dx;
  for (std::size_t i = 0; i < want_dx2.size(); ++i) want_dx2[i] += dx[i];
  expect_close(dx2, want_dx2, rtol_bwd, what + " backward beta=1");
}

TEST(OpsLinear, F32) {
  std::mt19937 rng(4);
  Vec w = random_vec(rng, 40 * 72);
  check_linear(f32_view(w, {40, 72}), w, 5, 1e-5, 1e-5, "f32");
}

TEST(OpsLinear, MisalignedF32AndBf16) {
  std::mt19937 rng(5);
  Vec w = random_vec(rng, 33 * 18);
  WeightBuf f32(w, {33, 18}, DType::dtype_f32, 2);
  ASSERT_NE(reinterpret_cast<std::uintptr_t>(f32.view.data) % 4, 0u);
  check_linear(f32.view, w, 7, 1e-5, 1e-5, "misaligned f32");
  round_to_bf16(w);
  WeightBuf bf(w, {33, 18}, DType::dtype_bf16, 1);
  ASSERT_NE(reinterpret_cast<std::uintptr_t>(bf.view.data) % 2, 0u);
  check_linear(bf.view, w, 7, 1e-5, 1e-5, "misaligned bf16");
}

// 20000 rows of 72 bf16 values are converted to f32 in two blocks.
TEST(OpsLinear, Bf16ConvertedInBlocks) {
  std::mt19937 rng(6);
  Vec w = random_vec(rng, 20000 * 72);
  round_to_bf16(w);
  WeightBuf bf(w, {20000, 72}, DType::dtype_bf16);
  check_linear(bf.view, w, 3, 1e-5, 1e-4, "bf16 blocks");
}

// Quantized weights (nf4, fp8_e4m3): forward and input gradient against the fp64
// reference on the dequantized values, i.e. the op equals dequantize-then-f32 linear.
// Shapes put tile and block edges mid-row and on odd elements; the large case is
// dequantized in two tiles of rows (kConvertFloats), never as a whole.
void check_quantized_linear(quant::QuantKind kind, i64 out, i64 in, i64 m, const std::string& what) {
  std::mt19937 rng(static_cast<unsigned>(out * 31 + in));
  Vec w = random_vec(rng, out * in, 0.05f, 0.001f);
  quant::QuantStore store;
  const TensorView q = store.add(f32_view(w, {out, in}), kind);
  ASSERT_NE(q.dtype, DType::dtype_f32);
  Vec dq(w.size());
  quant::quant_dequantize(q, 0, out * in, dq.data());
  ASSERT_NE(dq, w);  // the reference really is the quantized weight, not the input
  check_linear(q, dq, m, 1e-5, 1e-4, what);
}

TEST(OpsLinear, Nf4AgainstDequantized) {
  check_quantized_linear(quant::QuantKind::quant_nf4, 37, 53, 5, "nf4 small");
  check_quantized_linear(quant::QuantKind::quant_nf4, 600, 1999, 3, "nf4 two tiles");
}

TEST(OpsLinear, Fp8AgainstDequantized) {
  check_quantized_linear(quant::QuantKind::quant_fp8, 37, 53, 5, "fp8 small");
  check_quantized_linear(quant::QuantKind::quant_fp8, 600, 1999, 3, "fp8 two tiles");
}

TEST(OpsLinear, QuantizedWithoutStateIsRefused) {
  std::vector<std::uint8_t> codes(40 * 72 / 2);
  const TensorView q{codes.data(), DType::dtype_nf4, Shape{40, 72}};
  Vec x(72), y(40);
  EXPECT_THROW(cpu()->linear_forward(y.data(), x.data(), q, nullptr, 1, 0.0f), Error);
}

TEST(OpsLinear, GradientMatchesFiniteDifferences) {
  std::mt19937 rng(7);
  auto be = cpu();
  const i64 m = 3, in = 6, out = 5;
  Vec w = random_vec(rng, out * in);
  const Vec x = random_vec(rng, m * in), proj = random_vec(rng, m * out);
  const DVec wd = to_double(w), pd = to_double(proj);
  auto loss = [&](const DVec& xx) { return dot(ref_linear(xx, wd, nullptr, m, in, out), pd); };
  Vec dx(static_cast<std::size_t>(m * in));
  be->linear_backward_input(dx.data(), proj.data(), f32_view(w, {out, in}), m, 0.0f);
  expect_close(dx, finite_diff(loss, to_double(x)), 1e-4, "linear dx vs FD");
}

TEST(OpsEmbedding, ForwardCopiesRowsF32AndBf16) {
  std::mt19937 rng(8);
  auto be = cpu();
  const i64 V = 11, C = 10, n = 30;
  Vec table = random_vec(rng, V * C);
  round_to_bf16(table);
  std::vector<std::int32_t> ids(n);
  for (i64 i = 0; i < n; ++i) ids[i] = static_cast<std::int32_t>((i * 7 + 3) % V);
  WeightBuf bf(table, {V, C}, DType::dtype_bf16, 1);
  for (const TensorView& tv : {f32_view(table, {V, C}), bf.view}) {
    Vec out(static_cast<std::size_t>(n * C));
    be->embedding_forward(out.data(), ids.data(), tv, n);
    for (i64 i = 0; i < n; ++i)
      for (i64 c = 0; c < C; ++c) ASSERT_EQ(out[i * C + c], table[ids[i] * C + c]);
  }
  std::vector<std::int32_t> bad = {0, static_cast<std::int32_t>(V)};
  Vec out(2 * C);
  EXPECT_THROW(be->embedding_forward(out.data(), bad.data(), f32_view(table, {V, C}), 2), Error);
  bad[1] = -1;
  EXPECT_THROW(be->embedding_forward(out.data(), bad.data(), f32_view(table, {V, C}), 2), Error);
}

TEST(OpsEmbedding, BackwardScatterAddsRepeatedIds) {
  std::mt19937 rng(9);
  auto be = cpu();
  const i64 V = 11, C = 130, n = 300;  // C spans three column blocks
  std::vector<std::int32_t> ids(n);
  for (i64 i = 0; i < n; ++i) ids[i] = static_cast<std::int32_t>((i * i + 1) % 5);  // repeats
  const Vec dout = random_vec(rng, n * C);
  Vec dtable = random_vec(rng, V * C);
  DVec want = to_double(dtable);
  for (i64 i = 0; i < n; ++i)
    for (i64 c = 0; c < C; ++c) want[ids[i] * C + c] += dout[i * C + c];
  be->embedding_backward(dtable.data(), dout.data(), ids.data(), n, V, C);
  expect_close(dtable, want, 1e-5, "embedding backward");  // 60 fp32 adds per row

  // The gradient of sum(table[ids] * dout) by finite differences on the table.
  auto loss = [&](const DVec& t) {
    double s = 0.0;
    for (i64 i = 0; i < n; ++i)
      for (i64 c = 0; c < C; ++c) s += t[ids[i] * C + c] * dout[i * C + c];
    return s;
  };
  Vec grad(static_cast<std::size_t>(V * C), 0.0f);
  be->embedding_backward(grad.data(), dout.data(), ids.data(), n, V, C);
  expect_close(grad, finite_diff(loss, DVec(static_cast<std::size_t>(V * C), 0.5)), 1e-4,
               "embedding backward vs FD");
}

double ref_silu(double g) { return g / (1.0 + std::exp(-g)); }

TEST(OpsSwiglu, ForwardBackwardAgainstReferenceAndFiniteDifferences) {
  std::mt19937 rng(10);
  auto be = cpu();
  const i64 n = 40001;
  const Vec gate = random_vec(rng, n, 6.0f), up = random_vec(rng, n, 2.0f);
  const Vec dh = random_vec(rng, n);
  Vec h(n), dgate(n), dup(n);
  be->swiglu_forward(h.data(), gate.data(), up.data(), n);
  DVec want(n), want_dg(n), want_du(n);
  for (i64 i = 0; i < n; ++i) {
    const double g = gate[i], s = 1.0 / (1.0 + std::exp(-g));
    want[i] = ref_silu(g) * up[i];
    want_dg[i] = dh[i] * up[i] * s * (1.0 + g * (1.0 - s));
    want_du[i] = dh[i] * ref_silu(g);
  }
  expect_close(h, want, 1e-6, "swiglu forward");
  be->swiglu_backward(dgate.data(), dup.data(), dh.data(), gate.data(), up.data(), n);
  expect_close(dgate, want_dg, 1e-6, "swiglu dgate");
  expect_close(dup, want_du, 1e-6, "swiglu dup");

  // Finite differences of sum(h * dh): elementwise, so one perturbation of all inputs at
  // once measures every partial derivative.
  DVec fd_g(n), fd_u(n);
  const double eps = 1e-5;
  for (i64 i = 0; i < n; ++i) {
    const double g = gate[i], u = up[i];
    fd_g[i] = dh[i] * u * (ref_silu(g + eps) - ref_silu(g - eps)) / (2 * eps);
    fd_u[i] = dh[i] * (ref_silu(g) * (u + eps) - ref_silu(g) * (u - eps)) / (2 * eps);
  }
  expect_close(dgate, fd_g, 1e-4, "swiglu dgate vs FD");
  expect_close(dup, fd_u, 1e-4, "swiglu dup vs FD");
}

}  // namespace
}  // namespace anvil::test
