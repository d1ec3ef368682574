// CPU backend: the LM head fused with cross-entropy against an fp64 reference and central
// differences: ignored targets, row blocks ending mid-batch, f32 and bf16 heads, large
// logits.
//
// Tolerances: the loss sum 1e-5 relative (fp32 logits from 72-long dot products);
// dhidden 1e-5 (expect_close, relative with a floor at the mean magnitude) against the
// fp64 reference, 1e-4 against finite differences; ignored rows exactly zero.
#include <gtest/gtest.h>

#include <cmath>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "ops_test_util.h"

namespace anvil::test {
namespace {

// Sum over non-ignored rows of lse(h W^T) - (h W^T)[target]; and its gradient times
// grad_scale when dh is not null.
double ref_cross_entropy(const DVec& h, const DVec& w, const std::vector<std::int32_t>& t, i64 n,
                         i64 V, i64 C, double grad_scale, DVec* dh) {
  double total = 0.0;
  if (dh) dh->assign(h.size(), 0.0);
  DVec logit(static_cast<std::size_t>(V));
  for (i64 i = 0; i < n; ++i) {
    if (t[i] == -100) continue;
    double mx = -INFINITY;
    for (i64 v = 0; v < V; ++v) {
      double s = 0.0;
      for (i64 c = 0; c < C; ++c) s += h[i * C + c] * w[v * C + c];
      logit[v] = s;
      mx = std::max(mx, s);
    }
    double sum = 0.0;
    for (i64 v = 0; v < V; ++v) sum += std::exp(logit[v] - mx);
    const double lse = mx + std::log(sum);
    total += lse - logit[t[i]];
    if (!dh) continue;
    for (i64 v = 0; v < V; ++v) {
      const double d = (std::exp(logit[v] - lse) - (v == t[i] ? 1.0 : 0.0)) * grad_scale;
      for (i64 c = 0; c < C; ++c) (*dh)[i * C + c] += d * w[v * C + c];
    }
  }
  return total;
}

struct LossCase {
  i64 n, V, C;
  Vec hidden, w;
  std::vector<std::int32_t> targets;
  LossCase(i64 n_, i64 V_, i64 C_, std::uint32_t seed, float hidden_scale = 1.0f)
      : n(n_), V(V_), C(C_) {
    std::mt19937 rng(seed);
    hidden = random_vec(rng, n * C, hidden_scale);
    w = random_vec(rng, V * C, 0.5f);
    round_to_bf16(w);  // a bf16 head holds the same numbers
    std::uniform_int_distribution<std::int32_t> pick(0, static_cast<std::int32_t>(V - 1));
    targets.resize(static_cast<std::size_t>(n));
    for (auto& t : targets) t = pick(rng);
  }
};

void check_loss(const LossCase& c, const TensorView& head, float grad_scale,
                const std::string& what) {
  auto be = cpu();
  DVec want_dh;
  const double want = ref_cross_entropy(to_double(c.hidden), to_double(c.w), c.targets, c.n, c.V,
                                        c.C, grad_scale, &want_dh);
  Vec dh(c.hidden.size(), NAN);
  const double got = be->lm_head_cross_entropy(dh.data(), c.hidden.data(), head, c.targets.data(),
                                               c.n, grad_scale);
  EXPECT_NEAR(got, want, 1e-5 * std::fabs(want)) << what << " loss";
  expect_close(dh, want_dh, 1e-5, what + " dhidden");
  for (i64 i = 0; i < c.n; ++i) {
    if (c.targets[i] != -100) continue;
    for (i64 j = 0; j < c.C; ++j) ASSERT_EQ(dh[i * c.C + j], 0.0f) << what << " ignored row " << i;
  }
  // Evaluation (no gradient) gives the same sum.
  const double eval =
      be->lm_head_cross_entropy(nullptr, c.hidden.data(), head, c.targets.data(), c.n, 1.0f);
  EXPECT_EQ(eval, got) << what;
}

TEST(OpsLoss, SmallAgainstReferenceAndFiniteDifferences) {
  LossCase c(5, 11, 8, 40);
  c.targets[2] = -100;
  check_loss(c, f32_view(c.w, {c.V, c.C}), 0.37f, "small");

  auto be = cpu();
  Vec dh(c.hidden.size());
  be->lm_head_cross_entropy(dh.data(), c.hidden.data(), f32_view(c.w, {c.V, c.C}), c.targets.data(),
                            c.n, 0.37f);
  const DVec wd = to_double(c.w);
  auto loss = [&](const DVec& h) {
    return 0.37 * ref_cross_entropy(h, wd, c.targets, c.n, c.V, c.C, 1.0, nullptr);
  };
  expect_close(dh, finite_diff(loss, to_double(c.hidden)), 1e-4, "dhidden vs FD");
}

// 150 rows: blocks of kLossRows end mid-batch; ignored targets on both sides of a
// boundary and a whole ignored run.
TEST(OpsLoss, BlocksIgnoredTargetsAndHeads) {
  ASSERT_LT(2 * backend::kLossRows, 150);
  LossCase c(150, 600, 72, 41);
  for (i64 i :
       {i64{0}, backend::kLossRows - 1, backend::kLossRows, i64{100}, i64{101}, i64{102}, i64{149}})
    c.targets[i] = -100;
  check_loss(c, f32_view(c.w, {c.V, c.C}), 1.0f / 150.0f, "f32 head");
  WeightBuf bf(c.w, {c.V, c.C}, DType::dtype_bf16, 1);
  check_loss(c, bf.view, 1.0f / 150.0f, "misaligned bf16 head");
}

TEST(OpsLoss, LargeLogitsStayFinite) {
  LossCase c(20, 50, 16, 42, 40.0f);  // logits in the hundreds
  check_loss(c, f32_view(c.w, {c.V, c.C}), 1.0f, "large logits");
}

TEST(OpsLoss, AllIgnoredAndBadTargets) {
  LossCase c(3, 7, 4, 43);
  auto be = cpu();
  const TensorView head = f32_view(c.w, {c.V, c.C});
  std::vector<std::int32_t> t = {-100, -100, -100};
  Vec dh(c.hidden.size(), NAN);
  EXPECT_EQ(be->lm_head_cross_entropy(dh.data(), c.hidden.data(), head, t.data(), 3, 1.0f), 0.0);
  for (float x : dh) EXPECT_EQ(x, 0.0f);
  t = {0, 7, 1};
  EXPECT_THROW(be->lm_head_cross_entropy(dh.data(), c.hidden.data(), head, t.data(), 3, 1.0f),
               Error);
  t = {0, -1, 1};
  EXPECT_THROW(be->lm_head_cross_entropy(nullptr, c.hidden.data(), head, t.data(), 3, 1.0f), Error);
}

}  // namespace
}  // namespace anvil::test
