// The cross-entropy and optimizer kernels against the CPU backend and fp64 host math, on
// fresh random inputs each run (the seed is printed on failure). The host-side pieces
// (the AdamW element update, argument checks) are tested here without a GPU too.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"
#include "core/tensor.h"
#include "cross_entropy.cuh"
#include "cuda_check.cuh"
#include "gpu_test_util.h"
#include "optim.cuh"

namespace anvil {
namespace {

using i64 = std::int64_t;
constexpr float kEps = std::numeric_limits<float>::epsilon();

// A device array that frees itself; poison() fills it with 0xFF bytes (NaN for floats and
// doubles) so that an element a kernel forgets to write cannot pass.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(i64 n) : n_(n) { CUDA_CHECK(cudaMalloc(&p_, bytes() > 0 ? bytes() : 1)); }
  ~DeviceBuffer() { cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() const { return p_; }
  std::size_t bytes() const { return static_cast<std::size_t>(n_) * sizeof(T); }
  void upload(const std::vector<T>& h) {
    ANVIL_CHECK(static_cast<i64>(h.size()) == n_, "upload size");
    CUDA_CHECK(cudaMemcpy(p_, h.data(), bytes(), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> h(static_cast<std::size_t>(n_));
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaMemcpy(h.data(), p_, bytes(), cudaMemcpyDeviceToHost));
    return h;
  }
  void poison() { CUDA_CHECK(cudaMemset(p_, 0xFF, bytes())); }

 private:
  T* p_ = nullptr;
  i64 n_ = 0;
};

// Distance in representable floats (0: identical; NaN: as far as it gets).
i64 ulp_distance(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<i64>::max();
  auto key = [](float x) {
    std::int32_t i;
    std::memcpy(&i, &x, sizeof i);
    return i < 0 ? -static_cast<i64>(i & 0x7fffffff) : static_cast<i64>(i);
  };
  const i64 d = key(a) - key(b);
  return d < 0 ? -d : d;
}

std::vector<float> normal_floats(std::mt19937& rng, i64 n, float sigma) {
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

// ---- cross-entropy ----------------------------------------------------------------------

// Logits (rows, vocab) = hidden W^T made by the CPU backend, as the LM head makes them.
struct CeProblem {
  i64 rows = 0, vocab = 0, C = 0;
  std::vector<float> hidden, w, logits;
  std::vector<std::int32_t> targets;
};

CeProblem make_problem(std::mt19937& rng, backend::Backend& cpu, i64 rows, i64 vocab, i64 C) {
  CeProblem p{rows, vocab, C, normal_floats(rng, rows * C, 1.0f),
              normal_floats(rng, vocab * C, 3.0f / std::sqrt(static_cast<float>(C))), {}, {}};
  p.logits.resize(static_cast<std::size_t>(rows * vocab));
  const TensorView w{p.w.data(), DType::dtype_f32, Shape{vocab, C}};
  cpu.linear_forward(p.logits.data(), p.hidden.data(), w, nullptr, rows, 0.0f);
  std::uniform_int_distribution<std::int32_t> tok(0, static_cast<std::int32_t>(vocab - 1));
  std::bernoulli_distribution ignored(0.25);
  for (i64 i = 0; i < rows; ++i)
    p.targets.push_back(i > 0 && (i == 1 || ignored(rng)) ? kernels::kIgnoreIndex : tok(rng));
  return p;
}

// fp64 truth from the fp32 logits: the loss sum and dlogits = (softmax - onehot) * g.
struct CeReference {
  double loss = 0.0;
  // Worst-case rounding of the fp32 steps in the loss: per row, each exp term is off by
  // its fp32 rounding (a few ulp) plus that of l - m (|l - m| / 2 ulp), weighted by p.
  double loss_tol = 0.0;
  std::vector<double> dlogits, prob;  // (rows, vocab)
  std::vector<float> row_max;
};

CeReference reference(const CeProblem& p, float g) {
  CeReference r;
  r.dlogits.assign(p.logits.size(), 0.0);
  r.prob.assign(p.logits.size(), 0.0);
  r.row_max.assign(static_cast<std::size_t>(p.rows), 0.0f);
  for (i64 i = 0; i < p.rows; ++i) {
    if (p.targets[i] == kernels::kIgnoreIndex) continue;
    const float* l = p.logits.data() + i * p.vocab;
    const float m = *std::max_element(l, l + p.vocab);
    double s = 0.0;
    for (i64 j = 0; j < p.vocab; ++j) s += std::exp(static_cast<double>(l[j]) - m);
    r.loss += m + std::log(s) - l[p.targets[i]];
    r.row_max[i] = m;
    double row_tol = 2.0;
    for (i64 j = 0; j < p.vocab; ++j) {
      const double pj = std::exp(static_cast<double>(l[j]) - m) / s;
      row_tol += pj * (std::abs(static_cast<double>(l[j]) - m) / 2.0 + 3.0);
      r.prob[i * p.vocab + j] = pj;
      r.dlogits[i * p.vocab + j] = (pj - (j == p.targets[i] ? 1.0 : 0.0)) * g;
    }
    r.loss_tol += row_tol * kEps;
  }
  return r;
}

// The same formulas in fp32 as the CPU backend writes them: the "straightforward
// implementation in the same precision" whose error sets the noise level.
std::vector<float> straightforward_dlogits(const CeProblem& p, const CeReference& r, float g) {
  std::vector<float> d(p.logits.size(), 0.0f);
  for (i64 i = 0; i < p.rows; ++i) {
    if (p.targets[i] == kernels::kIgnoreIndex) continue;
    const float* l = p.logits.data() + i * p.vocab;
    const float m = r.row_max[i];
    double s = 0.0;
    for (i64 j = 0; j < p.vocab; ++j) s += std::exp(l[j] - m);
    const auto inv = static_cast<float>(1.0 / s);
    for (i64 j = 0; j < p.vocab; ++j) {
      const float pj = std::exp(l[j] - m) * inv;
      d[i * p.vocab + j] = (j == p.targets[i] ? pj - 1.0f : pj) * g;
    }
  }
  return d;
}

// What one vocabulary shard's rank gets back from the three phases.
struct ShardResult {
  double loss_added = 0.0;
  std::vector<float> dlogits;  // (rows, V)
};

// Runs the three phases for the shards [bounds[k], bounds[k+1]) of the vocabulary, each on
// its own device buffers, combining the row maxima and sums on the host between phases as
// the vocab-parallel group does (one shard: the combination is the identity). Checks the
// per-shard statistics against host math on the way.
std::vector<ShardResult> run_shards(const CeProblem& p, const std::vector<i64>& bounds, float g) {
  const i64 rows = p.rows, n_shards = static_cast<i64>(bounds.size()) - 1;
  std::vector<std::unique_ptr<DeviceBuffer<float>>> logits, row_max;
  std::vector<std::unique_ptr<DeviceBuffer<double>>> sums, loss;
  std::vector<std::unique_ptr<DeviceBuffer<std::int32_t>>> bad;
  DeviceBuffer<std::int32_t> targets(rows);
  targets.upload(p.targets);
  std::vector<float> max_all(static_cast<std::size_t>(rows), -INFINITY);
  for (i64 k = 0; k < n_shards; ++k) {
    const i64 first = bounds[k], V = bounds[k + 1] - first;
    std::vector<float> block(static_cast<std::size_t>(rows * V));
    for (i64 i = 0; i < rows; ++i)
      std::copy_n(p.logits.data() + i * p.vocab + first, V, block.data() + i * V);
    logits.push_back(std::make_unique<DeviceBuffer<float>>(rows * V));
    logits[k]->upload(block);
    row_max.push_back(std::make_unique<DeviceBuffer<float>>(rows));
    row_max[k]->poison();
    kernels::cross_entropy_row_max(row_max[k]->get(), logits[k]->get(), targets.get(), rows, V,
                                   nullptr);
    const std::vector<float> m = row_max[k]->download();
    for (i64 i = 0; i < rows; ++i) {
      const float* l = block.data() + i * V;
      const float want = p.targets[i] == kernels::kIgnoreIndex ? 0.0f : *std::max_element(l, l + V);
      EXPECT_EQ(m[i], want) << "shard " << k << " row " << i;  // a max is exact
      max_all[i] = std::max(max_all[i], m[i]);
    }
  }
  std::vector<double> sums_all(static_cast<std::size_t>(2 * rows), 0.0);
  for (i64 k = 0; k < n_shards; ++k) {
    const i64 first = bounds[k], V = bounds[k + 1] - first;
    row_max[k]->upload(max_all);
    sums.push_back(std::make_unique<DeviceBuffer<double>>(2 * rows));
    sums[k]->poison();
    bad.push_back(std::make_unique<DeviceBuffer<std::int32_t>>(1));
    bad[k]->upload({0});
    kernels::cross_entropy_row_sums(sums[k]->get(), logits[k]->get(), row_max[k]->get(),
                                    targets.get(), rows, V, first, p.vocab, bad[k]->get(),
                                    nullptr);
    const std::vector<double> s = sums[k]->download();
    EXPECT_EQ(bad[k]->download()[0], 0) << "shard " << k;
    for (i64 i = 0; i < rows; ++i) {
      double want = 0.0, want_target = 0.0;
      if (p.targets[i] != kernels::kIgnoreIndex) {
        const float* l = p.logits.data() + i * p.vocab + first;
        // l - m rounded in fp32 as the kernel does: what is left is fp32 exp's few ulp.
        for (i64 j = 0; j < V; ++j) want += std::exp(static_cast<double>(l[j] - max_all[i]));
        const i64 t = p.targets[i] - first;
        if (t >= 0 && t < V) want_target = l[t];
      }
      // Each fp32 exp is within a few ulp: the sum of positive terms is too, relatively.
      EXPECT_NEAR(s[i], want, 4.0 * kEps * want) << "shard " << k << " row " << i;
      EXPECT_EQ(s[rows + i], want_target) << "shard " << k << " row " << i;
      sums_all[i] += s[i];
      sums_all[rows + i] += s[rows + i];
    }
  }
  std::uniform_real_distribution<double> base_dist(-10.0, 10.0);
  std::mt19937 rng(std::random_device{}());
  std::vector<ShardResult> out;
  for (i64 k = 0; k < n_shards; ++k) {
    const i64 first = bounds[k], V = bounds[k + 1] - first;
    sums[k]->upload(sums_all);
    const double base = base_dist(rng);  // the kernel adds into whatever is there
    loss.push_back(std::make_unique<DeviceBuffer<double>>(1));
    loss[k]->upload({base});
    kernels::cross_entropy_loss_grad(logits[k]->get(), loss[k]->get(), row_max[k]->get(),
                                     sums[k]->get(), targets.get(), rows, V, first, g, true,
                                     nullptr);
    out.push_back({loss[k]->download()[0] - base, logits[k]->download()});
  }
  return out;
}

// Checks one shard's dlogits against the fp64 reference: elementwise within the rounding
// of its few fp32 steps (the exponent's rounding grows with |l - m|), and as a whole within
// 2x the error of the straightforward fp32 formula.
void expect_dlogits(const CeProblem& p, const CeReference& r, const std::vector<float>& straight,
                    const std::vector<float>& got, i64 first, i64 V, float g) {
  double err_got = 0.0, err_straight = 0.0, norm_ref = 0.0;
  int reported = 0;
  for (i64 i = 0; i < p.rows; ++i)
    for (i64 j = 0; j < V; ++j) {
      const i64 full = i * p.vocab + first + j;
      const double want = r.dlogits[full], have = got[i * V + j];
      err_got += (have - want) * (have - want);
      err_straight += (straight[full] - want) * (straight[full] - want);
      norm_ref += want * want;
      const double spread = std::abs(static_cast<double>(p.logits[full]) - r.row_max[i]);
      const double tol = (spread + 24.0) * kEps * r.prob[full] * std::abs(g) +
                         2.0 * kEps * std::abs(want) + 1e-37;
      if (!(std::abs(have - want) <= tol) && reported++ < 5)
        ADD_FAILURE() << "row " << i << " col " << first + j << ": " << have << " vs " << want
                      << " (tol " << tol << ")";
    }
  EXPECT_LE(std::sqrt(err_got), 2.0 * std::sqrt(err_straight) + kEps * std::sqrt(norm_ref));
}

void expect_loss(double got, double want, const CeReference& r) {
  EXPECT_NEAR(got, want, r.loss_tol + 1e-12 * std::abs(want));
}

TEST(GpuCrossEntropy, FullVocabularyMatchesCpuBackend) {
  ANVIL_REQUIRE_GPU();
  const std::uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  auto cpu = backend::make_cpu_backend();
  struct Size { i64 rows, vocab, C; };
  for (const Size s : {Size{1, 1, 8}, Size{5, 1001, 16}, Size{64, 32000, 32},
                       Size{3, 131072 + 17, 16}}) {
    SCOPED_TRACE(testing::Message() << "rows " << s.rows << " V " << s.vocab);
    const CeProblem p = make_problem(rng, *cpu, s.rows, s.vocab, s.C);
    const float g = 1.0f / static_cast<float>(s.rows) * 1.7f;
    const CeReference r = reference(p, g);
    const std::vector<ShardResult> got = run_shards(p, {0, s.vocab}, g);
    expect_loss(got[0].loss_added, r.loss, r);
    expect_dlogits(p, r, straightforward_dlogits(p, r, g), got[0].dlogits, 0, s.vocab, g);

    // The CPU backend's whole op: its loss, and its dhidden against dlogits_gpu W.
    std::vector<float> dhidden(static_cast<std::size_t>(s.rows * s.C));
    const TensorView w{const_cast<float*>(p.w.data()), DType::dtype_f32, Shape{s.vocab, s.C}};
    const double cpu_loss = cpu->lm_head_cross_entropy(dhidden.data(), p.hidden.data(), w,
                                                       p.targets.data(), s.rows, g);
    expect_loss(got[0].loss_added, cpu_loss, r);
    for (i64 i = 0; i < s.rows; ++i)
      for (i64 c = 0; c < s.C; ++c) {
        double dot = 0.0, mag = 0.0;
        for (i64 j = 0; j < s.vocab; ++j) {
          const double term = static_cast<double>(got[0].dlogits[i * s.vocab + j]) * p.w[j * s.C + c];
          dot += term;
          mag += std::abs(term);
        }
        // The CPU's own fp32 dlogits (a few ulp each, more where |l - m| is large) and
        // its fp32 GEMM's rounding, which grows like sqrt(V).
        const double tol = (2.0 * std::sqrt(static_cast<double>(s.vocab)) + 40.0) * kEps * mag;
        ASSERT_NEAR(dhidden[i * s.C + c], dot, tol + 1e-30) << "row " << i << " col " << c;
      }
  }
}

// Three shards of an odd vocabulary, the middle and last starting past 0: each rank's
// gradient is its columns of the full softmax, and each rank's loss is the whole loss.
TEST(GpuCrossEntropy, VocabularyShardsMatchFullSoftmax) {
  ANVIL_REQUIRE_GPU();
  const std::uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  auto cpu = backend::make_cpu_backend();
  const CeProblem p = make_problem(rng, *cpu, 37, 1001, 16);
  const float g = 0.031f;
  const CeReference r = reference(p, g);
  const std::vector<float> straight = straightforward_dlogits(p, r, g);
  const std::vector<i64> bounds = {0, 300, 700, 1001};
  const std::vector<ShardResult> got = run_shards(p, bounds, g);
  for (std::size_t k = 0; k + 1 < bounds.size(); ++k) {
    SCOPED_TRACE(testing::Message() << "shard " << k);
    expect_loss(got[k].loss_added, r.loss, r);
    expect_dlogits(p, r, straight, got[k].dlogits, bounds[k], bounds[k + 1] - bounds[k], g);
  }
}

// All rows ignored: the loss is untouched and the gradient is zero.
TEST(GpuCrossEntropy, IgnoredRowsGiveZero) {
  ANVIL_REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  auto cpu = backend::make_cpu_backend();
  CeProblem p = make_problem(rng, *cpu, 4, 257, 8);
  std::fill(p.targets.begin(), p.targets.end(), kernels::kIgnoreIndex);
  const std::vector<ShardResult> got = run_shards(p, {0, 257}, 0.5f);
  EXPECT_EQ(got[0].loss_added, 0.0);
  for (float d : got[0].dlogits) ASSERT_EQ(d, 0.0f);
}

TEST(GpuCrossEntropy, TargetOutsideVocabularySetsFlag) {
  ANVIL_REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  const i64 rows = 5, vocab = 1001, first = 400, V = 300;  // the shard [400, 700)
  DeviceBuffer<float> logits(rows * V), row_max(rows);
  DeviceBuffer<double> sums(2 * rows);
  DeviceBuffer<std::int32_t> targets(rows), bad(1);
  logits.upload(normal_floats(rng, rows * V, 2.0f));
  // Outside the shard but inside the vocabulary is fine; the edges are checked too.
  const std::vector<std::vector<std::int32_t>> cases = {
      {0, 1000, -100, 399, 700}, {3, 1001, -100, 5, 6}, {3, 4, -7, 5, 6}, {-100, 2, 3, -1, 9}};
  const std::vector<std::int32_t> want = {0, 1, 1, 1};
  for (std::size_t c = 0; c < cases.size(); ++c) {
    targets.upload(cases[c]);
    bad.upload({0});
    kernels::cross_entropy_row_max(row_max.get(), logits.get(), targets.get(), rows, V, nullptr);
    kernels::cross_entropy_row_sums(sums.get(), logits.get(), row_max.get(), targets.get(), rows,
                                    V, first, vocab, bad.get(), nullptr);
    EXPECT_EQ(bad.download()[0], want[c]) << "case " << c;
  }
}

// Host-side: the launchers refuse impossible shapes before touching the device.
TEST(CrossEntropyLaunch, RejectsBadArguments) {
  float f = 0.0f;
  double d = 0.0;
  std::int32_t t = 0;
  EXPECT_THROW(kernels::cross_entropy_row_max(&f, &f, &t, 1, 0, nullptr), Error);
  EXPECT_THROW(kernels::cross_entropy_row_max(&f, &f, &t, -1, 4, nullptr), Error);
  EXPECT_THROW(
      kernels::cross_entropy_row_sums(&d, &f, &f, &t, 1, 10, 5, 12, &t, nullptr), Error);
  EXPECT_THROW(kernels::cross_entropy_row_sums(&d, &f, &f, &t, 1, 10, -1, 12, &t, nullptr),
               Error);
  EXPECT_THROW(kernels::cross_entropy_row_sums(&d, &f, &f, &t, 1, 10, 0, 10, nullptr, nullptr),
               Error);
  EXPECT_THROW(kernels::cross_entropy_loss_grad(&f, nullptr, &f, &d, &t, 1, 10, 0, 1.0f, true,
                                                nullptr),
               Error);
}

// ---- optimizer ----------------------------------------------------------------------------

kernels::AdamwParams to_params(const backend::AdamwArgs& a) {
  return {a.lr, a.beta1, a.beta2, a.eps, a.weight_decay, a.step};
}

// x86-64's baseline has no FMA, so the CPU backend rounds every product and sum as the
// kernel's element update does: equal bits. Elsewhere a compiler may fuse: allow 2 ulp.
#if defined(__x86_64__)
constexpr i64 kAdamwUlp = 0;
#else
constexpr i64 kAdamwUlp = 2;
#endif

void expect_ulp(const std::vector<float>& got, const std::vector<float>& want, i64 max_ulp,
                const char* what) {
  i64 worst = 0;
  std::size_t at = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const i64 d = ulp_distance(got[i], want[i]);
    if (d > worst) worst = d, at = i;
  }
  EXPECT_LE(worst, max_ulp) << what << "[" << at << "]: " << got[at] << " vs " << want[at];
}

// Three steps of AdamW with weight decay, fresh gradients each step.
template <typename Step>
void adamw_three_steps(std::mt19937& rng, i64 n, Step&& step) {
  auto cpu = backend::make_cpu_backend();
  std::vector<float> p = normal_floats(rng, n, 1.0f), m(n, 0.0f), v(n, 0.0f);
  std::vector<float> p_ref = p, m_ref = m, v_ref = v;
  std::uniform_real_distribution<float> lr(1e-4f, 1e-2f);
  for (std::int64_t t = 1; t <= 3; ++t) {
    const std::vector<float> g = normal_floats(rng, n, 1e-2f);
    backend::AdamwArgs a;
    a.lr = lr(rng);
    a.weight_decay = 0.01f * static_cast<float>(t);
    a.beta2 = t == 2 ? 0.95f : 0.999f;
    a.step = t;
    cpu->adamw_update(p_ref.data(), g.data(), m_ref.data(), v_ref.data(), n, a);
    step(p, g, m, v, to_params(a));
  }
  expect_ulp(p, p_ref, kAdamwUlp, "p");
  expect_ulp(m, m_ref, kAdamwUlp, "m");
  expect_ulp(v, v_ref, kAdamwUlp, "v");
}

TEST(AdamwElement, HostUpdateMatchesCpuBackend) {
  const std::uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  adamw_three_steps(rng, 4099, [](std::vector<float>& p, const std::vector<float>& g,
                                  std::vector<float>& m, std::vector<float>& v,
                                  const kernels::AdamwParams& a) {
    const kernels::AdamwScalars s = kernels::adamw_scalars(a);
    for (std::size_t i = 0; i < p.size(); ++i) kernels::adamw_apply(p[i], g[i], m[i], v[i], s);
  });
}

TEST(AdamwElement, ScalarsRejectStepZero) {
  kernels::AdamwParams a;
  a.step = 0;
  EXPECT_THROW(kernels::adamw_scalars(a), Error);
}

TEST(GpuOptim, AdamwMatchesCpuBackend) {
  ANVIL_REQUIRE_GPU();
  const std::uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  for (const i64 n : {i64{1}, i64{1001}, (i64{1} << 20) + 3}) {
    SCOPED_TRACE(testing::Message() << "n " << n);
    DeviceBuffer<float> dp(n), dg(n), dm(n), dv(n);
    adamw_three_steps(rng, n, [&](std::vector<float>& p, const std::vector<float>& g,
                                  std::vector<float>& m, std::vector<float>& v,
                                  const kernels::AdamwParams& a) {
      dp.upload(p);
      dg.upload(g);
      dm.upload(m);
      dv.upload(v);
      kernels::adamw_update(dp.get(), dg.get(), dm.get(), dv.get(), n, a, nullptr);
      p = dp.download();
      m = dm.download();
      v = dv.download();
    });
  }
}

TEST(GpuOptim, SumSquaresMatchesDoubleSumAndIsDeterministic) {
  ANVIL_REQUIRE_GPU();
  const std::uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  auto cpu = backend::make_cpu_backend();
  std::vector<i64> sizes = {0, 1, 255, 257, 1001, i64{2048} * 1024 + 5};  // the last: capped partials
#ifndef ANVIL_CUDA_EMU  // a 32 MB vector takes the emulator too long for every CI run
  sizes.push_back((i64{1} << 23) + 7);
#endif
  for (const i64 n : sizes) {
    SCOPED_TRACE(testing::Message() << "n " << n);
    const std::vector<float> x = normal_floats(rng, n, 0.3f);
    long double want = 0.0L;  // each fp32 square is exact in double
    for (float xi : x) want += static_cast<long double>(static_cast<double>(xi) * xi);
    DeviceBuffer<float> dx(n);
    if (n > 0) dx.upload(x);
    DeviceBuffer<double> out(1);
    DeviceBuffer<unsigned char> work(static_cast<i64>(kernels::sum_squares_workspace_bytes(n)));
    std::vector<double> runs;
    for (int r = 0; r < 2; ++r) {
      out.poison();
      work.poison();
      kernels::sum_squares(out.get(), dx.get(), n, work.get(), nullptr);
      runs.push_back(out.download()[0]);
    }
    EXPECT_NEAR(runs[0], static_cast<double>(want), 1e-13 * static_cast<double>(want));
    EXPECT_NEAR(runs[0], cpu->sum_squares(x.data(), n), 1e-13 * static_cast<double>(want));
    EXPECT_EQ(std::memcmp(&runs[0], &runs[1], sizeof(double)), 0) << "not deterministic";
  }
}

TEST(SumSquaresWorkspace, BoundedAndGrowing) {
  EXPECT_GE(kernels::sum_squares_workspace_bytes(0), sizeof(double));
  std::size_t last = 0;
  for (i64 n = 1; n < (i64{1} << 40); n *= 3) {
    const std::size_t b = kernels::sum_squares_workspace_bytes(n);
    EXPECT_GE(b, last);
    EXPECT_LE(b, 1024 * sizeof(double));
    last = b;
  }
}

TEST(GpuOptim, ScaleIsOneRoundedProduct) {
  ANVIL_REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<float> sd(0.05f, 2.0f);
  for (const i64 n : {i64{1}, i64{1001}, (i64{1} << 20) + 3}) {
    const std::vector<float> x = normal_floats(rng, n, 1.0f);
    const float s = sd(rng);
    DeviceBuffer<float> dx(n);
    dx.upload(x);
    kernels::scale(dx.get(), s, n, nullptr);
    const std::vector<float> got = dx.download();
    for (i64 i = 0; i < n; ++i) ASSERT_EQ(got[i], x[i] * s) << "n " << n << " i " << i;
  }
}

}  // namespace
}  // namespace anvil
