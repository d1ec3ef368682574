// The CUDA backend against the CPU backend through the Backend interface: every op on
// fresh random inputs (the seed is printed), odd shapes, outputs poisoned with NaN first.
// fp32 ops must agree to a few fp32 ulps of the result's magnitude; products that run in
// bf16 (linear layers, LM head, LoRA, attention) are judged against their precision: the
// linear layers against a host implementation in the same precision (tolerance relative
// to noise), the fused ops by a bf16-sized bound (their kernels' own tests are tighter).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/blas_api.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/philox.h"
#include "gpu_test_util.h"
#include "quant/quant_state.h"

namespace anvil::backend {
namespace {

std::mt19937_64& rng() { return test::gpu_rng(); }
std::vector<float> normal(i64 n, float stddev = 1.0f) { return test::gpu_normal(n, stddev); }

std::vector<std::int32_t> ints(i64 n, std::int32_t lo, std::int32_t hi) {
  std::uniform_int_distribution<std::int32_t> dist(lo, hi);
  std::vector<std::int32_t> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = dist(rng());
  return v;
}

// Values exactly representable in bf16, so both backends read the same weights.
std::vector<float> bf16_exact(std::vector<float> v) {
  for (auto& x : v) x = bf16_to_f32(f32_to_bf16(x));
  return v;
}

std::vector<std::uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<std::uint16_t> h(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) h[i] = f32_to_bf16(v[i]);
  return h;
}

// Backend memory holding a copy of a host vector, freed with the buffer.
template <typename T>
class Buf {
 public:
  Buf(Backend& be, const std::vector<T>& h) : be_(be), n_(h.size()) {
    p_ = static_cast<T*>(be_.memory_alloc(bytes()));
    upload(h);
  }
  ~Buf() { be_.memory_free(p_); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  T* get() const { return p_; }
  std::size_t bytes() const { return n_ * sizeof(T); }
  void upload(const std::vector<T>& h) { be_.copy_from_host(p_, h.data(), bytes()); }
  void poison() { upload(std::vector<T>(n_, std::numeric_limits<T>::quiet_NaN())); }
  std::vector<T> download() const {
    std::vector<T> h(n_);
    be_.copy_to_host(h.data(), p_, bytes());
    return h;
  }

 private:
  Backend& be_;
  std::size_t n_;
  T* p_ = nullptr;
};

// The same host data on both backends.
template <typename T>
struct Pair {
  Pair(Backend& cpu, Backend& gpu, const std::vector<T>& h) : c(cpu, h), g(gpu, h) {}
  void poison() {
    c.poison();
    g.poison();
  }
  Buf<T> c, g;
};

double max_abs(const std::vector<float>& v) {
  double m = 0.0;
  for (float x : v) m = std::max(m, std::fabs(static_cast<double>(x)));
  return m;
}

// Largest |got - ref|; a non-finite value counts as infinitely wrong.
double max_err(const std::vector<float>& got, const std::vector<float>& ref) {
  double e = 0.0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    e = std::max(e, std::fabs(static_cast<double>(got[i]) - ref[i]));
  }
  return e;
}

// |gpu - cpu| within `rel` of the result's largest magnitude.
void expect_close(const Pair<float>& p, double rel, const std::string& what) {
  const std::vector<float> ref = p.c.download(), got = p.g.download();
  const double err = max_err(got, ref), mag = max_abs(ref);
  EXPECT_LE(err, rel * mag + 1e-30) << what << ": max error " << err << " at magnitude " << mag;
}

constexpr double kF32 = 2e-5;   // fp32 ops: a few ulps of the magnitude, any summation order
constexpr double kBf16 = 2e-2;  // products with bf16 inputs and fp32 accumulation

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ANVIL_REQUIRE_GPU();
    gpu_ = make_cuda_backend(0);
    cpu_ = make_cpu_backend();
  }
  template <typename T>
  Pair<T> pair(const std::vector<T>& h) {
    return Pair<T>(*cpu_, *gpu_, h);
  }
  Backend& cpu() { return *cpu_; }
  Backend& gpu() { return *gpu_; }

 private:
  std::unique_ptr<Backend> cpu_, gpu_;
};

