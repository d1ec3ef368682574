// The tensor-parallel layers of model/tp_layers.h over the whole world as one TP group,
// with rank-filled inputs against closed-form results (Megatron's style of test): rank t
// fills its slice with t + 1, so every sum over the group is a multiple of
// T = 1 + 2 + ... + tp = tp (tp + 1) / 2.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "comm/comm.h"
#include "model/tp_layers.h"

namespace anvil {
namespace {

using model::LinearShard;

struct Group {
  std::unique_ptr<comm::Comm> world = comm::mpi_comm_world();
  std::unique_ptr<backend::Backend> be = backend::make_cpu_backend();
  int t() const { return world->rank(); }
  int tp() const { return world->size(); }
  float fill() const { return static_cast<float>(t() + 1); }
  double sum_fill() const { return tp() * (tp() + 1) / 2.0; }
};

TensorView f32_view(std::vector<float>& v, std::int64_t rows, std::int64_t cols) {
  return TensorView{v.data(), DType::dtype_f32, Shape{rows, cols}};
}

void expect_all(const std::vector<float>& v, double want, const char* what) {
  for (std::size_t i = 0; i < v.size(); ++i)
    ASSERT_NEAR(v[i], want, 1e-5 * std::abs(want)) << what << "[" << i << "]";
}

// Column-parallel Y_t = X·W_tᵀ + s·X·Aᵀ·B_tᵀ with X = 1, A = 1 replicated and W_t = B_t = t+1.
TEST(TpLayers, ColumnParallelForwardAndBackward) {
  Group g;
  const std::int64_t n = 3, in = 8, out_t = 5, r = 2;
  const float s = 0.5f;
  std::vector<float> x(n * in, 1.0f), w(out_t * in, g.fill()), a(r * in, 1.0f), b(out_t * r, g.fill());
  std::vector<float> da(r * in, 0.0f), db(out_t * r, 0.0f);
  LinearShard l{f32_view(w, out_t, in), nullptr, a.data(), b.data(), da.data(), db.data(), r, s};
  std::vector<float> y(n * out_t), xa(n * r);
  model::linear_forward_local(*g.be, l, y.data(), x.data(), xa.data(), n, 0.0f, {});
  expect_all(xa, in, "xa");
  expect_all(y, g.fill() * in + s * g.fill() * r * in, "y_t");  // no collective forward

  std::vector<float> dy(n * out_t, 1.0f), dx(n * in);
  model::linear_backward_local(*g.be, l, dx.data(), dy.data(), x.data(), xa.data(), n, 0.0f, {});
  expect_all(db, s * n * in, "dB_t (complete)");
  // dX and dA are partial: the group's sums are the single-rank gradients.
  model::tp_allreduce(g.world.get(), dx.data(), n * in);
  model::tp_allreduce(g.world.get(), da.data(), r * in);
  expect_all(dx, out_t * (1.0 + s * r) * g.sum_fill(), "dX");
  expect_all(da, s * out_t * n * g.sum_fill(), "dA");
}

// Row-parallel Y = Σ_t X_t·W_tᵀ + s·X_t·A_tᵀ·Bᵀ with X_t = t+1, W = A = B = 1, on top of a
// residual that must be counted once.
TEST(TpLayers, RowParallelForwardAndBackward) {
  Group g;
  const std::int64_t n = 4, in_t = 6, out = 5, r = 3;
  const float s = 2.0f;
  std::vector<float> x(n * in_t, g.fill()), w(out * in_t, 1.0f), a(r * in_t, 1.0f), b(out * r, 1.0f);
  std::vector<float> da(r * in_t, 0.0f), db(out * r, 0.0f);
  LinearShard l{f32_view(w, out, in_t), nullptr, a.data(), b.data(), da.data(), db.data(), r, s};
  std::vector<float> y(n * out, 10.0f), xa(n * r);  // residual 10
  model::row_parallel_forward(*g.be, g.world.get(), l, y.data(), x.data(), xa.data(), n, 1.0f, {});
  expect_all(y, 10.0 + in_t * g.sum_fill() * (1.0 + s * r), "y");
  expect_all(xa, g.fill() * in_t, "xa_t (partial)");

  std::vector<float> dy(n * out, 1.0f), dx(n * in_t);
  model::linear_backward_local(*g.be, l, dx.data(), dy.data(), x.data(), xa.data(), n, 0.0f, {});
  expect_all(dx, out * (1.0 + s * r), "dX_t (complete)");
  expect_all(da, s * out * n * g.fill(), "dA_t (complete)");
  model::tp_allreduce(g.world.get(), db.data(), out * r);
  expect_all(db, s * n * in_t * g.sum_fill(), "dB (partial, summed)");
}

// Embedding rows hold their global id; rank t holds rows [t V_t, (t+1) V_t).
TEST(TpLayers, VocabParallelEmbedding) {
  Group g;
  const std::int64_t v_t = 7, C = 4, V = v_t * g.tp();
  std::vector<float> table(v_t * C);
  for (std::int64_t i = 0; i < v_t; ++i)
    for (std::int64_t c = 0; c < C; ++c) table[i * C + c] = static_cast<float>(g.t() * v_t + i + c * 1000);
  std::vector<std::int32_t> ids;
  for (std::int64_t i = 0; i < V; ++i) ids.push_back(static_cast<std::int32_t>((i * 5 + 3) % V));
  const auto n = static_cast<std::int64_t>(ids.size());
  std::vector<float> out(n * C, -1.0f);
  model::vocab_parallel_embedding(*g.be, g.world.get(), out.data(), ids.data(), f32_view(table, v_t, C), n,
                                  {g.t() * v_t, V});
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t c = 0; c < C; ++c) ASSERT_EQ(out[i * C + c], ids[i] + c * 1000.0f) << i;
}

// The sharded LM head + cross-entropy equals the single-rank one on the whole head, which
// every rank also holds here; some targets ignored, some on every shard.
TEST(TpLayers, VocabParallelCrossEntropyMatchesTheWholeHead) {
  Group g;
  const std::int64_t v_t = 11, C = 6, V = v_t * g.tp(), n = 70;  // n > one 64-row block
  std::mt19937 rng(9);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> head(V * C), hidden(n * C);
  for (auto& v : head) v = nd(rng);
  for (auto& v : hidden) v = nd(rng);
  std::vector<std::int32_t> targets(n);
  for (std::int64_t i = 0; i < n; ++i) targets[i] = i % 9 == 4 ? -100 : static_cast<std::int32_t>((i * 7) % V);
  std::vector<float> want(n * C), got(n * C);
  const double want_loss = g.be->lm_head_cross_entropy(want.data(), hidden.data(), f32_view(head, V, C),
                                                       targets.data(), n, 0.25f);
  std::vector<float> shard(head.begin() + g.t() * v_t * C, head.begin() + (g.t() + 1) * v_t * C);
  const double got_loss = model::vocab_parallel_cross_entropy(
      *g.be, g.world.get(), got.data(), hidden.data(), f32_view(shard, v_t, C), targets.data(), n, 0.25f,
      {g.t() * v_t, V});
  EXPECT_NEAR(got_loss, want_loss, 1e-6 * want_loss);
  for (std::int64_t i = 0; i < n * C; ++i) ASSERT_NEAR(got[i], want[i], 1e-6) << i;
  // Without gradients (evaluation) the loss is the same.
  EXPECT_NEAR(model::vocab_parallel_cross_entropy(*g.be, g.world.get(), nullptr, hidden.data(),
                                                  f32_view(shard, v_t, C), targets.data(), n, 1.0f,
                                                  {g.t() * v_t, V}),
              want_loss, 1e-6 * want_loss);
}

}  // namespace
}  // namespace anvil
