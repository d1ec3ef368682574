// CPU backend: after reserve() with the run's limits, no op allocates. Allocations are
// counted by replacing the global operator new in this test binary (OpenBLAS and OpenMP
// use malloc directly and are not counted: their pools are theirs to manage).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "ops_test_util.h"

namespace {
std::atomic<long> g_news{0};
}  // namespace

void* operator new(std::size_t n) {
  g_news.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace anvil::test {
namespace {

TEST(OpsReserve, NoAllocationAfterReserve) {
  std::mt19937 rng(70);
  const i64 B = 2, T = 37, H = 4, Hkv = 2, D = 18, C = 72, F = 96, V = 300, r = 8;
  const i64 N = B * T;
  backend::BackendLimits limits;
  limits.max_tokens = N;
  limits.max_seq = T;
  limits.max_heads = H;
  limits.max_head_dim = D;
  limits.max_width = F;
  limits.vocab = V;
  limits.hidden = C;

  Vec w_up = random_vec(rng, F * C), w_norm = random_vec(rng, C), head = random_vec(rng, V * C);
  WeightBuf up_bf(w_up, {F, C}, DType::dtype_bf16, 1), norm_bf(w_norm, {C}, DType::dtype_bf16, 1),
      head_bf(head, {V, C}, DType::dtype_bf16, 1);
  Vec x = random_vec(rng, N * C), xn(N * C), y(N * F), dy = random_vec(rng, N * F), dx(N * C),
      rstd(N);
  Vec q = random_vec(rng, N * H * D), k = random_vec(rng, N * Hkv * D),
      v = random_vec(rng, N * Hkv * D);
  Vec att(N * H * D), lse(B * H * T), dq(N * H * D), dk(N * Hkv * D), dv(N * Hkv * D);
  Vec a = random_vec(rng, r * F), b = random_vec(rng, C * r), xa(N * r), da(r * F), db(C * r);
  Vec xf = random_vec(rng, N * F), dxf(N * F), dtable(V * C, 0.0f);
  Vec m(F * C, 0.0f), vv(F * C, 0.0f), inv_freq(D / 2, 0.01f);
  std::vector<std::int32_t> ids(N), pos(N), seg(N), targets(N);
  for (i64 i = 0; i < N; ++i) {
    ids[i] = static_cast<std::int32_t>(i % V);
    pos[i] = static_cast<std::int32_t>(i % T);
    seg[i] = static_cast<std::int32_t>(i / 10);
    targets[i] = i % 7 == 0 ? -100 : static_cast<std::int32_t>((i * 13) % V);
  }
  backend::LoraDropout drop;
  drop.p = 0.25f;
  drop.stream = philox_stream(1, 2, 3, 4);
  drop.row_stride = F;
  const backend::AttentionShape shape{B, T, H, Hkv, D};

  // Two experts side by side, each thread with the worker reserve() sized: gate and up the
  // bf16 (F, C) weight with an adapter, down (C, F) without; the rows split 30 / 44.
  Vec w_down = random_vec(rng, C * F), ar = random_vec(rng, r * C), br = random_vec(rng, F * r);
  Vec eg(N * F), eu(N * F), eh(N * F), ey(N * C), xag(N * r), xau(N * r), edh(N * F), edg(N * F), edu(N * F);
  Vec dar(r * C), dbr(F * r);
  const backend::ExpertLinear gate_up{up_bf.view, ar.data(), br.data(), dar.data(), dbr.data(), r, 2.0f};
  const backend::ExpertLinear down{f32_view(w_down, {C, F})};
  const backend::MoeExpert experts[2] = {{gate_up, gate_up, down, 0, 30}, {gate_up, gate_up, down, 30, N - 30}};
  const backend::MoeExpertActs acts{C, F, r, x.data(), eg.data(), eu.data(), eh.data(), ey.data(), xag.data(), xau.data(), nullptr};
  const backend::MoeExpertGrads grads{x.data(), edh.data(), edg.data(), edu.data(), dx.data()};
  backend::cpu_threads_set(2);

  auto be = cpu();
  be->reserve(limits);
  const long before = g_news.load();
  be->linear_forward(y.data(), x.data(), up_bf.view, nullptr, N, 0.0f);
  be->linear_backward_input(dx.data(), dy.data(), up_bf.view, N, 0.0f);
  be->embedding_forward(x.data(), ids.data(), head_bf.view, N);
  be->embedding_backward(dtable.data(), x.data(), ids.data(), N, V, C);
  be->rmsnorm_forward(xn.data(), rstd.data(), x.data(), norm_bf.view, N, C, 1e-5f);
  be->rmsnorm_backward(dx.data(), nullptr, xn.data(), x.data(), norm_bf.view, rstd.data(), N, C,
                       1.0f);
  be->rope_forward(q.data(), pos.data(), inv_freq.data(), N, H, D);
  be->rope_backward(q.data(), pos.data(), inv_freq.data(), N, H, D);
  be->attention_forward(att.data(), lse.data(), q.data(), k.data(), v.data(), seg.data(), shape);
  be->attention_backward(dq.data(), dk.data(), dv.data(), att.data(), att.data(), lse.data(),
                         q.data(), k.data(), v.data(), seg.data(), shape);
  be->swiglu_forward(dxf.data(), xf.data(), dy.data(), N * F);
  be->swiglu_backward(dxf.data(), dy.data(), xf.data(), xf.data(), xf.data(), N * F);
  be->lm_head_cross_entropy(dx.data(), x.data(), head_bf.view, targets.data(), N, 0.1f);
  be->lora_forward(x.data(), xa.data(), xf.data(), a.data(), b.data(), N, F, C, r, 2.0f, drop);
  be->lora_backward(dxf.data(), da.data(), db.data(), x.data(), xf.data(), xa.data(), a.data(),
                    b.data(), N, F, C, r, 2.0f, drop);
  be->moe_experts_forward(experts, 2, acts);
  be->moe_experts_backward(experts, 2, acts, grads);
  be->sum_squares(m.data(), F * C);
  be->scale(da.data(), 0.5f, r * F);
  backend::AdamwArgs args;
  args.lr = 1e-3f;
  be->adamw_update(w_up.data(), w_up.data(), m.data(), vv.data(), F * C, args);
  EXPECT_EQ(g_news.load() - before, 0) << "ops allocated after reserve()";
}

}  // namespace
}  // namespace anvil::test
