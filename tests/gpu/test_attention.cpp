// Flash attention kernels (kernels/attention.cu) against references on the host.
//
// The index math the kernels share (masks, tile ranges, mma fragment layouts) is checked
// on the CPU and runs everywhere. The kernels themselves need a GPU: on fresh random inputs
// their error against an fp64 reference must stay within 2x (plus a tiny floor) of the
// error of a straightforward bf16 implementation (inputs, P and dS rounded to bf16, fp32
// sums), i.e. within the noise of the precision they compute in. The fp64 reference is in
// turn checked against the CPU backend, the project's fp32 reference, where that covers
// the case (causal attention).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "attention.cuh"
#include "backend/backend.h"
#include "core/dtype.h"
#include "core/error.h"
#include "cuda_check.cuh"
#include "gpu_test_util.h"

namespace anvil {
namespace {

namespace am = kernels::attention_math;

// ---- index math (CPU only) --------------------------------------------------------------

// Each lane's fragment elements cover their matrix exactly once, and sit where the PTX ISA
// figures for mma.m16n8k16 put them (spot checks for lane 5: group 1, thread-in-group 1).
TEST(AttentionMath, MmaFragmentsCoverTheirTiles) {
  std::vector<int> a(16 * 16, 0), b(16 * 8, 0), c(16 * 8, 0);
  for (int lane = 0; lane < 32; ++lane) {
    for (int e = 0; e < 8; ++e) ++a[am::mma_a_row(lane, e) * 16 + am::mma_a_col(lane, e)];
    for (int e = 0; e < 4; ++e) ++b[am::mma_b_row(lane, e) * 8 + am::mma_b_col(lane, e)];
    for (int e = 0; e < 4; ++e) ++c[am::mma_c_row(lane, e) * 8 + am::mma_c_col(lane, e)];
  }
  EXPECT_TRUE(std::all_of(a.begin(), a.end(), [](int n) { return n == 1; }));
  EXPECT_TRUE(std::all_of(b.begin(), b.end(), [](int n) { return n == 1; }));
  EXPECT_TRUE(std::all_of(c.begin(), c.end(), [](int n) { return n == 1; }));
  EXPECT_EQ(am::mma_a_row(5, 0), 1);
  EXPECT_EQ(am::mma_a_col(5, 0), 2);
  EXPECT_EQ(am::mma_a_row(5, 3), 9);
  EXPECT_EQ(am::mma_a_col(5, 3), 3);
  EXPECT_EQ(am::mma_a_row(5, 6), 9);
  EXPECT_EQ(am::mma_a_col(5, 6), 10);
  EXPECT_EQ(am::mma_b_row(5, 2), 10);
  EXPECT_EQ(am::mma_b_col(5, 2), 1);
  EXPECT_EQ(am::mma_c_row(5, 3), 9);
  EXPECT_EQ(am::mma_c_col(5, 3), 3);
  // The kernels load register pairs (e, e + 1) with one 32-bit access: adjacent columns.
  for (int lane = 0; lane < 32; ++lane) {
    for (int e = 0; e < 8; e += 2) {
      EXPECT_EQ(am::mma_a_row(lane, e + 1), am::mma_a_row(lane, e));
      EXPECT_EQ(am::mma_a_col(lane, e + 1), am::mma_a_col(lane, e) + 1);
      EXPECT_EQ(am::mma_a_col(lane, e) % 2, 0);
    }
    for (int e = 0; e < 4; e += 2)
      EXPECT_EQ(am::mma_b_row(lane, e + 1), am::mma_b_row(lane, e) + 1);
  }
}

// acc_to_a in attention.cu packs A register r from accumulator tile r / 2 (lo, hi), elements
// 2 (r % 2) and 2 (r % 2) + 1: that must be the same matrix position, shifted 8 columns for
// the second tile.
TEST(AttentionMath, AccumulatorsAreTheNextAFragment) {
  for (int lane = 0; lane < 32; ++lane)
    for (int r = 0; r < 4; ++r)
      for (int half = 0; half < 2; ++half) {
        const int e_a = 2 * r + half, e_c = 2 * (r % 2) + half, tile = r / 2;
        EXPECT_EQ(am::mma_a_row(lane, e_a), am::mma_c_row(lane, e_c)) << lane << " " << r;
        EXPECT_EQ(am::mma_a_col(lane, e_a), 8 * tile + am::mma_c_col(lane, e_c))
            << lane << " " << r;
      }
}

TEST(AttentionMath, VisibleFollowsTheMaskRules) {
  EXPECT_TRUE(am::visible(5, 5, 10, true, false, 0, 0));
  EXPECT_TRUE(am::visible(5, 0, 10, true, false, 0, 0));
  EXPECT_FALSE(am::visible(5, 6, 10, true, false, 0, 0));
  EXPECT_TRUE(am::visible(5, 6, 10, false, false, 0, 0));
  EXPECT_FALSE(am::visible(5, 4, 10, true, true, 1, 0));     // other document
  EXPECT_TRUE(am::visible(5, 4, 10, true, false, 1, 0));     // ids ignored without segments
  EXPECT_FALSE(am::visible(10, 3, 10, false, false, 0, 0));  // query past the end
  EXPECT_FALSE(am::visible(3, 10, 10, false, false, 0, 0));  // key past the end
}

// The causal tile skipping never skips a visible (query, key) pair, for the block sizes the
// kernels use, any sequence length, with and without causal masking.
TEST(AttentionMath, TileRangesCoverEveryVisiblePair) {
  const int blocks[][2] = {{64, 64}, {32, 64}, {64, 32}};
  for (const auto& bl : blocks) {
    const int bq = bl[0], bk = bl[1];
    for (int seq : {1, 2, 17, 31, 32, 33, 63, 64, 65, 100, 128, 257}) {
      for (bool causal : {true, false}) {
        for (int q0 = 0; q0 < seq; q0 += bq) {
          const int end = am::kv_tile_end(q0, bq, bk, seq, causal);
          EXPECT_LE(end, am::ceil_div(seq, bk));
          for (int i = q0; i < std::min(q0 + bq, seq); ++i)
            for (int j = 0; j < seq; ++j) {
              if (!am::visible(i, j, seq, causal, false, 0, 0)) continue;
              ASSERT_LT(j / bk, end) << "seq " << seq << " q0 " << q0 << " j " << j;
            }
        }
        for (int k0 = 0; k0 < seq; k0 += bk) {
          const int begin = am::q_tile_begin(k0, bq, causal);
          for (int j = k0; j < std::min(k0 + bk, seq); ++j)
            for (int i = 0; i < seq; ++i) {
              if (!am::visible(i, j, seq, causal, false, 0, 0)) continue;
              ASSERT_GE(i / bq, begin) << "seq " << seq << " k0 " << k0 << " i " << i;
            }
        }
      }
    }
  }
  // Causal skipping does skip: a first query tile needs only the first key tile.
  EXPECT_EQ(am::kv_tile_end(0, 64, 64, 1000, true), 1);
  EXPECT_EQ(am::q_tile_begin(128, 32, true), 4);
}

TEST(AttentionMath, OnlineMaxHandlesMaskedRows) {
  const float inf = std::numeric_limits<float>::infinity();
  const am::OnlineMax none = am::online_max_update(-inf, -inf);  // nothing visible yet
  EXPECT_EQ(none.m_new, -inf);
  EXPECT_EQ(none.base, 0.0f);
  EXPECT_EQ(none.rescale, 0.0f);
  const am::OnlineMax first = am::online_max_update(-inf, 3.0f);
  EXPECT_EQ(first.base, 3.0f);
  EXPECT_EQ(first.rescale, 0.0f);
  const am::OnlineMax lower = am::online_max_update(5.0f, 3.0f);
  EXPECT_EQ(lower.m_new, 5.0f);
  EXPECT_EQ(lower.rescale, 1.0f);
  const am::OnlineMax higher = am::online_max_update(3.0f, 5.0f);
  EXPECT_EQ(higher.m_new, 5.0f);
  EXPECT_FLOAT_EQ(higher.rescale, 0.25f);
}

// Checked before anything touches the device, so this runs without a GPU too.
TEST(GpuAttention, RejectsUnsupportedShapes) {
  float dummy[4] = {};
  kernels::AttentionParams p;
  p.q = p.k = p.v = dummy;
  p.out = p.lse = dummy;
  p.batch = 1, p.seq = 4, p.n_heads = 2, p.n_kv_heads = 1, p.head_dim = 96;
  p.scale = 0.1f;
  EXPECT_THROW(kernels::attention_forward(p, nullptr), Error);
  kernels::AttentionBackwardParams bp;
  bp.fwd = p;
  bp.dout = dummy;
  bp.dq = bp.dk = bp.dv = dummy;
  EXPECT_THROW(kernels::attention_backward(bp, dummy, nullptr), Error);
  p.head_dim = 64;
  p.n_kv_heads = 3;  // does not divide the query heads
  EXPECT_THROW(kernels::attention_forward(p, nullptr), Error);
}

// ---- host references --------------------------------------------------------------------

struct Case {
  int batch, seq, heads, kv_heads, head_dim;
  bool causal, segmented;
};

std::string describe(const Case& c) {
  return str_cat("B=", c.batch, " T=", c.seq, " H=", c.heads, " Hkv=", c.kv_heads,
                 " D=", c.head_dim, c.causal ? " causal" : " full", c.segmented ? " segments" : "");
}

// How gtest prints a Case (ctest lists it beside each test's name).
void PrintTo(const Case& c, std::ostream* os) { *os << describe(c); }

struct Inputs {
  Case c;
  std::vector<float> q, k, v, dout;  // (B,T,H,D), (B,T,Hkv,D) x2, (B,T,H,D)
  std::vector<std::int32_t> seg;     // (B,T), empty without segments
  float scale;
};

Inputs make_inputs(const Case& c) {
  std::mt19937 rng(std::random_device{}());
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto fill = [&](std::size_t n) {
    std::vector<float> x(n);
    for (auto& e : x) e = normal(rng);
    return x;
  };
  const std::size_t rows = std::size_t(c.batch) * c.seq;
  Inputs in{c,
            fill(rows * c.heads * c.head_dim),
            fill(rows * c.kv_heads * c.head_dim),
            fill(rows * c.kv_heads * c.head_dim),
            fill(rows * c.heads * c.head_dim),
            {},
            1.0f / std::sqrt(static_cast<float>(c.head_dim))};  // the CPU backend's scale
  if (c.segmented) {  // packed documents of random lengths, ids increasing along a row
    std::uniform_int_distribution<int> len(1, std::max(1, c.seq / 3));
    for (int b = 0; b < c.batch; ++b)
      for (int id = 0, t = 0; t < c.seq; ++id)
        for (int n = len(rng); n > 0 && t < c.seq; --n, ++t) in.seg.push_back(id);
  }
  return in;
}

float bf16_round(float x) { return bf16_to_f32(f32_to_bf16(x)); }

// Written independently of attention_math::visible, so that a slip there shows up here.
bool host_visible(const Inputs& in, int b, int i, int j) {
  const int T = in.c.seq;
  return (!in.c.causal || j <= i) && (in.seg.empty() || in.seg[b * T + i] == in.seg[b * T + j]);
}

// Straightforward attention. Acc = double, low = false: the fp64 reference. Acc = float,
// low = true: the bf16 implementation whose error is the noise floor (q, k, v, dout, P and
// dS rounded to bf16, sums in fp32; delta from the f32 out and dout, as the kernel).
template <typename Acc>
struct Host {
  const Inputs& in;
  bool low;
  std::vector<float> q, k, v, dout;  // rounded to bf16 when low

