// CPU backend: causal attention (GQA, packed segments, odd sizes) against an fp64
// reference, its gradients against the fp64 reference backward and central differences,
// packed documents against the same documents run alone (with rope, positions
// restarting), and single-position decoding against rows of the full attention.
//
// Tolerances (expect_close, relative with a floor at the mean magnitude): forward and lse
// 1e-5, backward against the fp64 reference 1e-5 (T <= 13) and 1e-4 (T = 200); the fp64
// reference backward against differences 1e-6; packed vs alone 1e-6 (only the order of
// fp32 sums differs); decode 1e-5 against fp64, 1e-6 against the forward.
#include <gtest/gtest.h>

#include <cmath>

#include "ops_test_util.h"

namespace anvil::test {
namespace {

using backend::AttentionShape;

struct AttnRef {
  DVec out, lse;  // (B, T, H, D), (B, H, T)
};

bool visible(const std::vector<std::int32_t>& seg, i64 b, i64 t, i64 i, i64 j) {
  return j <= i && (seg.empty() || seg[b * t + j] == seg[b * t + i]);
}

i64 q_at(const AttentionShape& s, i64 b, i64 t, i64 h) {
  return ((b * s.seq + t) * s.n_heads + h) * s.head_dim;
}
i64 kv_at(const AttentionShape& s, i64 b, i64 t, i64 h) {
  const i64 kvh = h / (s.n_heads / s.n_kv_heads);
  return ((b * s.seq + t) * s.n_kv_heads + kvh) * s.head_dim;
}

// Softmax probabilities of query i in double; zero where masked.
DVec ref_probs(const DVec& q, const DVec& k, const std::vector<std::int32_t>& seg,
               const AttentionShape& s, i64 b, i64 h, i64 i, double* lse = nullptr) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.head_dim));
  DVec p(static_cast<std::size_t>(s.seq), 0.0);
  double mx = -INFINITY;
  for (i64 j = 0; j < s.seq; ++j) {
    if (!visible(seg, b, s.seq, i, j)) continue;
    double d = 0.0;
    for (i64 c = 0; c < s.head_dim; ++c) d += q[q_at(s, b, i, h) + c] * k[kv_at(s, b, j, h) + c];
    p[j] = d * scale;
    mx = std::max(mx, p[j]);
  }
  double sum = 0.0;
  for (i64 j = 0; j < s.seq; ++j)
    if (visible(seg, b, s.seq, i, j)) sum += std::exp(p[j] - mx);
  for (i64 j = 0; j < s.seq; ++j)
    p[j] = visible(seg, b, s.seq, i, j) ? std::exp(p[j] - mx) / sum : 0.0;
  if (lse) *lse = mx + std::log(sum);
  return p;
}

AttnRef ref_attention(const DVec& q, const DVec& k, const DVec& v,
                      const std::vector<std::int32_t>& seg, const AttentionShape& s) {
  AttnRef r;
  r.out.assign(q.size(), 0.0);
  r.lse.assign(static_cast<std::size_t>(s.batch * s.n_heads * s.seq), 0.0);
  for (i64 b = 0; b < s.batch; ++b)
    for (i64 h = 0; h < s.n_heads; ++h)
      for (i64 i = 0; i < s.seq; ++i) {
        const DVec p = ref_probs(q, k, seg, s, b, h, i, &r.lse[(b * s.n_heads + h) * s.seq + i]);
        for (i64 j = 0; j < s.seq; ++j)
          for (i64 c = 0; c < s.head_dim; ++c)
            r.out[q_at(s, b, i, h) + c] += p[j] * v[kv_at(s, b, j, h) + c];
      }
  return r;
}

struct Grads {
  DVec dq, dk, dv;
};