// Runs without a GPU: the runtime reports no device, which is the user's to fix.
// cuBLAS is opened with dlopen, not linked; the libraries load (and every function the
// backend calls resolves) without a device, so this runs on any machine of the CUDA build.
TEST(CudaBlasApi, LoadsAndResolvesEveryFunction) {
  const BlasApi& api = blas_api();
  EXPECT_NE(api.cublasLtMatmul, nullptr);
  EXPECT_NE(api.cublasSgemm, nullptr);
  const char* status = api.cublasGetStatusString(CUBLAS_STATUS_NOT_INITIALIZED);  // the library answers
  ASSERT_NE(status, nullptr);
  EXPECT_NE(std::string(status).find("initialized"), std::string::npos) << status;
  EXPECT_EQ(&blas_api(), &api);  // loaded once
}

TEST(CudaBackendDevice, MissingDeviceIsAUserError) {
  try {
    (void)make_cuda_backend(99);
    FAIL() << "make_cuda_backend(99) returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user);
    EXPECT_NE(std::string(e.what()).find("CUDA device 99 does not exist"), std::string::npos)
        << e.what();
  }
}

TEST_F(CudaBackendTest, MemoryRoundTrip) {
  EXPECT_TRUE(gpu().on_device());
  EXPECT_STREQ(gpu().name(), "cuda");
  const std::size_t n = 1001;
  auto* a = static_cast<std::uint8_t*>(gpu().memory_alloc(n));
  auto* b = static_cast<std::uint8_t*>(gpu().memory_alloc(n));
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a) % 64, 0u);
  std::vector<std::uint8_t> h(n, 0xAB);
  gpu().copy_to_host(h.data(), a, n);
  EXPECT_EQ(std::count(h.begin(), h.end(), 0), static_cast<long>(n)) << "memory_alloc zeroes";
  std::vector<std::uint8_t> pattern(n);
  for (std::size_t i = 0; i < n; ++i) pattern[i] = static_cast<std::uint8_t>(rng()());
  gpu().copy_from_host(a, pattern.data(), n);
  gpu().copy(b, a, n);
  gpu().fill_zero(a + 100, 50);
  gpu().copy_to_host(h.data(), b, n);
  EXPECT_EQ(h, pattern);
  gpu().copy_to_host(h.data(), a, n);
  for (std::size_t i = 0; i < n; ++i)
    ASSERT_EQ(h[i], i >= 100 && i < 150 ? 0 : pattern[i]) << "byte " << i;
  gpu().synchronize();
  gpu().memory_free(a);
  gpu().memory_free(b);
}

TEST_F(CudaBackendTest, WeightPlaceMakesBf16MatricesAndF32Vectors) {
  const std::vector<float> w = normal(7 * 9);
  const std::vector<std::uint16_t> expect = to_bf16(w);
  auto download_u16 = [&](const TensorView& v) {
    std::vector<std::uint16_t> h(static_cast<std::size_t>(v.numel()));
    gpu().copy_to_host(h.data(), v.data, h.size() * 2);
    return h;
  };
  const TensorView from_f32 =
      gpu().weight_place({const_cast<float*>(w.data()), DType::dtype_f32, Shape{7, 9}});
  EXPECT_EQ(from_f32.dtype, DType::dtype_bf16);
  EXPECT_EQ(from_f32.shape, (Shape{7, 9}));
  EXPECT_EQ(download_u16(from_f32), expect);
  // bf16 bits at an odd address (a mapped file gives no alignment promise): copied as they are.
  std::vector<std::uint8_t> bytes(expect.size() * 2 + 1);
  std::memcpy(bytes.data() + 1, expect.data(), expect.size() * 2);
  const TensorView from_bf16 =
      gpu().weight_place({bytes.data() + 1, DType::dtype_bf16, Shape{7, 9}});
  EXPECT_EQ(download_u16(from_bf16), expect);
  // Vectors (norm weights) become f32: a bf16 one exactly widened.
  const std::vector<std::uint16_t> vec_bits = to_bf16(normal(33));
  const TensorView vec = gpu().weight_place(
      {const_cast<std::uint16_t*>(vec_bits.data()), DType::dtype_bf16, Shape{33}});
  EXPECT_EQ(vec.dtype, DType::dtype_f32);
  std::vector<float> got(33);
  gpu().copy_to_host(got.data(), vec.data, 33 * 4);
  for (std::size_t i = 0; i < 33; ++i) EXPECT_EQ(got[i], bf16_to_f32(vec_bits[i]));
}

