// Llama 4's kernels (kernels/llama4.cu) against the CPU backend's host loops
// (backend/llama4_ops.h), on odd sizes: 37 tokens, 6 experts, top 2, width 95, head_dim 22
// (an odd half) and 64, positions across several temperature steps. The kernels keep the
// host loops' order of arithmetic, so every result is compared bit for bit (as bits: a -0
// where the host makes +0 fails), except the router scores and the temperature on a real
// GPU, whose expf and log1pf may round differently from glibc's (an ulp or two; the
// emulation tier uses the host's and is held to exact). Every op after the routing is fed
// the CPU's route and scores, so each is checked on its own.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "backend/llama4_ops.h"
#include "backend/moe_route.h"
#include "gpu_dev.h"
#include "gpu_moe_route.h"
#include "gpu_test_util.h"
#include "llama4.cuh"

namespace anvil {
namespace {

using i64 = std::int64_t;
using test::Dev;

std::vector<std::uint32_t> bits(const std::vector<float>& v) {
  std::vector<std::uint32_t> out(v.size());
  std::memcpy(out.data(), v.data(), sizeof(float) * v.size());
  return out;
}

// Bit for bit, or (a device function's rounding on a real GPU) within `ulps` of the host.
void expect_close(const char* what, const std::vector<float>& got, const std::vector<float>& want, float ulps) {
  ASSERT_EQ(got.size(), want.size());
#ifdef ANVIL_CUDA_EMU
  (void)ulps;
  EXPECT_EQ(bits(got), bits(want)) << what;
#else
  for (std::size_t i = 0; i < want.size(); ++i)
    ASSERT_NEAR(got[i], want[i], ulps * 1.2e-7f * std::fabs(want[i]) + 1e-30f) << what << " [" << i << "]";
#endif
}

// One routing of n tokens in host vectors, made by the CPU's moe_route and then Llama 4's
// sigmoid scores; and the same in device memory.
struct Route : test::HostRoute {
  static constexpr i64 n = 37, E = 6, k = 2;
  std::vector<float> logits;
  Route() : HostRoute(n, E, k), logits(test::gpu_normal(n * E, 2.0f)) {
    // Scores at the sigmoid's ends: 1 exactly (s (1 − s) = 0) and a tiny one.
    logits[static_cast<std::size_t>(4 * E + 1)] = 40.0f;
    for (i64 e = 0; e < E; ++e) logits[static_cast<std::size_t>(9 * E + e)] = -20.0f - static_cast<float>(e);
    backend::moe_route(logits.data(), n, E, k, false, view());
    backend::llama4_route_scores(logits.data(), view(), n, E, k);
  }
};

using test::DevRoute;

TEST(GpuLlama4, PairsSplitAndJoinEqualHost) {
  ANVIL_REQUIRE_GPU();
  for (const i64 D : {22, 64}) {
    const i64 rows = 37 * 3;  // (N, heads) rows of one head each
    const std::vector<float> x = test::gpu_normal(rows * D);
    std::vector<float> split(x.size()), join(x.size());
    backend::llama4_pairs_split(split.data(), x.data(), rows, D);
    backend::llama4_pairs_join(join.data(), x.data(), rows, D);
    Dev<float> d_x(x), d_split(split), d_join(join);
    d_split.poison();
    d_join.poison();
    kernels::llama4_pairs_split(d_split.get(), d_x.get(), rows, D, nullptr);
    kernels::llama4_pairs_join(d_join.get(), d_x.get(), rows, D, nullptr);
    EXPECT_EQ(bits(d_split.download()), bits(split)) << "split, head_dim " << D;
    EXPECT_EQ(bits(d_join.download()), bits(join)) << "join, head_dim " << D;
    // join undoes split
    Dev<float> back(x);
    back.poison();
    kernels::llama4_pairs_join(back.get(), d_split.get(), rows, D, nullptr);
    EXPECT_EQ(bits(back.download()), bits(x)) << "join(split(x)), head_dim " << D;
  }
}

TEST(GpuLlama4, TemperatureEqualsHost) {
  ANVIL_REQUIRE_GPU();
  const i64 n = 37, width = 45;
  // Positions within the first step, at and around step boundaries, and far out.
  std::vector<std::int32_t> pos(static_cast<std::size_t>(n));
  for (i64 t = 0; t < n; ++t) pos[static_cast<std::size_t>(t)] = static_cast<std::int32_t>(t * 997);
  pos[3] = 8190;
  pos[4] = 8191;
  pos[5] = 16383;
  pos[6] = 1000000;
  const Dev<std::int32_t> d_pos(pos);
  for (const float floor_scale : {8192.0f, 4.0f, 3.0f}) {
    const std::vector<float> x = test::gpu_normal(n * width);
    std::vector<float> want = x;
    backend::llama4_temperature(want.data(), pos.data(), n, width, floor_scale, 0.1f);
    Dev<float> got(x);
    kernels::llama4_temperature(got.get(), d_pos.get(), n, width, floor_scale, 0.1f, nullptr);
    expect_close("temperature", got.download(), want, 4.0f);
  }
}

TEST(GpuLlama4, RouteScoresEqualHost) {
  ANVIL_REQUIRE_GPU();
  Route h;
  ASSERT_EQ(h.weight[static_cast<std::size_t>(4 * Route::k)], 1.0f) << "the logit of 40 is not the best of token 4";
  DevRoute route(h);
  route.weight.poison();
  const Dev<float> d_logits(h.logits);
  kernels::llama4_route_scores(d_logits.get(), route.view(), Route::n, static_cast<int>(Route::E),
                               static_cast<int>(Route::k), nullptr);
  expect_close("scores", route.weight.download(), h.weight, 4.0f);
}

TEST(GpuLlama4, ScaleRowsAndScaleBackwardEqualHost) {
  ANVIL_REQUIRE_GPU();
  Route h;
  const DevRoute route(h);
  const i64 n = Route::n, k = Route::k, R = n * k, c = 95;
  const int K = static_cast<int>(k);
  const std::vector<float> xs = test::gpu_normal(R * c), x = test::gpu_normal(n * c), d_xs = test::gpu_normal(R * c);

  std::vector<float> scaled = xs;
  backend::llama4_scale_rows(scaled.data(), h.view(), n, k, c);
  Dev<float> g_scaled(xs);
  kernels::llama4_scale_rows(g_scaled.get(), route.view(), n, K, c, nullptr);
  EXPECT_EQ(bits(g_scaled.download()), bits(scaled));

  std::vector<float> dscore(static_cast<std::size_t>(R)), d_in = d_xs;
  backend::llama4_scale_backward(dscore.data(), d_in.data(), x.data(), h.view(), n, k, c);
  Dev<float> g_dscore(dscore), g_d(d_xs);
  const Dev<float> d_x(x);
  g_dscore.poison();
  kernels::llama4_scale_backward(g_dscore.get(), g_d.get(), d_x.get(), route.view(), n, K, c, nullptr);
  EXPECT_EQ(bits(g_dscore.download()), bits(dscore));
  EXPECT_EQ(bits(g_d.download()), bits(d_in));
}

TEST(GpuLlama4, RouterBackwardEqualsHost) {
  ANVIL_REQUIRE_GPU();
  Route h;
  const DevRoute route(h);
  const i64 n = Route::n, E = Route::E, k = Route::k;
  std::vector<float> dscore = test::gpu_normal(n * k);
  dscore[5] = -0.0f;  // 0 + (−0) is +0: the row is zeroed and added to, never assigned
  std::vector<float> want(static_cast<std::size_t>(n * E));
  backend::llama4_router_backward(want.data(), dscore.data(), h.view(), n, E, k);
  const Dev<float> d_dscore(dscore);
  Dev<float> got(want);
  got.poison();
  kernels::llama4_router_backward(got.get(), d_dscore.get(), route.view(), n, static_cast<int>(E),
                                  static_cast<int>(k), nullptr);
  EXPECT_EQ(bits(got.download()), bits(want));
}

}  // namespace
}  // namespace anvil