// The straightforward fp64 backward: dP = dO V^T, dS = P (dP - sum_j P dP), by definition
// of the softmax Jacobian (not through rowsum(dO * O)).
Grads ref_attention_backward(const DVec& q, const DVec& k, const DVec& v, const DVec& dout,
                             const std::vector<std::int32_t>& seg, const AttentionShape& s) {
  Grads g{DVec(q.size(), 0.0), DVec(k.size(), 0.0), DVec(v.size(), 0.0)};
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.head_dim));
  const i64 T = s.seq, D = s.head_dim;
  for (i64 b = 0; b < s.batch; ++b)
    for (i64 h = 0; h < s.n_heads; ++h)
      for (i64 i = 0; i < T; ++i) {
        const DVec p = ref_probs(q, k, seg, s, b, h, i);
        DVec dp(static_cast<std::size_t>(T), 0.0);
        double pdp = 0.0;
        for (i64 j = 0; j < T; ++j) {
          for (i64 c = 0; c < D; ++c) {
            dp[j] += dout[q_at(s, b, i, h) + c] * v[kv_at(s, b, j, h) + c];
            g.dv[kv_at(s, b, j, h) + c] += p[j] * dout[q_at(s, b, i, h) + c];
          }
          pdp += p[j] * dp[j];
        }
        for (i64 j = 0; j < T; ++j) {
          const double ds = p[j] * (dp[j] - pdp) * scale;
          for (i64 c = 0; c < D; ++c) {
            g.dq[q_at(s, b, i, h) + c] += ds * k[kv_at(s, b, j, h) + c];
            g.dk[kv_at(s, b, j, h) + c] += ds * q[q_at(s, b, i, h) + c];
          }
        }
      }
  return g;
}

struct AttnCase {
  AttentionShape s;
  std::vector<std::int32_t> seg;
  Vec q, k, v, dout;
  AttnCase(AttentionShape shape, std::vector<std::int32_t> segments, std::uint32_t seed)
      : s(shape), seg(std::move(segments)) {
    std::mt19937 rng(seed);
    const i64 nq = s.batch * s.seq * s.n_heads * s.head_dim;
    const i64 nkv = s.batch * s.seq * s.n_kv_heads * s.head_dim;
    q = random_vec(rng, nq, 1.5f);
    k = random_vec(rng, nkv, 1.5f);
    v = random_vec(rng, nkv);
    dout = random_vec(rng, nq);
  }
  const std::int32_t* seg_ptr() const { return seg.empty() ? nullptr : seg.data(); }
};

// Forward and backward of one case against the fp64 reference; with `fd`, also against
// central differences of sum(out * dout) (and the reference backward against them).
void check_attention(const AttnCase& c, double rtol_bwd, bool fd, const std::string& what) {
  auto be = cpu();
  const DVec qd = to_double(c.q), kd = to_double(c.k), vd = to_double(c.v);
  const AttnRef ref = ref_attention(qd, kd, vd, c.seg, c.s);
  Vec out(c.q.size(), NAN), lse(ref.lse.size(), NAN);
  be->attention_forward(out.data(), lse.data(), c.q.data(), c.k.data(), c.v.data(), c.seg_ptr(),
                        c.s);
  expect_close(out, ref.out, 1e-5, what + " out");
  expect_close(lse, ref.lse, 1e-5, what + " lse");

  Vec dq(c.q.size(), NAN), dk(c.k.size(), NAN), dv(c.v.size(), NAN);
  be->attention_backward(dq.data(), dk.data(), dv.data(), c.dout.data(), out.data(), lse.data(),
                         c.q.data(), c.k.data(), c.v.data(), c.seg_ptr(), c.s);
  const Grads g = ref_attention_backward(qd, kd, vd, to_double(c.dout), c.seg, c.s);
  expect_close(dq, g.dq, rtol_bwd, what + " dq");
  expect_close(dk, g.dk, rtol_bwd, what + " dk");
  expect_close(dv, g.dv, rtol_bwd, what + " dv");
  if (!fd) return;
  const DVec dod = to_double(c.dout);
  const Grads f{
      finite_diff([&](const DVec& x) { return dot(ref_attention(x, kd, vd, c.seg, c.s).out, dod); },
                  qd),
      finite_diff([&](const DVec& x) { return dot(ref_attention(qd, x, vd, c.seg, c.s).out, dod); },
                  kd),
      finite_diff([&](const DVec& x) { return dot(ref_attention(qd, kd, x, c.seg, c.s).out, dod); },
                  vd)};
  expect_close(to_float(g.dq), f.dq, 1e-6, what + " reference dq vs FD");
  expect_close(to_float(g.dk), f.dk, 1e-6, what + " reference dk vs FD");
  expect_close(to_float(g.dv), f.dv, 1e-6, what + " reference dv vs FD");
  expect_close(dq, f.dq, 1e-4, what + " dq vs FD");
  expect_close(dk, f.dk, 1e-4, what + " dk vs FD");
  expect_close(dv, f.dv, 1e-4, what + " dv vs FD");
}