TEST_F(CudaBackendTest, GemmAllTransposes) {
  const i64 m = 13, n = 17, k = 19, pad = 3;
  for (const bool ta : {false, true})
    for (const bool tb : {false, true}) {
      const i64 lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
      auto a = pair(normal((ta ? k : m) * lda));
      auto b = pair(normal((tb ? n : k) * ldb));
      auto c = pair(normal(m * ldc));
      for (Backend* be : {&cpu(), &gpu()}) {
        const bool on_gpu = be == &gpu();
        be->gemm(ta, tb, m, n, k, 0.7f, (on_gpu ? a.g : a.c).get(), lda, (on_gpu ? b.g : b.c).get(),
                 ldb, 0.5f, (on_gpu ? c.g : c.c).get(), ldc);
      }
      expect_close(c, kF32, "gemm ta=" + std::to_string(ta) + " tb=" + std::to_string(tb));
    }
}

// The GPU rounds the activation to bf16 and accumulates in fp32 (cuBLASLt); so does the
// host `naive` here. The GPU's distance from the CPU backend (fp32, unrounded input) may be
// at most twice the naive one's, plus a floor of fp32 ulps.
void expect_linear_noise(const std::vector<float>& gpu_out, const std::vector<float>& cpu_out,
                         const std::vector<float>& naive, const std::string& what) {
  const double noise = max_err(naive, cpu_out), err = max_err(gpu_out, cpu_out);
  EXPECT_LE(err, 2.0 * noise + 1e-5 * max_abs(cpu_out)) << what << ": noise " << noise;
}

TEST_F(CudaBackendTest, LinearForwardAndBackwardInputWithBf16Weights) {
  const i64 m = 37, in = 83, out = 51;
  const std::vector<float> w = bf16_exact(normal(out * in, 0.1f));
  const std::vector<std::uint16_t> wb = to_bf16(w);
  const TensorView w_host{const_cast<std::uint16_t*>(wb.data()), DType::dtype_bf16, Shape{out, in}};
  const TensorView w_gpu = gpu().weight_place(w_host);
  const std::vector<float> xh = normal(m * in), y0 = normal(m * out), bias_h = normal(out);
  auto x = pair(xh);
  auto bias = pair(bias_h);
  for (const float beta : {0.0f, 1.0f}) {
    auto y = pair(y0);
    if (beta == 0.0f) y.poison();
    cpu().linear_forward(y.c.get(), x.c.get(), w_host, bias.c.get(), m, beta);
    gpu().linear_forward(y.g.get(), x.g.get(), w_gpu, bias.g.get(), m, beta);
    std::vector<float> naive(static_cast<std::size_t>(m * out));
    for (i64 i = 0; i < m; ++i)
      for (i64 o = 0; o < out; ++o) {
        float acc = 0.0f;
        for (i64 j = 0; j < in; ++j)
          acc += bf16_to_f32(f32_to_bf16(xh[i * in + j])) * w[o * in + j];
        naive[i * out + o] = acc + beta * y0[i * out + o] + bias_h[o];
      }
    expect_linear_noise(y.g.download(), y.c.download(), naive,
                        "linear_forward beta=" + std::to_string(beta));
  }
  const std::vector<float> dyh = normal(m * out), dx0 = normal(m * in);
  auto dy = pair(dyh);
  auto dx = pair(dx0);
  cpu().linear_backward_input(dx.c.get(), dy.c.get(), w_host, m, 1.0f);
  gpu().linear_backward_input(dx.g.get(), dy.g.get(), w_gpu, m, 1.0f);
  std::vector<float> naive(static_cast<std::size_t>(m * in));
  for (i64 i = 0; i < m; ++i)
    for (i64 j = 0; j < in; ++j) {
      float acc = 0.0f;
      for (i64 o = 0; o < out; ++o)
        acc += bf16_to_f32(f32_to_bf16(dyh[i * out + o])) * w[o * in + j];
      naive[i * in + j] = acc + dx0[i * in + j];
    }
  expect_linear_noise(dx.g.download(), dx.c.download(), naive, "linear_backward_input");
}

