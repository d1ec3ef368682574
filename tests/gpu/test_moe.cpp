// The mixture-of-experts kernels (kernels/moe.cu) against the CPU backend's host loops
// (backend/moe_route.h), on odd sizes: 37 tokens, 6 experts, top 2, width 96, router
// logits with ties, an expert no token chooses; and a sort over several shared-memory chunks.
// The kernels keep the host loops' order of arithmetic, so every result is compared bit for
// bit, except the router probabilities and weights on a real GPU, whose expf may round
// differently (a few ulps; the emulation tier uses the host's expf and is held to exact).
// Every op after the routing is fed the CPU's route, so each is checked on its own.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/moe_route.h"
#include "gpu_dev.h"
#include "gpu_moe_route.h"
#include "gpu_test_util.h"
#include "moe.cuh"

namespace anvil {
namespace {

using i64 = std::int64_t;
using test::Dev;

using test::DevRoute;
using test::HostRoute;

// Router logits (n, E) with the cases the routing must get right: rows of exact ties (all
// experts, the best two, the second and third), and expert `unused` far below every other.
std::vector<float> router_logits(i64 n, i64 E, i64 unused) {
  std::vector<float> x = test::gpu_normal(n * E);
  auto at = [&](i64 t, i64 e) -> float& { return x[static_cast<std::size_t>(t * E + e)]; };
  for (const i64 t : {3, 5, 8})
    for (i64 e = 0; e < E; ++e) at(t, e) = t == 3 ? 0.25f : -1.0f;  // row 3 all tied: experts 0, 1
  at(5, 1) = at(5, 4) = 3.0f;  // the best two tied
  at(8, 2) = 2.0f;             // the second place tied
  at(8, 0) = at(8, 3) = 1.5f;
  if (unused >= 0)
    for (i64 t = 0; t < n; ++t) at(t, unused) = -30.0f;
  return x;
}

// Probabilities on a GPU: within a few ulps (expf); under emulation: the same bits.
void expect_probs(const char* what, const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
#ifdef ANVIL_CUDA_EMU
  EXPECT_EQ(got, want) << what;
#else
  for (std::size_t i = 0; i < want.size(); ++i)
    ASSERT_NEAR(got[i], want[i], 8.0f * 1.2e-7f * std::fabs(want[i]) + 1e-30f) << what << " [" << i << "]";
#endif
}

void check_route(i64 n, i64 E, i64 k, bool norm, i64 unused) {
  const std::vector<float> logits = router_logits(n, E, unused);
  HostRoute want(n, E, k);
  backend::moe_route(logits.data(), n, E, k, norm, want.view());
  if (unused >= 0) {
    ASSERT_EQ(want.offsets[unused], want.offsets[unused + 1]) << "the unused expert has rows";
  }

  Dev<float> d_logits(logits);
  DevRoute got(want);
  got.poison();
  kernels::moe_route(d_logits.get(), n, static_cast<int>(E), static_cast<int>(k), norm, got.view(), nullptr);
  expect_probs("probs", got.probs.download(), want.probs);
  expect_probs("weight", got.weight.download(), want.weight);
  EXPECT_EQ(got.expert.download(), want.expert);
  EXPECT_EQ(got.row.download(), want.row);
  EXPECT_EQ(got.token.download(), want.token);
  EXPECT_EQ(got.offsets.download(), want.offsets);
}

TEST(GpuMoe, RouteEqualsHostWithTiesAndAnEmptyExpert) {
  ANVIL_REQUIRE_GPU();
  check_route(37, 6, 2, true, 5);
  check_route(37, 6, 2, false, 5);
  check_route(37, 6, 1, true, -1);
}

TEST(GpuMoe, SortOverSeveralChunksIsStable) {
  ANVIL_REQUIRE_GPU();
  check_route(3001, 7, 3, true, 2);  // 9003 choices: five chunks of the sort
}

// A CPU routing of the tied logits, its device copy, and random rows of width c.
struct RowMoves {
  static constexpr i64 n = 37, E = 6, k = 2, c = 96;
  HostRoute host{n, E, k};
  RowMoves() { backend::moe_route(router_logits(n, E, 5).data(), n, E, k, true, host.view()); }
};

TEST(GpuMoe, GatherCombineScatterEqualHost) {
  ANVIL_REQUIRE_GPU();
  RowMoves m;
  const i64 n = m.n, k = m.k, c = m.c, R = n * k;
  const DevRoute route(m.host);
  const std::vector<float> x = test::gpu_normal(n * c), ye = test::gpu_normal(R * c), dy = test::gpu_normal(n * c);

  std::vector<float> xs(static_cast<std::size_t>(R * c)), y(static_cast<std::size_t>(n * c));
  std::vector<float> dweight(static_cast<std::size_t>(R)), d_ye(xs.size()), dx(y.size());
  backend::moe_gather(xs.data(), x.data(), m.host.view(), n, k, c);
  backend::moe_combine(y.data(), ye.data(), m.host.view(), n, k, c);
  backend::moe_combine_backward(dweight.data(), d_ye.data(), dy.data(), ye.data(), m.host.view(), n, k, c);
  backend::moe_scatter(dx.data(), ye.data(), m.host.view(), n, k, c);

  Dev<float> d_x(x), d_ye_in(ye), d_dy(dy), g_xs(xs), g_y(y), g_dw(dweight), g_dye(d_ye), g_dx(dx);
  for (auto* d : {&g_xs, &g_y, &g_dw, &g_dye, &g_dx}) d->poison();
  const int K = static_cast<int>(k);
  kernels::moe_gather(g_xs.get(), d_x.get(), route.view(), n, K, c, nullptr);
  kernels::moe_combine(g_y.get(), d_ye_in.get(), route.view(), n, K, c, nullptr);
  kernels::moe_combine_backward(g_dw.get(), g_dye.get(), d_dy.get(), d_ye_in.get(), route.view(), n, K, c, nullptr);
  kernels::moe_scatter(g_dx.get(), d_ye_in.get(), route.view(), n, K, c, nullptr);
  EXPECT_EQ(g_xs.download(), xs);
  EXPECT_EQ(g_y.download(), y);
  EXPECT_EQ(g_dw.download(), dweight);
  EXPECT_EQ(g_dye.download(), d_ye);
  EXPECT_EQ(g_dx.download(), dx);
}

TEST(GpuMoe, RouterBackwardAndAuxStatisticsEqualHost) {
  ANVIL_REQUIRE_GPU();
  RowMoves m;
  const i64 n = m.n, E = m.E, k = m.k;
  const DevRoute route(m.host);
  const std::vector<float> dweight = test::gpu_normal(n * k);
  std::vector<double> aux_grad(static_cast<std::size_t>(E));
  for (i64 e = 0; e < E; ++e) aux_grad[static_cast<std::size_t>(e)] = 0.01 * static_cast<double>(e + 1) / 3.0;
  Dev<float> d_dweight(dweight);
  Dev<double> d_aux(aux_grad);
  for (const bool norm : {true, false})
    for (const bool aux : {true, false}) {
      std::vector<float> want(static_cast<std::size_t>(n * E));
      backend::moe_router_backward(want.data(), dweight.data(), m.host.view(), n, E, k, norm,
                                   aux ? aux_grad.data() : nullptr);
      Dev<float> got(want);
      got.poison();
      kernels::moe_router_backward(got.get(), d_dweight.get(), route.view(), n, static_cast<int>(E),
                                   static_cast<int>(k), norm, aux ? d_aux.get() : nullptr, nullptr);
      EXPECT_EQ(got.download(), want) << "norm_topk " << norm << ", aux " << aux;
    }

  // Accumulated onto earlier layers' statistics, as the model sums them.
  std::vector<double> count(static_cast<std::size_t>(E), 3.0), prob_sum(static_cast<std::size_t>(E), 0.125);
  Dev<double> d_count(count), d_prob_sum(prob_sum);
  backend::moe_aux_accumulate(count.data(), prob_sum.data(), m.host.view(), n, E, k);
  kernels::moe_aux_accumulate(d_count.get(), d_prob_sum.get(), route.view(), n, static_cast<int>(E),
                              static_cast<int>(k), nullptr);
  EXPECT_EQ(d_count.download(), count);
  EXPECT_EQ(d_prob_sum.download(), prob_sum);
}

TEST(GpuMoe, ResidualAddEqualsHost) {
  ANVIL_REQUIRE_GPU();
  const i64 n = 37 * 96 + 5;
  const std::vector<float> x = test::gpu_normal(n), y0 = test::gpu_normal(n);
  std::vector<float> want = y0;
  backend::make_cpu_backend()->moe_residual_add(want.data(), x.data(), n);
  Dev<float> d_x(x), d_y(y0);
  kernels::moe_residual_add(d_y.get(), d_x.get(), n, nullptr);
  EXPECT_EQ(d_y.download(), want);
}

}  // namespace
}  // namespace anvil
