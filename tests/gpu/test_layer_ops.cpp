// Layer ops on the GPU (LoRA, RMSNorm, RoPE, SwiGLU, embedding, decoding attention, bias)
// against the CPU backend on fresh random inputs. Tolerance is relative to noise: the GPU's
// error against an fp64 reference may be at most twice the CPU backend's (an fp32
// implementation of the same math), plus a few ulps of the result's magnitude. Philox and
// the dropout index run on the host too and are checked here without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <iostream>
#include <random>
#include <tuple>
#include <vector>

#include "backend/backend.h"
#include "core/dtype.h"
#include "core/philox.h"
#include "bias.cuh"
#include "cuda_check.cuh"
#include "decode.cuh"
#include "embedding.cuh"
#include "gpu_dev.h"
#include "gpu_test_util.h"
#include "lora.cuh"
#include "philox.cuh"
#include "rmsnorm.cuh"
#include "rope.cuh"
#include "swiglu.cuh"

namespace anvil {
namespace {

using i64 = std::int64_t;

std::mt19937_64& rng() { return test::gpu_rng(); }
std::vector<float> normal(i64 n, float stddev = 1.0f) { return test::gpu_normal(n, stddev); }

using test::Dev;

// Largest |got - ref|; a NaN counts as infinitely wrong.
double max_err(const std::vector<float>& got, const std::vector<double>& ref) {
  double e = 0.0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double d = std::fabs(static_cast<double>(got[i]) - ref[i]);
    e = std::isnan(d) ? INFINITY : std::max(e, d);
  }
  return e;
}

// `terms`: the magnitude of the terms the result is a sum of, where they cancel (the floor of
// a few ulps is of those, not of a result that is nearly zero); 0 = the result's own.
void expect_within_noise(const char* what, const std::vector<float>& gpu,
                         const std::vector<float>& cpu, const std::vector<double>& ref,
                         double terms = 0.0) {
  ASSERT_EQ(gpu.size(), ref.size());
  ASSERT_EQ(cpu.size(), ref.size());
  double scale = terms;
  for (double r : ref) scale = std::max(scale, std::fabs(r));
  const double eg = max_err(gpu, ref), ec = max_err(cpu, ref);
  const double tol = 2.0 * ec + 16.0 * FLT_EPSILON * scale + 1e-30;
  EXPECT_LE(eg, tol) << what << ": gpu error " << eg << ", cpu error " << ec << ", max |ref| "
                     << scale;
}

// ---- host-side: Philox and the dropout index (no GPU needed) -----------------------------

TEST(KernelPhilox, WordsEqualCore) {
  std::uniform_int_distribution<std::uint32_t> u32;
  for (int t = 0; t < 20000; ++t) {
    const PhiloxCounter c{u32(rng()), u32(rng()), u32(rng()), u32(rng())};
    const PhiloxKey k{u32(rng()), u32(rng())};
    const PhiloxCounter want = philox4x32_10(c, k);
    const kernels::PhiloxWords got = kernels::philox4x32_10(c[0], c[1], c[2], c[3], k.k0, k.k1);
    for (int j = 0; j < 4; ++j) ASSERT_EQ(got.w[j], want[j]) << "trial " << t << " word " << j;
  }
}

TEST(KernelPhilox, UniformEqualsCore) {
  std::uniform_int_distribution<std::uint64_t> u64;
  for (int t = 0; t < 20000; ++t) {
    const PhiloxStream s = philox_stream(u64(rng()), u64(rng()), static_cast<std::uint32_t>(t % 4000),
                                         static_cast<std::uint32_t>(t % 256));
    // Small, near 2^32 and huge indices: the block number's high word matters.
    const std::uint64_t index = t % 3 == 0 ? u64(rng()) % 1000
                                : t % 3 == 1 ? (std::uint64_t{1} << 34) - 2 + t % 5
                                             : u64(rng()) >> 2;
    ASSERT_EQ(kernels::philox_uniform(s.key.k0, s.key.k1, s.c2, s.c3, index),
              philox_uniform(s, index))
        << "index " << index;
  }
}

TEST(KernelPhilox, DropoutKeep4EqualsCore) {
  std::uniform_int_distribution<std::uint64_t> u64;
  std::uniform_int_distribution<i64> small(0, 5000);
  for (int t = 0; t < 5000; ++t) {
    const PhiloxStream s = philox_stream(u64(rng()), u64(rng()), 3, 7);
    kernels::LoraDropoutParams d;
    d.p = t % 4 == 0 ? 0.5f : std::uniform_real_distribution<float>(0.01f, 0.99f)(rng());
    d.k0 = s.key.k0, d.k1 = s.key.k1, d.c2 = s.c2, d.c3 = s.c3;
    d.row_offset = small(rng());
    d.col_offset = small(rng());  // any alignment: four neighbours may span two blocks
    d.row_stride = d.col_offset + 1 + small(rng());
    const i64 row = small(rng()), col = small(rng()) % (d.row_stride - d.col_offset);
    const unsigned bits = kernels::lora_dropout_keep4(d, row, col);
    for (unsigned j = 0; j < 4; ++j) {
      const auto index =
          static_cast<std::uint64_t>((d.row_offset + row) * d.row_stride + d.col_offset + col + j);
      ASSERT_EQ((bits >> j & 1u) != 0, philox_uniform(s, index) >= d.p) << "trial " << t;
    }
  }
}

// ---- LoRA ------------------------------------------------------------------------------

struct LoraCase {
  i64 n, in, out;
  int r;
  float p;
};

class GpuLora : public ::testing::TestWithParam<LoraCase> {};

TEST_P(GpuLora, MatchesCpu) {
  ANVIL_REQUIRE_GPU();
  const LoraCase c = GetParam();
  const i64 n = c.n, in = c.in, out = c.out, r = c.r;
  const float scale = 1.75f;
  auto cpu = backend::make_cpu_backend();
  const auto x = normal(n * in), a = normal(r * in, 0.2f), b = normal(out * r, 0.2f);
  const auto dy = normal(n * out), y0 = normal(n * out);
  const auto da0 = normal(r * in), db0 = normal(out * r), dx0 = normal(n * in);

  const PhiloxStream st = philox_stream(rng()(), rng()() % 1000, 5, 2);
  const i64 row_offset = 11, col_offset = 13, row_stride = in + 29;
  const backend::LoraDropout drop{c.p, st, row_offset, row_stride, col_offset};
  const kernels::LoraDropoutParams kd{c.p,        st.key.k0,  st.key.k1, st.c2, st.c3,
                                      row_offset, row_stride, col_offset};
  // The dropped-out input and its mask, drawn on the host with core/philox.
  const float inv_keep = 1.0f / (1.0f - c.p);
  std::vector<float> xd(x);
  std::vector<char> keep(x.size(), 1);
  for (i64 i = 0; c.p > 0.0f && i < n; ++i)
    for (i64 k = 0; k < in; ++k) {
      const auto idx = static_cast<std::uint64_t>((row_offset + i) * row_stride + col_offset + k);
      keep[i * in + k] = philox_uniform(st, idx) >= c.p;
      xd[i * in + k] = keep[i * in + k] ? x[i * in + k] * inv_keep : 0.0f;
    }

  // Down: xa = dropout(x) A^T.
  std::vector<double> xa_ref(n * r);
  for (i64 i = 0; i < n; ++i)
    for (i64 q = 0; q < r; ++q) {
      double s = 0.0;
      for (i64 k = 0; k < in; ++k) s += double(xd[i * in + k]) * a[q * in + k];
      xa_ref[i * r + q] = s;
    }
  std::vector<float> xa_cpu(n * r);
  cpu->lora_down(xa_cpu.data(), x.data(), a.data(), n, in, r, drop);
  Dev<float> d_x(x), d_a(a), d_b(b), d_dy(dy), d_xa(xa_cpu), d_y(y0);
  d_xa.poison();
  kernels::lora_down(d_xa.get(), d_x.get(), d_a.get(), n, in, c.r, kd, nullptr);
  expect_within_noise("lora_down xa", d_xa.download(), xa_cpu, xa_ref);

  // Up, from the CPU's xa on both sides: y = y0 + scale xa B^T.
  std::vector<double> y_ref(n * out);
  for (i64 i = 0; i < n; ++i)
    for (i64 o = 0; o < out; ++o) {
      double s = 0.0;
      for (i64 q = 0; q < r; ++q) s += double(xa_cpu[i * r + q]) * b[o * r + q];
      y_ref[i * out + o] = y0[i * out + o] + scale * s;
    }
  std::vector<float> y_cpu(y0);
  cpu->lora_up(y_cpu.data(), xa_cpu.data(), b.data(), n, out, r, scale);
  d_xa.upload(xa_cpu);
  kernels::lora_up(d_y.get(), d_xa.get(), d_b.get(), n, out, c.r, scale, nullptr);
  expect_within_noise("lora_up y", d_y.download(), y_cpu, y_ref);

  // Backward: g = scale dy B; db += scale dy^T xa; da += g^T xd; dx += mask(g A) / (1-p).
  std::vector<double> g(n * r), db_ref(db0.begin(), db0.end()), da_ref(da0.begin(), da0.end()),
      dx_ref(dx0.begin(), dx0.end());
  for (i64 i = 0; i < n; ++i)
    for (i64 q = 0; q < r; ++q) {
      double s = 0.0;
      for (i64 o = 0; o < out; ++o) s += double(dy[i * out + o]) * b[o * r + q];
      g[i * r + q] = scale * s;
    }
  for (i64 i = 0; i < n; ++i) {
    for (i64 o = 0; o < out; ++o)
      for (i64 q = 0; q < r; ++q) db_ref[o * r + q] += scale * double(dy[i * out + o]) * xa_cpu[i * r + q];
    for (i64 q = 0; q < r; ++q)
      for (i64 k = 0; k < in; ++k) da_ref[q * in + k] += g[i * r + q] * xd[i * in + k];
    for (i64 k = 0; k < in; ++k) {
      if (!keep[i * in + k]) continue;
      double s = 0.0;
      for (i64 q = 0; q < r; ++q) s += g[i * r + q] * a[q * in + k];
      dx_ref[i * in + k] += s * inv_keep;
    }
  }
  std::vector<float> dx_cpu(dx0), da_cpu(da0), db_cpu(db0);
  cpu->lora_backward(dx_cpu.data(), da_cpu.data(), db_cpu.data(), dy.data(), x.data(),
                     xa_cpu.data(), a.data(), b.data(), n, in, out, r, scale, drop);
  Dev<float> d_dx(dx0), d_da(da0), d_db(db0);
  void* ws = nullptr;
  CUDA_CHECK(cudaMalloc(&ws, kernels::lora_backward_workspace_bytes(n, in, out, c.r)));
  CUDA_CHECK(cudaMemset(ws, 0xFF, kernels::lora_backward_workspace_bytes(n, in, out, c.r)));
  kernels::lora_backward(d_dx.get(), d_da.get(), d_db.get(), d_dy.get(), d_x.get(), d_xa.get(),
                         d_a.get(), d_b.get(), n, in, out, c.r, scale, kd, ws, nullptr);
  expect_within_noise("lora_backward dx", d_dx.download(), dx_cpu, dx_ref);
  expect_within_noise("lora_backward da", d_da.download(), da_cpu, da_ref);
  expect_within_noise("lora_backward db", d_db.download(), db_cpu, db_ref);
  CUDA_CHECK(cudaFree(ws));
}

INSTANTIATE_TEST_SUITE_P(Shapes, GpuLora,
                         ::testing::Values(LoraCase{37, 200, 77, 8, 0.0f},
                                           LoraCase{37, 200, 77, 8, 0.1f},
                                           LoraCase{37, 200, 77, 16, 0.0f},
                                           LoraCase{37, 200, 77, 16, 0.1f},
                                           LoraCase{130, 515, 96, 5, 0.1f},
                                           LoraCase{301, 129, 1030, 32, 0.1f},
                                           LoraCase{1, 64, 64, 64, 0.0f},
                                           LoraCase{700, 333, 190, 64, 0.25f}));

// A = unit rows picks single columns of dropout(x): xa must equal the host's mask exactly,
// and dx must keep its old value wherever the forward dropped the input.
TEST(GpuLoraMask, EqualsHostDropoutExactly) {
  ANVIL_REQUIRE_GPU();
  const i64 n = 37, in = 200, out = 19;
  const int r = 64;
  const float p = 0.3f, inv_keep = 1.0f / (1.0f - p);
  const PhiloxStream st = philox_stream(rng()(), 42, 1, 3);
  const kernels::LoraDropoutParams kd{p, st.key.k0, st.key.k1, st.c2, st.c3, 7, 517, 61};
  const auto x = normal(n * in), b = normal(out * r), dy = normal(n * out), dx0 = normal(n * in);
  auto kept = [&](i64 i, i64 k) {
    return philox_uniform(st, static_cast<std::uint64_t>((7 + i) * 517 + 61 + k)) >= p;
  };
  Dev<float> d_x(x), d_xa(std::vector<float>(n * r)), d_b(b), d_dy(dy), d_dx(dx0);
  for (i64 off : {0, 64, 136}) {
    std::vector<float> a(r * in, 0.0f);
    for (i64 q = 0; q < r; ++q) a[q * in + q + off] = 1.0f;
    Dev<float> d_a(a);
    d_xa.poison();
    kernels::lora_down(d_xa.get(), d_x.get(), d_a.get(), n, in, r, kd, nullptr);
    const auto xa = d_xa.download();
    for (i64 i = 0; i < n; ++i)
      for (i64 q = 0; q < r; ++q) {
        const i64 k = q + off;
        const float want = kept(i, k) ? x[i * in + k] * inv_keep : 0.0f;
        ASSERT_EQ(xa[i * r + q], want) << "row " << i << " col " << k;
      }
  }
  std::vector<float> da(r * in, 0.0f), db(out * r, 0.0f), a = normal(r * in);
  Dev<float> d_a(a), d_da(da), d_db(db);
  void* ws = nullptr;
  CUDA_CHECK(cudaMalloc(&ws, kernels::lora_backward_workspace_bytes(n, in, out, r)));
  kernels::lora_backward(d_dx.get(), d_da.get(), d_db.get(), d_dy.get(), d_x.get(), d_xa.get(),
                         d_a.get(), d_b.get(), n, in, out, r, 1.0f, kd, ws, nullptr);
  const auto dx = d_dx.download();
  i64 dropped = 0;
  for (i64 i = 0; i < n; ++i)
    for (i64 k = 0; k < in; ++k) {
      if (kept(i, k)) continue;
      ++dropped;
      ASSERT_EQ(dx[i * in + k], dx0[i * in + k]) << "dropped element " << i << ", " << k;
    }
  EXPECT_GT(dropped, n * in / 5);  // p = 0.3: about 2220 of 7400
  EXPECT_LT(dropped, n * in * 2 / 5);
  CUDA_CHECK(cudaFree(ws));
}

// ---- RMSNorm, RoPE, SwiGLU --------------------------------------------------------------

TEST(GpuRmsnorm, ForwardBackwardMatchCpu) {
  ANVIL_REQUIRE_GPU();
  auto cpu = backend::make_cpu_backend();
  for (const auto& [n, c] : {std::pair<i64, i64>{37, 130}, {5, 33}, {64, 4096}, {3, 1}}) {
    SCOPED_TRACE(testing::Message() << "n " << n << " c " << c);
    const float eps = 1e-5f;
    const auto x = normal(n * c), dout = normal(n * c), dx0 = normal(n * c);
    std::vector<float> w(c);  // norm weights are f32 on both backends
    for (auto& v : w) v = 1.0f + 0.3f * normal(1)[0];
    const TensorView wv{w.data(), DType::dtype_f32, Shape{c}};
    std::vector<float> out_cpu(n * c), rstd_cpu(n);
    cpu->rmsnorm_forward(out_cpu.data(), rstd_cpu.data(), x.data(), wv, n, c, eps);
    std::vector<double> out_ref(n * c), rstd_ref(n);
    for (i64 i = 0; i < n; ++i) {
      double ss = 0.0;
      for (i64 j = 0; j < c; ++j) ss += double(x[i * c + j]) * x[i * c + j];
      rstd_ref[i] = 1.0 / std::sqrt(ss / c + eps);
      for (i64 j = 0; j < c; ++j) out_ref[i * c + j] = double(w[j]) * x[i * c + j] * rstd_ref[i];
    }
    Dev<float> d_x(x), d_out(out_cpu), d_rstd(rstd_cpu), d_dout(dout), d_dx(dx0);
    Dev<float> d_w(w);
    d_out.poison();
    d_rstd.poison();
    kernels::rmsnorm_forward(d_out.get(), d_rstd.get(), d_x.get(), d_w.get(), n, c, eps, nullptr);
    expect_within_noise("rmsnorm out", d_out.download(), out_cpu, out_ref);
    expect_within_noise("rmsnorm rstd", d_rstd.download(), rstd_cpu, rstd_ref);

    for (float beta : {0.0f, 1.0f}) {
      SCOPED_TRACE(testing::Message() << "beta " << beta);
      std::vector<double> dx_ref(n * c);
      double terms = 0.0;  // dx is a difference of two terms that cancel when c = 1
      for (i64 i = 0; i < n; ++i) {
        const double r = rstd_cpu[i];  // the saved rstd is the backward's input on both sides
        double dot = 0.0;
        for (i64 j = 0; j < c; ++j) dot += double(dout[i * c + j]) * double(w[j]) * x[i * c + j];
        for (i64 j = 0; j < c; ++j) {
          const double t1 = r * double(w[j]) * dout[i * c + j];
          const double t2 = r * r * r / c * x[i * c + j] * dot;
          dx_ref[i * c + j] = t1 - t2 + beta * dx0[i * c + j];
          terms = std::max(terms, std::max(std::fabs(t1), std::fabs(t2)));
        }
      }
      std::vector<float> dx_cpu(dx0);
      cpu->rmsnorm_backward(dx_cpu.data(), nullptr, dout.data(), x.data(), wv, rstd_cpu.data(), n,
                            c, beta);
      d_rstd.upload(rstd_cpu);
      d_dx.upload(dx0);
      if (beta == 0.0f) d_dx.poison();  // beta 0 must not read dx
      kernels::rmsnorm_backward(d_dx.get(), d_dout.get(), d_x.get(), d_w.get(), d_rstd.get(), n,
                                c, beta, nullptr);
      expect_within_noise("rmsnorm dx", d_dx.download(), dx_cpu, dx_ref, terms);
    }
  }
}

TEST(GpuRope, ForwardAndInverseMatchCpu) {
  ANVIL_REQUIRE_GPU();
  auto cpu = backend::make_cpu_backend();
  for (const i64 d : {64, 128}) {
    const i64 n = 37, heads = 3, half = d / 2;
    std::vector<float> inv_freq(half);
    for (i64 i = 0; i < half; ++i)
      inv_freq[i] = static_cast<float>(std::pow(500000.0, -2.0 * i / d));
    std::vector<std::int32_t> pos(n);
    for (auto& p : pos) p = static_cast<std::int32_t>(rng()() % 32768);
    const auto x = normal(n * heads * d);
    for (const bool inverse : {false, true}) {
      SCOPED_TRACE(testing::Message() << "head_dim " << d << " inverse " << inverse);
      const double sign = inverse ? -1.0 : 1.0;
      std::vector<double> ref(x.size());
      for (i64 t = 0; t < n; ++t)
        for (i64 h = 0; h < heads; ++h)
          for (i64 i = 0; i < half; ++i) {
            const float angle = static_cast<float>(pos[t]) * inv_freq[i];  // fp32, as HF
            const double cs = std::cos(double(angle)), sn = sign * std::sin(double(angle));
            const i64 o = (t * heads + h) * d;
            ref[o + i] = x[o + i] * cs - x[o + i + half] * sn;
            ref[o + i + half] = x[o + i + half] * cs + x[o + i] * sn;
          }
      std::vector<float> x_cpu(x);
      if (inverse) cpu->rope_backward(x_cpu.data(), pos.data(), inv_freq.data(), n, heads, d);
      else cpu->rope_forward(x_cpu.data(), pos.data(), inv_freq.data(), n, heads, d);
      Dev<float> d_x(x), d_f(inv_freq);
      Dev<std::int32_t> d_pos(pos);
      kernels::rope_apply(d_x.get(), d_pos.get(), d_f.get(), n, heads, d, inverse, nullptr);
      expect_within_noise("rope", d_x.download(), x_cpu, ref);
    }
  }
}

TEST(GpuSwiglu, ForwardBackwardMatchCpu) {
  ANVIL_REQUIRE_GPU();
  auto cpu = backend::make_cpu_backend();
  const i64 n = 100'003;
  const auto gate = normal(n, 4.0f), up = normal(n), dh = normal(n);
  std::vector<double> h_ref(n), dg_ref(n), du_ref(n);
  for (i64 i = 0; i < n; ++i) {
    const double g = gate[i], s = 1.0 / (1.0 + std::exp(-g));
    h_ref[i] = g * s * up[i];
    dg_ref[i] = dh[i] * up[i] * s * (1.0 + g * (1.0 - s));
    du_ref[i] = dh[i] * g * s;
  }
  std::vector<float> h_cpu(n), dg_cpu(n), du_cpu(n);
  cpu->swiglu_forward(h_cpu.data(), gate.data(), up.data(), n);
  cpu->swiglu_backward(dg_cpu.data(), du_cpu.data(), dh.data(), gate.data(), up.data(), n);
  Dev<float> d_gate(gate), d_up(up), d_dh(dh), d_h(h_cpu), d_dg(dg_cpu), d_du(du_cpu);
  d_h.poison();
  d_dg.poison();
  d_du.poison();
  kernels::swiglu_forward(d_h.get(), d_gate.get(), d_up.get(), n, nullptr);
  kernels::swiglu_backward(d_dg.get(), d_du.get(), d_dh.get(), d_gate.get(), d_up.get(), n,
                           nullptr);
  expect_within_noise("swiglu h", d_h.download(), h_cpu, h_ref);
  expect_within_noise("swiglu dgate", d_dg.download(), dg_cpu, dg_ref);
  expect_within_noise("swiglu dup", d_du.download(), du_cpu, du_ref);
}

// ---- embedding -----------------------------------------------------------------------

TEST(GpuEmbedding, ForwardShardAndBadId) {
  ANVIL_REQUIRE_GPU();
  auto cpu = backend::make_cpu_backend();
  const i64 vocab = 1000, first = 300, rows = 250, dim = 77, n = 37;
  std::vector<std::uint16_t> table(rows * dim);
  for (auto& v : table) v = f32_to_bf16(normal(1)[0]);
  const TensorView tv{table.data(), DType::dtype_bf16, Shape{rows, dim}};
  std::vector<std::int32_t> ids(n);
  for (i64 i = 0; i < n; ++i)  // half inside the shard, half anywhere in the vocabulary
    ids[i] = static_cast<std::int32_t>(i % 2 ? first + rng()() % rows : rng()() % vocab);
  std::vector<float> out_cpu(n * dim);
  cpu->embedding_forward(out_cpu.data(), ids.data(), tv, n, backend::VocabShard{first, vocab});
  Dev<float> d_out(out_cpu);
  Dev<std::uint16_t> d_table(table);
  Dev<std::int32_t> d_ids(ids), d_bad(std::vector<std::int32_t>{0});
  d_out.poison();
  kernels::embedding_forward(d_out.get(), d_ids.get(), d_table.get(), n, rows, dim, first, vocab,
                             d_bad.get(), nullptr);
  EXPECT_EQ(d_out.download(), out_cpu);
  EXPECT_EQ(d_bad.download()[0], 0);

  // Ids outside the vocabulary: flagged, their rows zero, the others untouched.
  std::vector<std::int32_t> bad_ids(ids);
  bad_ids[3] = static_cast<std::int32_t>(vocab);
  bad_ids[20] = -5;
  d_ids.upload(bad_ids);
  d_out.poison();
  kernels::embedding_forward(d_out.get(), d_ids.get(), d_table.get(), n, rows, dim, first, vocab,
                             d_bad.get(), nullptr);
  std::vector<float> want(out_cpu);
  for (i64 i : {3, 20}) std::fill(want.begin() + i * dim, want.begin() + (i + 1) * dim, 0.0f);
  EXPECT_EQ(d_out.download(), want);
  EXPECT_EQ(d_bad.download()[0], 1);
}

// The CPU adds each table row's tokens in token order, in pieces cut at the same sorted
// positions as the GPU's chunks: equal bit for bit. `pad` of the tokens are id 0 (a padding
// run that crosses many chunks).
TEST(GpuEmbedding, BackwardEqualsCpuExactly) {
  ANVIL_REQUIRE_GPU();
  auto cpu = backend::make_cpu_backend();
  for (const auto& [n, vocab, dim, pad] :
       {std::tuple<i64, i64, i64, double>{1000, 50, 200, 0.0}, {37, 5000, 77, 0.0},
        {1, 3, 1, 0.0}, {700, 5, 33, 0.9}, {130, 2, 3, 1.0}}) {
    SCOPED_TRACE(testing::Message() << "n " << n << " vocab " << vocab << " dim " << dim
                                    << " pad " << pad);
    std::vector<std::int32_t> ids(n);
    std::bernoulli_distribution is_pad(pad);
    for (auto& id : ids)
      id = is_pad(rng()) ? 0 : static_cast<std::int32_t>(rng()() % vocab);
    const auto dout = normal(n * dim), dtable0 = normal(vocab * dim);
    std::vector<float> dtable_cpu(dtable0);
    cpu->embedding_backward(dtable_cpu.data(), dout.data(), ids.data(), n, vocab, dim);
    Dev<float> d_dout(dout), d_dtable(dtable0);
    Dev<std::int32_t> d_ids(ids);
    void* ws = nullptr;
    CUDA_CHECK(cudaMalloc(&ws, kernels::embedding_backward_workspace_bytes(n, dim)));
    kernels::embedding_backward(d_dtable.get(), d_dout.get(), d_ids.get(), n, vocab, dim, ws,
                                nullptr);
    EXPECT_EQ(d_dtable.download(), dtable_cpu);
    CUDA_CHECK(cudaFree(ws));
  }
}

// ---- decoding attention, bias ------------------------------------------------------------

// One query position over a KV cache: odd lengths (tails of the block's loops), GQA and plain
// heads, head dims 64 and 128, against an fp64 softmax and the CPU backend.
TEST(GpuDecode, MatchesCpuBackend) {
  ANVIL_REQUIRE_GPU();
  auto cpu = backend::make_cpu_backend();
  for (const auto& [len, H, Hkv, D] : {std::tuple<i64, i64, i64, i64>{1, 4, 2, 64},
                                       {37, 8, 2, 64}, {130, 4, 4, 128}, {300, 6, 1, 64}}) {
    SCOPED_TRACE(testing::Message() << "len " << len << " H " << H << " Hkv " << Hkv << " D " << D);
    const auto q = normal(H * D), kc = normal(len * Hkv * D), vc = normal(len * Hkv * D);
    std::vector<float> out_cpu(H * D);
    cpu->attention_decode(out_cpu.data(), q.data(), kc.data(), vc.data(), len, H, Hkv, D);
    std::vector<double> ref(H * D, 0.0);
    const double scale = 1.0 / std::sqrt(static_cast<double>(D));
    for (i64 h = 0; h < H; ++h) {
      const i64 kvh = h / (H / Hkv);
      std::vector<double> p(len);
      double mx = -INFINITY, sum = 0.0;
      for (i64 j = 0; j < len; ++j) {
        double dot = 0.0;
        for (i64 d = 0; d < D; ++d) dot += double(q[h * D + d]) * kc[(j * Hkv + kvh) * D + d];
        mx = std::max(mx, p[j] = dot * scale);
      }
      for (i64 j = 0; j < len; ++j) sum += p[j] = std::exp(p[j] - mx);
      for (i64 j = 0; j < len; ++j)
        for (i64 d = 0; d < D; ++d) ref[h * D + d] += p[j] / sum * vc[(j * Hkv + kvh) * D + d];
    }
    Dev<float> d_q(q), d_k(kc), d_v(vc), d_out(out_cpu);
    d_out.poison();
    void* ws = nullptr;
    CUDA_CHECK(cudaMalloc(&ws, kernels::attention_decode_workspace_bytes(len, H)));
    kernels::attention_decode(d_out.get(), d_q.get(), d_k.get(), d_v.get(), len, H, Hkv, D, ws,
                              nullptr);
    expect_within_noise("decode out", d_out.download(), out_cpu, ref);
    CUDA_CHECK(cudaFree(ws));
  }
}

// y += bias is one rounded add per element: exactly the host's.
TEST(GpuBias, AddsEveryRowExactly) {
  ANVIL_REQUIRE_GPU();
  for (const auto& [m, n] : {std::pair<i64, i64>{1, 1}, {7, 33}, {300, 257}}) {
    SCOPED_TRACE(testing::Message() << "m " << m << " n " << n);
    const auto y0 = normal(m * n), bias = normal(n);
    std::vector<float> want(y0);
    for (i64 i = 0; i < m; ++i)
      for (i64 j = 0; j < n; ++j) want[i * n + j] += bias[j];
    Dev<float> d_y(y0), d_b(bias);
    kernels::bias_add(d_y.get(), d_b.get(), m, n, nullptr);
    EXPECT_EQ(d_y.download(), want);
  }
}

}  // namespace
}  // namespace anvil