// QLoRA: nf4 / fp8 views (quantized on the host as at load) placed on the GPU; the linear
// ops dequantize row tiles to bf16 (kernels/dequant.cu) for cuBLASLt. The CPU backend reads
// the same view as exact f32 values, so the gap is the bf16 rounding of weights and inputs.
// UNRUN: no GPU has run this test yet.
TEST_F(CudaBackendTest, LinearOpsWithQuantizedWeights) {
  const i64 m = 29, in = 96, out = 45;
  const std::vector<float> w = normal(out * in, 0.1f);
  for (const auto kind : {quant::QuantKind::quant_nf4, quant::QuantKind::quant_fp8}) {
    SCOPED_TRACE(quant::quant_kind_name(kind));
    quant::QuantStore store;
    const TensorView w_host =
        store.add(TensorView{const_cast<float*>(w.data()), DType::dtype_f32, Shape{out, in}}, kind);
    const TensorView w_gpu = gpu().weight_place(w_host);
    auto x = pair(normal(m * in));
    auto y = pair(normal(m * out));
    y.poison();
    cpu().linear_forward(y.c.get(), x.c.get(), w_host, nullptr, m, 0.0f);
    gpu().linear_forward(y.g.get(), x.g.get(), w_gpu, nullptr, m, 0.0f);
    expect_close(y, kBf16, "quantized linear_forward");
    auto dy = pair(normal(m * out));
    auto dx = pair(normal(m * in));
    cpu().linear_backward_input(dx.c.get(), dy.c.get(), w_host, m, 1.0f);
    gpu().linear_backward_input(dx.g.get(), dy.g.get(), w_gpu, m, 1.0f);
    expect_close(dx, kBf16, "quantized linear_backward_input");
  }
}

TEST_F(CudaBackendTest, EmbeddingForwardShardAndBackward) {
  const i64 rows = 53, dim = 35, n = 41;
  const std::vector<std::uint16_t> tb = to_bf16(normal(rows * dim));
  const TensorView t_host{const_cast<std::uint16_t*>(tb.data()), DType::dtype_bf16,
                          Shape{rows, dim}};
  const TensorView t_gpu = gpu().weight_place(t_host);
  for (const VocabShard shard : {VocabShard{}, VocabShard{10, 80}}) {
    const i64 vocab = shard.total > 0 ? shard.total : rows;
    auto ids = pair(ints(n, 0, static_cast<std::int32_t>(vocab - 1)));
    auto out = pair(std::vector<float>(static_cast<std::size_t>(n * dim)));
    out.poison();
    cpu().embedding_forward(out.c.get(), ids.c.get(), t_host, n, shard);
    gpu().embedding_forward(out.g.get(), ids.g.get(), t_gpu, n, shard);
    EXPECT_EQ(out.g.download(), out.c.download()) << "shard first " << shard.first;
  }
  Buf<std::int32_t> bad(gpu(), std::vector<std::int32_t>{3, 53, 1});
  Buf<float> bad_out(gpu(), std::vector<float>(3 * dim));
  EXPECT_THROW(gpu().embedding_forward(bad_out.get(), bad.get(), t_gpu, 3, {}), Error);

  auto ids = pair(ints(n, 0, 6));  // many repeats: the scatter must add them all
  auto dout = pair(normal(n * dim));
  auto dtable = pair(normal(rows * dim));
  cpu().embedding_backward(dtable.c.get(), dout.c.get(), ids.c.get(), n, rows, dim);
  gpu().embedding_backward(dtable.g.get(), dout.g.get(), ids.g.get(), n, rows, dim);
  expect_close(dtable, kF32, "embedding_backward");
}