  Host(const Inputs& inputs, bool low_precision) : in(inputs), low(low_precision) {
    auto r = [&](std::vector<float> x) {
      if (low) std::transform(x.begin(), x.end(), x.begin(), bf16_round);
      return x;
    };
    q = r(in.q), k = r(in.k), v = r(in.v), dout = r(in.dout);
  }
  Acc round(Acc x) const { return low ? Acc(bf16_round(float(x))) : x; }
  std::size_t qi(int b, int t, int h) const {
    return ((std::size_t(b) * in.c.seq + t) * in.c.heads + h) * in.c.head_dim;
  }
  std::size_t ki(int b, int t, int h) const {
    const int kvh = h / (in.c.heads / in.c.kv_heads);
    return ((std::size_t(b) * in.c.seq + t) * in.c.kv_heads + kvh) * in.c.head_dim;
  }
  Acc score(int b, int h, int i, int j) const {  // scale * q_i . k_j
    Acc s = 0;
    for (int d = 0; d < in.c.head_dim; ++d) s += Acc(q[qi(b, i, h) + d]) * Acc(k[ki(b, j, h) + d]);
    return s * Acc(in.scale);
  }

  void forward(std::vector<double>& out, std::vector<double>& lse) const {
    const Case& c = in.c;
    const int T = c.seq, D = c.head_dim;
    out.assign(std::size_t(c.batch) * T * c.heads * D, 0.0);
    lse.assign(std::size_t(c.batch) * c.heads * T, 0.0);
    std::vector<Acc> p(T), o(D);
    for (int b = 0; b < c.batch; ++b)
      for (int h = 0; h < c.heads; ++h)
        for (int i = 0; i < T; ++i) {
          Acc m = -std::numeric_limits<Acc>::infinity(), l = 0;
          for (int j = 0; j < T; ++j)
            if (host_visible(in, b, i, j)) m = std::max(m, p[j] = score(b, h, i, j));
          std::fill(o.begin(), o.end(), Acc(0));
          for (int j = 0; j < T; ++j) {
            if (!host_visible(in, b, i, j)) continue;
            p[j] = std::exp(p[j] - m);
            l += p[j];
            const Acc pr = round(p[j]);
            for (int d = 0; d < D; ++d) o[d] += pr * Acc(v[ki(b, j, h) + d]);
          }
          for (int d = 0; d < D; ++d) out[qi(b, i, h) + d] = double(o[d] / l);
          lse[(std::size_t(b) * c.heads + h) * T + i] = double(m + std::log(l));
        }
  }