TEST(OpsAttention, MultiHeadOddSizes) {
  check_attention(AttnCase({2, 7, 4, 4, 6}, {}, 30), 1e-5, true, "MHA");
}

TEST(OpsAttention, GroupedQueryTwoKvHeads) {
  check_attention(AttnCase({2, 7, 4, 2, 6}, {}, 31), 1e-5, true, "GQA Hkv=2");
}

TEST(OpsAttention, GroupedQueryOneKvHead) {
  check_attention(AttnCase({1, 13, 4, 1, 18}, {}, 32), 1e-5, true, "GQA Hkv=1");
}

TEST(OpsAttention, Segments) {
  // Row 0: three documents; row 1: one document, then a second.
  const std::vector<std::int32_t> seg = {0, 0, 0, 1, 1, 2, 2, 2, 2, 5, 5, 5, 5, 5, 9, 9, 9, 9};
  check_attention(AttnCase({2, 9, 4, 2, 6}, seg, 33), 1e-5, true, "segments");
}

TEST(OpsAttention, LongerSequence) {
  std::vector<std::int32_t> seg(2 * 200);
  for (i64 i = 0; i < 400; ++i) seg[i] = static_cast<std::int32_t>(i < 61 ? 0 : i < 200 ? 1 : 2);
  check_attention(AttnCase({2, 200, 4, 2, 18}, seg, 34), 1e-4, false, "T=200");
}

// Decoding position i over a cache of positions 0..i gives row i of the full causal
// attention (and of the fp64 reference).
TEST(OpsAttention, DecodeMatchesFullAttentionRows) {
  auto be = cpu();
  const AttnCase c({1, 11, 4, 2, 18}, {}, 36);
  const i64 H = c.s.n_heads, D = c.s.head_dim;
  const AttnRef ref = ref_attention(to_double(c.q), to_double(c.k), to_double(c.v), c.seg, c.s);
  Vec out(c.q.size()), lse(static_cast<std::size_t>(H * c.s.seq));
  be->attention_forward(out.data(), lse.data(), c.q.data(), c.k.data(), c.v.data(), nullptr, c.s);
  for (i64 i = 0; i < c.s.seq; ++i) {
    Vec row(static_cast<std::size_t>(H * D));
    be->attention_decode(row.data(), c.q.data() + i * H * D, c.k.data(), c.v.data(), i + 1, H,
                         c.s.n_kv_heads, D);
    const DVec want(ref.out.begin() + i * H * D, ref.out.begin() + (i + 1) * H * D);
    expect_close(row, want, 1e-5, "decode position " + std::to_string(i));
    expect_close(row, to_double(Vec(out.begin() + i * H * D, out.begin() + (i + 1) * H * D)), 1e-6,
                 "decode vs forward at " + std::to_string(i));
  }
}