TEST_F(CudaBackendTest, RmsnormForwardBackward) {
  const i64 n = 29, c = 97;
  const float eps = 1e-5f;
  const std::vector<float> wh = normal(c);
  const TensorView w_host{const_cast<float*>(wh.data()), DType::dtype_f32, Shape{c}};
  const TensorView w_gpu = gpu().weight_place(w_host);
  auto x = pair(normal(n * c, 2.0f));
  auto out = pair(std::vector<float>(static_cast<std::size_t>(n * c)));
  auto rstd = pair(std::vector<float>(static_cast<std::size_t>(n)));
  out.poison();
  rstd.poison();
  cpu().rmsnorm_forward(out.c.get(), rstd.c.get(), x.c.get(), w_host, n, c, eps);
  gpu().rmsnorm_forward(out.g.get(), rstd.g.get(), x.g.get(), w_gpu, n, c, eps);
  expect_close(out, kF32, "rmsnorm out");
  expect_close(rstd, kF32, "rmsnorm rstd");
  auto dout = pair(normal(n * c));
  auto dx = pair(normal(n * c));
  cpu().rmsnorm_backward(dx.c.get(), nullptr, dout.c.get(), x.c.get(), w_host, rstd.c.get(), n, c,
                         1.0f);
  gpu().rmsnorm_backward(dx.g.get(), nullptr, dout.g.get(), x.g.get(), w_gpu, rstd.g.get(), n, c,
                         1.0f);
  expect_close(dx, kF32, "rmsnorm dx");
}

TEST_F(CudaBackendTest, RopeForwardBackward) {
  const i64 n = 23, heads = 3, D = 64;
  std::vector<float> inv(static_cast<std::size_t>(D / 2));
  for (i64 i = 0; i < D / 2; ++i)
    inv[static_cast<std::size_t>(i)] = static_cast<float>(1.0 / std::pow(10000.0, 2.0 * i / D));
  auto inv_freq = pair(inv);
  auto pos = pair(ints(n, 0, 4095));
  auto x = pair(normal(n * heads * D));
  cpu().rope_forward(x.c.get(), pos.c.get(), inv_freq.c.get(), n, heads, D);
  gpu().rope_forward(x.g.get(), pos.g.get(), inv_freq.g.get(), n, heads, D);
  expect_close(x, kF32, "rope forward");
  auto dx = pair(normal(n * heads * D));
  cpu().rope_backward(dx.c.get(), pos.c.get(), inv_freq.c.get(), n, heads, D);
  gpu().rope_backward(dx.g.get(), pos.g.get(), inv_freq.g.get(), n, heads, D);
  expect_close(dx, kF32, "rope backward");
}

TEST_F(CudaBackendTest, SwigluForwardBackward) {
  const i64 n = 1031;
  auto gate = pair(normal(n, 3.0f));
  auto up = pair(normal(n));
  auto h = pair(std::vector<float>(static_cast<std::size_t>(n)));
  h.poison();
  cpu().swiglu_forward(h.c.get(), gate.c.get(), up.c.get(), n);
  gpu().swiglu_forward(h.g.get(), gate.g.get(), up.g.get(), n);
  expect_close(h, kF32, "swiglu forward");
  auto dh = pair(normal(n));
  auto dgate = pair(std::vector<float>(static_cast<std::size_t>(n)));
  auto dup = pair(std::vector<float>(static_cast<std::size_t>(n)));
  dgate.poison();
  dup.poison();
  cpu().swiglu_backward(dgate.c.get(), dup.c.get(), dh.c.get(), gate.c.get(), up.c.get(), n);
  gpu().swiglu_backward(dgate.g.get(), dup.g.get(), dh.g.get(), gate.g.get(), up.g.get(), n);
  expect_close(dgate, kF32, "swiglu dgate");
  expect_close(dup, kF32, "swiglu dup");
}

TEST_F(CudaBackendTest, AttentionDecode) {
  const i64 len = 29, H = 4, Hkv = 2, D = 64;
  auto q = pair(normal(H * D));
  auto kc = pair(normal(len * Hkv * D));
  auto vc = pair(normal(len * Hkv * D));
  auto out = pair(std::vector<float>(static_cast<std::size_t>(H * D)));
  out.poison();
  cpu().attention_decode(out.c.get(), q.c.get(), kc.c.get(), vc.c.get(), len, H, Hkv, D);
  gpu().attention_decode(out.g.get(), q.g.get(), kc.g.get(), vc.g.get(), len, H, Hkv, D);
  expect_close(out, kF32, "attention_decode");
}