  // out and lse: what the forward saved (the same f32 values for every implementation).
  void backward(const std::vector<float>& out, const std::vector<float>& lse,
                std::vector<double>& dq, std::vector<double>& dk, std::vector<double>& dv) const {
    const Case& c = in.c;
    const int T = c.seq, D = c.head_dim;
    std::vector<Acc> dq_acc(out.size(), 0), dk_acc(in.k.size(), 0), dv_acc(in.k.size(), 0);
    for (int b = 0; b < c.batch; ++b)
      for (int h = 0; h < c.heads; ++h)
        for (int i = 0; i < T; ++i) {
          Acc delta = 0;
          for (int d = 0; d < D; ++d)
            delta += Acc(in.dout[qi(b, i, h) + d]) * Acc(out[qi(b, i, h) + d]);
          const Acc row_lse = lse[(std::size_t(b) * c.heads + h) * T + i];
          for (int j = 0; j < T; ++j) {
            if (!host_visible(in, b, i, j)) continue;
            const Acc p = std::exp(score(b, h, i, j) - row_lse);
            Acc dp = 0;
            for (int d = 0; d < D; ++d) dp += Acc(dout[qi(b, i, h) + d]) * Acc(v[ki(b, j, h) + d]);
            const Acc ds = round(p * (dp - delta)), pr = round(p);
            for (int d = 0; d < D; ++d) {
              dq_acc[qi(b, i, h) + d] += ds * Acc(k[ki(b, j, h) + d]);
              dk_acc[ki(b, j, h) + d] += ds * Acc(q[qi(b, i, h) + d]);
              dv_acc[ki(b, j, h) + d] += pr * Acc(dout[qi(b, i, h) + d]);
            }
          }
        }
    auto to_double = [&](const std::vector<Acc>& x, Acc s) {
      std::vector<double> y(x.size());
      for (std::size_t n = 0; n < x.size(); ++n) y[n] = double(x[n] * s);
      return y;
    };
    dq = to_double(dq_acc, Acc(in.scale));
    dk = to_double(dk_acc, Acc(in.scale));
    dv = to_double(dv_acc, Acc(1));
  }
};

std::vector<float> to_float(const std::vector<double>& x) { return {x.begin(), x.end()}; }

// ---- comparing ----------------------------------------------------------------------------

struct ErrorStats {
  double max_abs = 0, rms = 0;
  std::size_t non_finite = 0;
};

template <typename T>
ErrorStats error_vs(const std::vector<T>& got, const std::vector<double>& ref) {
  ErrorStats s;
  for (std::size_t n = 0; n < ref.size(); ++n) {
    if (!std::isfinite(double(got[n]))) {
      ++s.non_finite;
      continue;
    }
    const double e = std::abs(double(got[n]) - ref[n]);
    s.max_abs = std::max(s.max_abs, e);
    s.rms += e * e;
  }
  s.rms = std::sqrt(s.rms / double(std::max<std::size_t>(ref.size(), 1)));
  return s;
}

double max_abs(const std::vector<double>& x) {
  double m = 0;
  for (double e : x) m = std::max(m, std::abs(e));
  return m;
}

// The kernel's error against the fp64 reference is within 2x of the bf16 noise floor; the
// floor term only absorbs fp32 rounding where the noise is zero (e.g. a one-key row).
void expect_within_noise(const char* what, const Case& c, const std::vector<float>& gpu,
                         const std::vector<double>& low, const std::vector<double>& ref) {
  ASSERT_EQ(gpu.size(), ref.size());
  const ErrorStats g = error_vs(gpu, ref), n = error_vs(low, ref);
  const double floor = 1e-5 * max_abs(ref) + 1e-30;
  EXPECT_EQ(g.non_finite, 0u) << what << ", " << describe(c);
  EXPECT_LE(g.rms, 2.0 * n.rms + floor) << what << ", " << describe(c) << ": noise rms " << n.rms;
  EXPECT_LE(g.max_abs, 2.0 * n.max_abs + floor)
      << what << ", " << describe(c) << ": noise max " << n.max_abs;
}

// The CPU backend (fp32) agrees with the fp64 reference far inside the bf16 noise.
void expect_close(const char* what, const Case& c, const std::vector<float>& cpu,
                  const std::vector<double>& ref) {
  const ErrorStats e = error_vs(cpu, ref);
  EXPECT_EQ(e.non_finite, 0u) << what << ", " << describe(c);
  EXPECT_LE(e.max_abs, 1e-4 * max_abs(ref) + 1e-5) << what << ", " << describe(c);
}

// ---- device side --------------------------------------------------------------------------

template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t n) : n_(n) {
    CUDA_CHECK(cudaMalloc(&ptr_, std::max<std::size_t>(n, 1) * sizeof(T)));
    poison();
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) {
    CUDA_CHECK(cudaMemcpy(ptr_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // All bits set: NaN as a float, so an element a kernel forgets to write shows up.
  void poison() { CUDA_CHECK(cudaMemset(ptr_, 0xFF, std::max<std::size_t>(n_, 1) * sizeof(T))); }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    CUDA_CHECK(cudaMemcpy(host.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
  T* get() const { return ptr_; }

 private:
  T* ptr_ = nullptr;
  std::size_t n_;
};

struct DeviceInputs {
  DeviceBuffer<float> q, k, v, dout;
  DeviceBuffer<std::int32_t> seg;
  explicit DeviceInputs(const Inputs& in) : q(in.q), k(in.k), v(in.v), dout(in.dout), seg(in.seg) {}

  kernels::AttentionParams params(const Inputs& in) const {
    kernels::AttentionParams p;
    p.q = q.get(), p.k = k.get(), p.v = v.get();
    p.segment = in.seg.empty() ? nullptr : seg.get();
    p.batch = in.c.batch, p.seq = in.c.seq, p.n_heads = in.c.heads;
    p.n_kv_heads = in.c.kv_heads, p.head_dim = in.c.head_dim;
    p.scale = in.scale;
    p.causal = in.c.causal;
    return p;
  }
};

backend::AttentionShape shape_of(const Case& c) {
  return {c.batch, c.seq, c.heads, c.kv_heads, c.head_dim};
}

// ---- the host references against the CPU backend (CPU only) -------------------------------

// The fp64 reference reads the same semantics into shapes, layouts, masks and lse as the
// CPU backend (causal only), and the bf16 noise floor is real noise: non-zero, small.
TEST(AttentionReference, MatchesCpuBackend) {
  for (const Case& c : {Case{1, 1, 2, 1, 64, true, false}, Case{2, 17, 4, 2, 64, true, true},
                        Case{1, 40, 2, 2, 128, true, false}}) {
    const Inputs in = make_inputs(c);
    std::vector<double> ref_out, ref_lse, low_out, low_lse;
    Host<double>(in, false).forward(ref_out, ref_lse);
    Host<float>(in, true).forward(low_out, low_lse);
    const std::vector<float> out = to_float(ref_out), lse = to_float(ref_lse);
    std::vector<double> ref_dq, ref_dk, ref_dv, low_dq, low_dk, low_dv;
    Host<double>(in, false).backward(out, lse, ref_dq, ref_dk, ref_dv);
    Host<float>(in, true).backward(out, lse, low_dq, low_dk, low_dv);

    const auto cpu = backend::make_cpu_backend();
    const std::int32_t* seg = c.segmented ? in.seg.data() : nullptr;
    std::vector<float> cpu_out(ref_out.size()), cpu_lse(ref_lse.size());
    cpu->attention_forward(cpu_out.data(), cpu_lse.data(), in.q.data(), in.k.data(), in.v.data(),
                           seg, shape_of(c));
    std::vector<float> cpu_dq(in.q.size()), cpu_dk(in.k.size()), cpu_dv(in.v.size());
    cpu->attention_backward(cpu_dq.data(), cpu_dk.data(), cpu_dv.data(), in.dout.data(), out.data(),
                            lse.data(), in.q.data(), in.k.data(), in.v.data(), seg, shape_of(c));
    expect_close("cpu out", c, cpu_out, ref_out);
    expect_close("cpu lse", c, cpu_lse, ref_lse);
    expect_close("cpu dq", c, cpu_dq, ref_dq);
    expect_close("cpu dk", c, cpu_dk, ref_dk);
    expect_close("cpu dv", c, cpu_dv, ref_dv);

    const ErrorStats noise = error_vs(low_out, ref_out);
    EXPECT_GT(noise.max_abs, 0.0) << describe(c);
    EXPECT_LT(noise.max_abs, 0.05 * max_abs(ref_out)) << describe(c);
    if (c.seq > 1) {  // with one key the exact dk is 0 and only the noise is left
      EXPECT_LT(error_vs(low_dk, ref_dk).max_abs, 0.05 * max_abs(ref_dk)) << describe(c);
    }
  }
}

// ---- the kernels against the references -----------------------------------------------------

class GpuAttentionCase : public testing::TestWithParam<Case> {};

TEST_P(GpuAttentionCase, ForwardWithinBf16Noise) {
  ANVIL_REQUIRE_GPU();
  const Case c = GetParam();
  const Inputs in = make_inputs(c);
  std::vector<double> ref_out, ref_lse, low_out, low_lse;
  Host<double>(in, false).forward(ref_out, ref_lse);
  Host<float>(in, true).forward(low_out, low_lse);

  const DeviceInputs dev(in);
  DeviceBuffer<float> out(ref_out.size()), lse(ref_lse.size());  // poisoned
  kernels::AttentionParams p = dev.params(in);
  p.out = out.get(), p.lse = lse.get();
  kernels::attention_forward(p, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  expect_within_noise("out", c, out.download(), low_out, ref_out);
  expect_within_noise("lse", c, lse.download(), low_lse, ref_lse);
}

TEST_P(GpuAttentionCase, BackwardWithinBf16NoiseAndDeterministic) {
  ANVIL_REQUIRE_GPU();
  const Case c = GetParam();
  const Inputs in = make_inputs(c);
  std::vector<double> ref_out, ref_lse;
  Host<double>(in, false).forward(ref_out, ref_lse);
  // Every implementation differentiates the same saved forward.
  const std::vector<float> out = to_float(ref_out), lse = to_float(ref_lse);
  std::vector<double> ref_dq, ref_dk, ref_dv, low_dq, low_dk, low_dv;
  Host<double>(in, false).backward(out, lse, ref_dq, ref_dk, ref_dv);
  Host<float>(in, true).backward(out, lse, low_dq, low_dk, low_dv);

  const DeviceInputs dev(in);
  const DeviceBuffer<float> out_d(out), lse_d(lse);
  DeviceBuffer<float> dq(in.q.size()), dk(in.k.size()), dv(in.v.size());  // poisoned
  DeviceBuffer<unsigned char> workspace(
      kernels::attention_backward_workspace_bytes(c.batch, c.seq, c.heads, c.head_dim));
  kernels::AttentionBackwardParams p;
  p.fwd = dev.params(in);
  p.fwd.out = out_d.get(), p.fwd.lse = lse_d.get();
  p.dout = dev.dout.get();
  p.dq = dq.get(), p.dk = dk.get(), p.dv = dv.get();
  kernels::attention_backward(p, workspace.get(), nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> gpu_dq = dq.download(), gpu_dk = dk.download(), gpu_dv = dv.download();
  expect_within_noise("dq", c, gpu_dq, low_dq, ref_dq);
  expect_within_noise("dk", c, gpu_dk, low_dk, ref_dk);
  expect_within_noise("dv", c, gpu_dv, low_dv, ref_dv);

  // A second run, into re-poisoned buffers, gives the same bits.
  dq.poison();
  dk.poison();
  dv.poison();
  workspace.poison();
  kernels::attention_backward(p, workspace.get(), nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  auto same_bits = [](const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
  };
  EXPECT_TRUE(same_bits(gpu_dq, dq.download())) << describe(c);
  EXPECT_TRUE(same_bits(gpu_dk, dk.download())) << describe(c);
  EXPECT_TRUE(same_bits(gpu_dv, dv.download())) << describe(c);
}

// Odd lengths (tails of every tile size), one-token rows, GQA and plain multi-head, both
// head dims, causal and full, with and without packed documents.
const Case kShapes[] = {
    Case{1, 1, 8, 2, 64, true, false},   Case{2, 17, 8, 2, 64, true, true},
    Case{1, 100, 4, 4, 128, true, false}, Case{1, 128, 4, 2, 64, true, false},
    Case{1, 1, 4, 1, 128, false, false},  Case{2, 65, 2, 1, 64, false, true},
#ifdef ANVIL_CUDA_EMU  // the CPU emulation tier (tests/emu): the same features, fewer heads and tiles
    Case{1, 70, 4, 2, 128, true, true},   Case{1, 130, 2, 2, 64, false, false},
    Case{1, 100, 2, 1, 128, false, true},
#else
    Case{2, 257, 8, 2, 128, true, true},  Case{1, 257, 8, 8, 64, false, false},
    Case{2, 100, 8, 2, 128, false, true},
#endif
};
INSTANTIATE_TEST_SUITE_P(
    Shapes, GpuAttentionCase, testing::ValuesIn(kShapes),
    [](const testing::TestParamInfo<Case>& info) {
      const Case& c = info.param;
      return str_cat("B", c.batch, "_T", c.seq, "_H", c.heads, "_Hkv", c.kv_heads, "_D", c.head_dim,
                     c.causal ? "_causal" : "_full", c.segmented ? "_seg" : "");
    });

}  // namespace
}  // namespace anvil
