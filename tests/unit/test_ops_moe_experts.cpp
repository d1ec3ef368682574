// CPU backend: a sparse layer's experts run side by side on two threads (each with its
// own scratch and single-threaded BLAS) against the same experts one at a time through
// Backend's default loop: the same values within 1e-5 (the BLAS thread count may round
// differently), and bit for bit the same from one run to the next. The experts mix
// adapted and unadapted linears, an empty expert and a bf16 weight at a misaligned
// address (converted in the worker's scratch).
#include <gtest/gtest.h>

#include <random>

#include "backend/backend.h"
#include "ops_test_util.h"

namespace anvil::test {
namespace {

using backend::ExpertLinear;
using backend::MoeExpert;

constexpr i64 kC = 24, kFe = 20, kR = 4;
const std::vector<i64> kRows = {7, 0, 13, 3, 9, 1};

// The experts' weights and adapters, and the layer's buffers.
struct Layer {
  std::vector<WeightBuf> weights;
  Vec params, grads;
  std::vector<MoeExpert> experts;
  i64 rows = 0;
  Vec xs, gate, up, h, y, xa_gate, xa_down, dy, dh, dgate, dup, dxs;

  explicit Layer(std::mt19937& rng) {
    for (const i64 n : kRows) rows += n;
    const auto per_expert = static_cast<std::size_t>(2 * (kR * kC + kFe * kR));  // gate's and down's adapters
    params = random_vec(rng, static_cast<i64>(per_expert * kRows.size()), 0.5f);
    grads = random_vec(rng, static_cast<i64>(params.size()), 0.5f);  // accumulated into
    weights.reserve(3 * kRows.size());
    i64 row0 = 0;
    for (std::size_t e = 0; e < kRows.size(); ++e) {
      auto weight = [&](i64 out, i64 in, bool bf16) {
        Vec w = random_vec(rng, out * in, 0.3f);
        if (bf16) round_to_bf16(w);
        weights.emplace_back(w, Shape{out, in}, bf16 ? DType::dtype_bf16 : DType::dtype_f32, bf16 ? 1 : 0);
        return weights.back().view;
      };
      std::size_t at = e * per_expert;
      auto adapted = [&](TensorView w) {
        const i64 out = w.shape[0], in = w.shape[1];
        ExpertLinear l{w, params.data() + at, params.data() + at + kR * in, grads.data() + at,
                       grads.data() + at + kR * in, kR, 2.0f};
        at += static_cast<std::size_t>(kR * (in + out));
        return l;
      };
      MoeExpert x;
      x.gate = adapted(weight(kFe, kC, false));
      x.up = ExpertLinear{weight(kFe, kC, false)};
      x.down = adapted(weight(kC, kFe, e == 2));
      x.row0 = row0;
      x.rows = kRows[e];
      row0 += kRows[e];
      experts.push_back(x);
    }
    xs = random_vec(rng, rows * kC);
    dy = random_vec(rng, rows * kC);
    for (Vec* v : {&gate, &up, &h, &dh, &dgate, &dup}) v->assign(static_cast<std::size_t>(rows * kFe), 0.0f);
    for (Vec* v : {&y, &dxs}) v->assign(static_cast<std::size_t>(rows * kC), 0.0f);
    for (Vec* v : {&xa_gate, &xa_down}) v->assign(static_cast<std::size_t>(rows * kR), 0.0f);
  }

  backend::MoeExpertActs acts() {
    return {.c = kC, .fe = kFe, .r = kR, .xs = xs.data(), .gate = gate.data(), .up = up.data(), .h = h.data(),
            .y = y.data(), .xa_gate = xa_gate.data(), .xa_up = nullptr, .xa_down = xa_down.data()};
  }
  backend::MoeExpertGrads grads_bufs() {
    return {.dy = dy.data(), .dh = dh.data(), .dgate = dgate.data(), .dup = dup.data(), .dxs = dxs.data()};
  }
  // Forward then backward: side by side through the CPU backend's override, or one at a
  // time through Backend's default loop.
  void run(backend::Backend& be, bool side_by_side) {
    const auto n = static_cast<i64>(experts.size());
    if (side_by_side) {
      be.moe_experts_forward(experts.data(), n, acts());
      be.moe_experts_backward(experts.data(), n, acts(), grads_bufs());
    } else {
      be.Backend::moe_experts_forward(experts.data(), n, acts());
      be.Backend::moe_experts_backward(experts.data(), n, acts(), grads_bufs());
    }
  }
  std::vector<const Vec*> outputs() const { return {&gate, &up, &h, &y, &xa_gate, &xa_down, &dxs, &grads}; }
};

TEST(CpuMoeExperts, SideBySideMatchesOneAtATimeAndRepeatsBitForBit) {
  backend::cpu_threads_set(2);
  std::mt19937 rng_a(7), rng_b(7), rng_c(7);
  Layer one(rng_a), side(rng_b), again(rng_c);
  auto be = cpu();
  one.run(*be, false);
  side.run(*be, true);
  again.run(*be, true);
  const char* names[] = {"gate", "up", "h", "y", "xa_gate", "xa_down", "dxs", "adapter grads"};
  const std::vector<const Vec*> ref = one.outputs(), got = side.outputs(), rerun = again.outputs();
  for (std::size_t i = 0; i < ref.size(); ++i) {
    expect_close(*got[i], to_double(*ref[i]), 1e-5, names[i]);
    EXPECT_EQ(*got[i], *rerun[i]) << names[i] << " differs between two side-by-side runs";
  }
}

}  // namespace
}  // namespace anvil::test