TEST_F(CudaBackendTest, AttentionForwardBackwardPackedGqa) {
  const AttentionShape s{2, 37, 4, 2, 64};
  const i64 q_n = s.batch * s.seq * s.n_heads * s.head_dim;
  const i64 kv_n = s.batch * s.seq * s.n_kv_heads * s.head_dim;
  std::vector<std::int32_t> seg_h(static_cast<std::size_t>(s.batch * s.seq));
  for (i64 i = 0; i < s.batch * s.seq; ++i)
    seg_h[static_cast<std::size_t>(i)] = (i % s.seq) < 15 ? 0 : 1;
  auto seg = pair(seg_h);
  auto q = pair(normal(q_n));
  auto k = pair(normal(kv_n));
  auto v = pair(normal(kv_n));
  auto out = pair(std::vector<float>(static_cast<std::size_t>(q_n)));
  auto lse = pair(std::vector<float>(static_cast<std::size_t>(s.batch * s.n_heads * s.seq)));
  out.poison();
  lse.poison();
  cpu().attention_forward(out.c.get(), lse.c.get(), q.c.get(), k.c.get(), v.c.get(), seg.c.get(),
                          s);
  gpu().attention_forward(out.g.get(), lse.g.get(), q.g.get(), k.g.get(), v.g.get(), seg.g.get(),
                          s);
  expect_close(out, kBf16, "attention out");
  expect_close(lse, kBf16, "attention lse");
  auto dout = pair(normal(q_n));
  auto dq = pair(std::vector<float>(static_cast<std::size_t>(q_n)));
  auto dk = pair(std::vector<float>(static_cast<std::size_t>(kv_n)));
  auto dv = pair(std::vector<float>(static_cast<std::size_t>(kv_n)));
  for (auto* p : {&dq, &dk, &dv}) p->poison();
  cpu().attention_backward(dq.c.get(), dk.c.get(), dv.c.get(), dout.c.get(), out.c.get(),
                           lse.c.get(), q.c.get(), k.c.get(), v.c.get(), seg.c.get(), s);
  gpu().attention_backward(dq.g.get(), dk.g.get(), dv.g.get(), dout.g.get(), out.g.get(),
                           lse.g.get(), q.g.get(), k.g.get(), v.g.get(), seg.g.get(), s);
  expect_close(dq, kBf16, "attention dq");
  expect_close(dk, kBf16, "attention dk");
  expect_close(dv, kBf16, "attention dv");
}

// More rows than one logits block of the CUDA backend (1024), ignored targets, a gradient
// scale, after reserve() with the run's limits.
TEST_F(CudaBackendTest, LmHeadCrossEntropy) {
  const i64 n = 1100, V = 301, C = 67;
  BackendLimits limits;
  limits.max_tokens = n;
  limits.max_seq = n;
  limits.max_heads = 4;
  limits.max_head_dim = 64;
  limits.max_width = C;
  limits.vocab = V;
  limits.hidden = C;
  gpu().reserve(limits);
  const std::vector<std::uint16_t> wb = to_bf16(normal(V * C, 0.3f));
  const TensorView w_host{const_cast<std::uint16_t*>(wb.data()), DType::dtype_bf16, Shape{V, C}};
  const TensorView w_gpu = gpu().weight_place(w_host);
  std::vector<std::int32_t> tg_h = ints(n, 0, static_cast<std::int32_t>(V - 1));
  for (i64 i = 0; i < n; i += 7) tg_h[static_cast<std::size_t>(i)] = -100;
  auto tg = pair(tg_h);
  auto hidden = pair(normal(n * C));
  auto dhidden = pair(std::vector<float>(static_cast<std::size_t>(n * C)));
  dhidden.poison();
  const float grad_scale = 1.0f / 943.0f;
  const double loss_c = cpu().lm_head_cross_entropy(dhidden.c.get(), hidden.c.get(), w_host,
                                                    tg.c.get(), n, grad_scale);
  const double loss_g = gpu().lm_head_cross_entropy(dhidden.g.get(), hidden.g.get(), w_gpu,
                                                    tg.g.get(), n, grad_scale);
  EXPECT_NEAR(loss_g, loss_c, 1e-3 * std::fabs(loss_c));
  expect_close(dhidden, kBf16, "lm head dhidden");
  const std::vector<float> dh = dhidden.g.download();
  for (i64 i = 0; i < n; i += 7)
    for (i64 j = 0; j < C; ++j)
      ASSERT_EQ(dh[static_cast<std::size_t>(i * C + j)], 0.0f) << "ignored row " << i;
  // Without a gradient: the same loss.
  EXPECT_NEAR(gpu().lm_head_cross_entropy(nullptr, hidden.g.get(), w_gpu, tg.g.get(), n, 1.0f),
              loss_g, 1e-12 * std::fabs(loss_g));
  tg_h[5] = static_cast<std::int32_t>(V);
  tg.g.upload(tg_h);
  EXPECT_THROW(gpu().lm_head_cross_entropy(nullptr, hidden.g.get(), w_gpu, tg.g.get(), n, 1.0f),
               Error);
}