// Packed documents (positions restarting, rope applied) give the rows, lse and gradients
// that each document gives run alone as a batch of one.
TEST(OpsAttention, PackedDocumentsEqualDocumentsAlone) {
  auto be = cpu();
  const std::vector<i64> lens = {5, 1, 8, 3};
  std::vector<std::int32_t> seg, pos;
  for (std::size_t d = 0; d < lens.size(); ++d)
    for (i64 t = 0; t < lens[d]; ++t) {
      seg.push_back(static_cast<std::int32_t>(d));
      pos.push_back(static_cast<std::int32_t>(t));
    }
  const i64 T = static_cast<i64>(seg.size()), H = 4, Hkv = 2, D = 6;
  AttnCase packed({1, T, H, Hkv, D}, seg, 35);
  Vec inv_freq(D / 2);
  for (i64 i = 0; i < D / 2; ++i) inv_freq[i] = std::pow(10000.0f, -2.0f * i / D);
  const Vec q0 = packed.q, k0 = packed.k;  // before rope
  be->rope_forward(packed.q.data(), pos.data(), inv_freq.data(), T, H, D);
  be->rope_forward(packed.k.data(), pos.data(), inv_freq.data(), T, Hkv, D);

  struct Run {
    Vec out, lse, dq, dk, dv;
  };
  auto run = [&](const AttentionShape& s, const float* q, const float* k, const float* v,
                 const float* dout, const std::int32_t* sg) {
    const auto nq = static_cast<std::size_t>(s.seq * H * D);
    const auto nkv = static_cast<std::size_t>(s.seq * Hkv * D);
    Run r{Vec(nq), Vec(static_cast<std::size_t>(H * s.seq)), Vec(nq), Vec(nkv), Vec(nkv)};
    be->attention_forward(r.out.data(), r.lse.data(), q, k, v, sg, s);
    be->attention_backward(r.dq.data(), r.dk.data(), r.dv.data(), dout, r.out.data(), r.lse.data(),
                           q, k, v, sg, s);
    return r;
  };
  const Run all = run(packed.s, packed.q.data(), packed.k.data(), packed.v.data(),
                      packed.dout.data(), packed.seg_ptr());
  i64 start = 0;
  for (i64 len : lens) {
    const AttentionShape s{1, len, H, Hkv, D};
    // Rope of the document alone, from position 0.
    Vec q(q0.begin() + start * H * D, q0.begin() + (start + len) * H * D);
    Vec k(k0.begin() + start * Hkv * D, k0.begin() + (start + len) * Hkv * D);
    std::vector<std::int32_t> p(static_cast<std::size_t>(len));
    for (i64 t = 0; t < len; ++t) p[t] = static_cast<std::int32_t>(t);
    be->rope_forward(q.data(), p.data(), inv_freq.data(), len, H, D);
    be->rope_forward(k.data(), p.data(), inv_freq.data(), len, Hkv, D);
    const Run one = run(s, q.data(), k.data(), packed.v.data() + start * Hkv * D,
                        packed.dout.data() + start * H * D, nullptr);
    auto slice = [&](const Vec& v, i64 row_width) {
      return to_double(Vec(v.begin() + start * row_width, v.begin() + (start + len) * row_width));
    };
    DVec lse_all;
    for (i64 h = 0; h < H; ++h)
      for (i64 t = 0; t < len; ++t) lse_all.push_back(all.lse[h * T + start + t]);
    const std::string what = "document at " + std::to_string(start);
    expect_close(one.out, slice(all.out, H * D), 1e-6, what + " out");
    expect_close(one.lse, lse_all, 1e-6, what + " lse");
    // A one-token document's dq and dk are zero (its softmax is 1 whatever q and k): a
    // cancellation of terms of order one (dO·v less the row's dO·out), so each run's rounding
    // is judged on the packed gradients' scale, where one float rounding of those terms is
    // about 1.3e-6 of it (seen on an AVX-512 Xeon: 7.3e-8 against mean |dq| 0.058).
    expect_close(one.dq, slice(all.dq, H * D), 1e-5, what + " dq", mean_abs_of(all.dq));
    expect_close(one.dk, slice(all.dk, Hkv * D), 1e-5, what + " dk", mean_abs_of(all.dk));
    expect_close(one.dv, slice(all.dv, Hkv * D), 1e-6, what + " dv", mean_abs_of(all.dv));
    start += len;
  }
}

}  // namespace
}  // namespace anvil::test