TEST_F(CudaBackendTest, LoraWithDropout) {
  const i64 n = 37, in = 83, out = 51, r = 8;
  const float scale = 2.0f;
  LoraDropout drop;
  drop.p = 0.25f;
  drop.stream = philox_stream(rng()(), 3, 1, 2);
  drop.row_offset = 5;
  drop.row_stride = 100;
  drop.col_offset = 7;
  auto x = pair(normal(n * in));
  auto a = pair(normal(r * in, 0.1f));
  auto b = pair(normal(out * r, 0.1f));
  auto xa = pair(std::vector<float>(static_cast<std::size_t>(n * r)));
  auto y = pair(normal(n * out));
  xa.poison();
  cpu().lora_forward(y.c.get(), xa.c.get(), x.c.get(), a.c.get(), b.c.get(), n, in, out, r, scale,
                     drop);
  gpu().lora_forward(y.g.get(), xa.g.get(), x.g.get(), a.g.get(), b.g.get(), n, in, out, r, scale,
                     drop);
  expect_close(xa, kBf16, "lora xa");
  expect_close(y, kBf16, "lora y");
  auto dy = pair(normal(n * out));
  auto dx = pair(normal(n * in));
  auto da = pair(normal(r * in));
  auto db = pair(normal(out * r));
  cpu().lora_backward(dx.c.get(), da.c.get(), db.c.get(), dy.c.get(), x.c.get(), xa.c.get(),
                      a.c.get(), b.c.get(), n, in, out, r, scale, drop);
  gpu().lora_backward(dx.g.get(), da.g.get(), db.g.get(), dy.g.get(), x.g.get(), xa.g.get(),
                      a.g.get(), b.g.get(), n, in, out, r, scale, drop);
  expect_close(dx, kBf16, "lora dx");
  expect_close(da, kBf16, "lora da");
  expect_close(db, kBf16, "lora db");
}

TEST_F(CudaBackendTest, SumSquaresScaleAdamw) {
  const i64 n = 100003;
  auto g = pair(normal(n));
  const double ss_c = cpu().sum_squares(g.c.get(), n), ss_g = gpu().sum_squares(g.g.get(), n);
  EXPECT_NEAR(ss_g, ss_c, 1e-10 * ss_c);  // double sums in another order
  cpu().scale(g.c.get(), 0.37f, n);
  gpu().scale(g.g.get(), 0.37f, n);
  EXPECT_EQ(g.g.download(), g.c.download());
  auto p = pair(normal(n));
  auto m = pair(normal(n, 0.1f));
  std::vector<float> v_h = normal(n, 0.1f);
  for (auto& x : v_h) x = x * x;
  auto v = pair(v_h);
  AdamwArgs args;
  args.lr = 1e-3f;
  args.weight_decay = 0.01f;
  args.step = 7;
  cpu().adamw_update(p.c.get(), g.c.get(), m.c.get(), v.c.get(), n, args);
  gpu().adamw_update(p.g.get(), g.g.get(), m.g.get(), v.g.get(), n, args);
  expect_close(p, 1e-6, "adamw p");
  expect_close(m, 1e-6, "adamw m");
  expect_close(v, 1e-6, "adamw v");
}

}  // namespace
}  // namespace anvil::backend
