// GPU kernel benchmark, anvil's side (issue 8). scripts/bench/gpu_reference.py measures the
// same shapes with PyTorch; scripts/bench/gpu_pair.py pairs the two; scripts/bench/gpu_bench.sh
// runs everything. It reports numbers; it never passes or fails on time.
//
//   bench_gpu_kernels ceiling|attention|lora|all [--quick] [--warmup N] [--reps N] [--seed S]
//   (defaults: 3 warm-up and 20 timed calls per shape; --quick: 2 and 10, fewer shapes)
//
// One JSON object per measurement on stdout:
//   {"side": "ours", "benchmark", "shape": {...}, "config": {...}, "device", "median_ms",
//    "min_ms", "max_ms", "reps", "flops" or "bytes", "tflops" or "gbps"}
// `shape` is what both sides must agree on (the pairing key); `config` says how this side
// ran it. Timing: CUDA events around each call after warm-up, the median of `reps` calls,
// inputs drawn fresh (cuRAND, seeded from the clock unless --seed) for every shape.
// Exit 77 (ctest's skip code) when no CUDA device is present.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "attention.cuh"
#include "bench_gpu_util.h"
#include "lora.cuh"

namespace anvil::bench {
namespace {

using nlohmann::json;
using i64 = std::int64_t;

struct Options {
  std::string what;
  bool quick = false;
  int warmup = -1;  // -1: 3 (quick: 2)
  int reps = -1;    // -1: 20 (quick: 10)
  std::uint64_t seed = 0;
};

struct Context {
  Options opt;
  std::string device;
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  DeviceBuffer* lt_workspace = nullptr;
  RandomFill* rng = nullptr;
};

constexpr std::size_t kLtWorkspaceBytes = 64u << 20;

void emit(const Context& cx, const std::string& benchmark, const json& shape, json config, const Timing& t,
          double flops, double bytes) {
  json j = {{"side", "ours"},          {"benchmark", benchmark}, {"shape", shape},
            {"config", std::move(config)}, {"device", cx.device},     {"median_ms", t.median_ms},
            {"min_ms", t.min_ms},      {"max_ms", t.max_ms},      {"reps", t.reps}};
  if (flops > 0) {
    j["flops"] = flops;
    j["tflops"] = flops / (t.median_ms * 1e-3) / 1e12;
  }
  if (bytes > 0) {
    j["bytes"] = bytes;
    j["gbps"] = bytes / (t.median_ms * 1e-3) / 1e9;
  }
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

// ---- ceilings: cuBLASLt bf16 GEMM, device-to-device copy ---------------------------------
void bench_ceiling(Context& cx) {
  const std::vector<i64> sizes = cx.opt.quick ? std::vector<i64>{4096, 8192} : std::vector<i64>{4096, 8192, 16384};
  for (const i64 n : sizes) {
    const i64 elems = n * n;
    DeviceBuffer a(elems * 2), b(elems * 2), c(elems * 2), scratch(elems * 4);
    cx.rng->normal_bf16(a.as<std::uint16_t>(), scratch.as<float>(), elems, 1.0f);
    cx.rng->normal_bf16(b.as<std::uint16_t>(), scratch.as<float>(), elems, 1.0f);
    LtGemm::Shape s;
    s.trans_a = true;  // "TN", the layout of y = x W^T with row-major x and W
    s.m = s.n = s.k = s.lda = s.ldb = s.ldc = n;
    const LtGemm gemm(cx.lt, s, cx.lt_workspace->as<void>(), kLtWorkspaceBytes);
    const Timing t = time_op(cx.stream, cx.opt.warmup, cx.opt.reps,
                             [&] { gemm.run(1.0f, a.as<void>(), b.as<void>(), 0.0f, c.as<void>(), cx.stream); });
    emit(cx, "ceiling_gemm_bf16", {{"m", n}, {"n", n}, {"k", n}},
         {{"api", "cublasLtMatmul, TN, bf16 in/out, fp32 compute, first heuristic, 64 MiB workspace"}}, t,
         2.0 * static_cast<double>(n) * n * n, 0);
  }
  const std::size_t bytes = 1ull << 30;
  DeviceBuffer src(bytes), dst(bytes);
  const Timing t = time_op(cx.stream, cx.opt.warmup, cx.opt.reps, [&] {
    CUDA_CHECK(cudaMemcpyAsync(dst.as<void>(), src.as<void>(), bytes, cudaMemcpyDeviceToDevice, cx.stream));
  });
  emit(cx, "ceiling_copy_d2d", {{"bytes", bytes}},
       {{"api", "cudaMemcpyAsync device to device"}, {"bytes_counted", "2 x size (read + write)"}}, t, 0,
       2.0 * static_cast<double>(bytes));
}

// ---- attention ---------------------------------------------------------------------------
// FlashAttention's count: forward 4 s^2 d h b (QK^T and PV), halved when causal; backward
// 2.5x forward. Packed documents: the sum over documents of their own s^2.
double attention_fwd_flops(i64 batch, i64 seq, i64 heads, i64 head_dim, bool causal, const std::vector<i64>& docs) {
  double sq = 0;
  if (docs.empty()) {
    sq = static_cast<double>(seq) * seq;
  } else {
    for (const i64 len : docs) sq += static_cast<double>(len) * len;
  }
  return 4.0 * sq * head_dim * heads * batch * (causal ? 0.5 : 1.0);
}

void bench_attention_shape(Context& cx, i64 seq, i64 head_dim, bool causal, const std::vector<i64>& docs) {
  constexpr i64 kTokens = 16384, kHidden = 2048;
  const i64 batch = kTokens / seq, heads = kHidden / head_dim, elems = kTokens * kHidden;
  DeviceBuffer q(elems * 4), k(elems * 4), v(elems * 4), out(elems * 4), dout(elems * 4);
  DeviceBuffer dq(elems * 4), dk(elems * 4), dv(elems * 4), lse(kTokens * heads * 4);
  DeviceBuffer workspace(kernels::attention_backward_workspace_bytes(static_cast<int>(batch), static_cast<int>(seq),
                                                                     static_cast<int>(heads), static_cast<int>(head_dim)));
  DeviceBuffer segment(kTokens * 4);
  for (DeviceBuffer* b : {&q, &k, &v, &dout}) cx.rng->normal(b->as<float>(), elems, 1.0f);
  if (!docs.empty()) {
    std::vector<std::int32_t> seg;
    seg.reserve(kTokens);
    for (i64 row = 0; row < batch; ++row)
      for (std::size_t d = 0; d < docs.size(); ++d) seg.insert(seg.end(), docs[d], static_cast<std::int32_t>(d));
    ANVIL_CHECK(static_cast<i64>(seg.size()) == kTokens, "documents do not fill the rows");
    CUDA_CHECK(cudaMemcpy(segment.as<void>(), seg.data(), seg.size() * 4, cudaMemcpyHostToDevice));
  }
  kernels::AttentionParams p;
  p.q = q.as<float>();
  p.k = k.as<float>();
  p.v = v.as<float>();
  p.segment = docs.empty() ? nullptr : segment.as<std::int32_t>();
  p.out = out.as<float>();
  p.lse = lse.as<float>();
  p.batch = static_cast<int>(batch);
  p.seq = static_cast<int>(seq);
  p.n_heads = p.n_kv_heads = static_cast<int>(heads);
  p.head_dim = static_cast<int>(head_dim);
  p.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  p.causal = causal;
  kernels::AttentionBackwardParams bp;
  bp.fwd = p;
  bp.dout = dout.as<float>();
  bp.dq = dq.as<float>();
  bp.dk = dk.as<float>();
  bp.dv = dv.as<float>();

  json shape = {{"batch", batch}, {"seq", seq}, {"heads", heads}, {"kv_heads", heads}, {"head_dim", head_dim},
                {"causal", causal}};
  if (!docs.empty()) shape["docs"] = docs;
  const json config = {{"kernel", "kernels/attention.cu (mma.sync bf16, fp32 accumulation)"},
                       {"input_dtype", "f32 (q, k, v, out, dout, dq, dk, dv: the Backend's activation type; "
                                       "the kernel rounds to bf16 inside)"},
                       {"layout", "(B, T, H, D)"}};
  const double fwd = attention_fwd_flops(batch, seq, heads, head_dim, causal, docs);
  const Timing tf = time_op(cx.stream, cx.opt.warmup, cx.opt.reps, [&] { kernels::attention_forward(p, cx.stream); });
  emit(cx, "attention_fwd", shape, config, tf, fwd, 0);
  // out and lse are those of the last forward call; the backward reads them each time.
  const Timing tb = time_op(cx.stream, cx.opt.warmup, cx.opt.reps,
                            [&] { kernels::attention_backward(bp, workspace.as<void>(), cx.stream); });
  emit(cx, "attention_bwd", shape, config, tb, 2.5 * fwd, 0);
}

// The packed-document pattern of one 4096-token row; gpu_reference.py uses the same list.
const std::vector<i64> kVarlenDocs = {2048, 1024, 512, 256, 128, 128};

void bench_attention(Context& cx) {
  const std::vector<i64> seqs =
      cx.opt.quick ? std::vector<i64>{2048, 8192} : std::vector<i64>{1024, 2048, 4096, 8192, 16384};
  for (const i64 head_dim : {128, 64})
    for (const bool causal : {true, false})
      for (const i64 seq : seqs) bench_attention_shape(cx, seq, head_dim, causal, {});
  for (const i64 head_dim : {128, 64}) bench_attention_shape(cx, 4096, head_dim, true, kVarlenDocs);
}

// ---- LoRA layer: y = x W^T + scale (x A^T) B^T, forward then backward --------------------
// The frozen product is cuBLASLt in bf16 (x cast from f32 first, fp32 output, as the f32
// activation contract of kernels/ requires); the adapter halves are kernels/lora.cu.
void bench_lora_shape(Context& cx, i64 n, i64 in, i64 out, int r) {
  const float scale = 2.0f;  // alpha 32 / r 16
  DeviceBuffer x(n * in * 4), xb(n * in * 2), y(n * out * 4), dy(n * out * 4), dyb(n * out * 2), dx(n * in * 4);
  DeviceBuffer w(out * in * 2), a(r * in * 4), b(out * r * 4), da(r * in * 4), db(out * r * 4), xa(n * r * 4);
  DeviceBuffer scratch(out * in * 4);
  DeviceBuffer workspace(kernels::lora_backward_workspace_bytes(n, in, out, r));
  cx.rng->normal(x.as<float>(), n * in, 1.0f);
  cx.rng->normal(dy.as<float>(), n * out, 1.0f);
  cx.rng->normal_bf16(w.as<std::uint16_t>(), scratch.as<float>(), out * in, 0.02f);
  cx.rng->normal(a.as<float>(), r * in, 0.02f);
  cx.rng->normal(b.as<float>(), out * r, 0.02f);  // not zeros, unlike a fresh adapter: mid-training values

  LtGemm::Shape fs;  // row-major y(n, out) = xb(n, in) W(out, in)^T  ==  col-major y^T = W^T' x^T
  fs.trans_a = true;
  fs.m = out, fs.n = n, fs.k = in, fs.lda = in, fs.ldb = in, fs.ldc = out;
  fs.c_type = CUDA_R_32F;
  LtGemm::Shape bs;  // row-major dx(n, in) = dyb(n, out) W(out, in)
  bs.m = in, bs.n = n, bs.k = out, bs.lda = in, bs.ldb = out, bs.ldc = in;
  bs.c_type = CUDA_R_32F;
  const LtGemm gemm_fwd(cx.lt, fs, cx.lt_workspace->as<void>(), kLtWorkspaceBytes);
  const LtGemm gemm_bwd(cx.lt, bs, cx.lt_workspace->as<void>(), kLtWorkspaceBytes);
  const kernels::LoraDropoutParams no_drop{};

  auto forward = [&] {
    kernels::cast_f32_to_bf16(xb.as<std::uint16_t>(), x.as<float>(), n * in, cx.stream);
    gemm_fwd.run(1.0f, w.as<void>(), xb.as<void>(), 0.0f, y.as<void>(), cx.stream);      // y (n, out)
    kernels::lora_down(xa.as<float>(), x.as<float>(), a.as<float>(), n, in, r, no_drop, cx.stream);  // xa (n, r)
    kernels::lora_up(y.as<float>(), xa.as<float>(), b.as<float>(), n, out, r, scale, cx.stream);
  };
  auto backward = [&] {
    kernels::cast_f32_to_bf16(dyb.as<std::uint16_t>(), dy.as<float>(), n * out, cx.stream);
    gemm_bwd.run(1.0f, w.as<void>(), dyb.as<void>(), 0.0f, dx.as<void>(), cx.stream);   // dx (n, in)
    kernels::lora_backward(dx.as<float>(), da.as<float>(), db.as<float>(), dy.as<float>(), x.as<float>(),
                           xa.as<float>(), a.as<float>(), b.as<float>(), n, in, out, r, scale, no_drop,
                           workspace.as<void>(), cx.stream);
  };
  const json shape = {{"tokens", n}, {"in", in}, {"out", out}, {"rank", r}, {"alpha", 32}, {"dropout", 0.0}};
  const json config = {{"base", "cast f32->bf16, cublasLtMatmul bf16 x bf16 -> f32 (W frozen, bf16)"},
                       {"adapter", "kernels/lora.cu lora_down/lora_up/lora_backward, A and B fp32 masters"},
                       {"input_dtype", "f32 activations and gradients (x, y, dy, dx)"},
                       {"backward", "dx (base + adapter), dA, dB; no dW (frozen)"}};
  const double lora_fwd = 2.0 * n * r * static_cast<double>(in + out);
  const double base = 2.0 * n * static_cast<double>(in) * out;
  const Timing tf = time_op(cx.stream, cx.opt.warmup, cx.opt.reps, forward);
  emit(cx, "lora_layer_fwd", shape, config, tf, base + lora_fwd, 0);
  const Timing tfb = time_op(cx.stream, cx.opt.warmup, cx.opt.reps, [&] {
    forward();
    backward();
  });
  emit(cx, "lora_layer", shape, config, tfb, 2.0 * base + 3.0 * lora_fwd, 0);
}

void bench_lora(Context& cx) {
  constexpr i64 kTokens = 8192;
  bench_lora_shape(cx, kTokens, 4096, 4096, 16);
  bench_lora_shape(cx, kTokens, 4096, 14336, 16);
  if (!cx.opt.quick) bench_lora_shape(cx, kTokens, 14336, 4096, 16);
}

int usage(const char* argv0) {
  std::fprintf(stderr, "usage: %s ceiling|attention|lora|all [--quick] [--warmup N] [--reps N] [--seed S]\n", argv0);
  return 2;
}

int run(int argc, char** argv) {
  if (argc < 2) return usage(argv[0]);
  Options opt;
  opt.what = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--quick") {
      opt.quick = true;
    } else if (a == "--warmup" && has_value) {
      opt.warmup = std::stoi(argv[++i]);
    } else if (a == "--reps" && has_value) {
      opt.reps = std::stoi(argv[++i]);
    } else if (a == "--seed" && has_value) {
      opt.seed = std::stoull(argv[++i]);
    } else {
      return usage(argv[0]);
    }
  }
  if (opt.what != "ceiling" && opt.what != "attention" && opt.what != "lora" && opt.what != "all") return usage(argv[0]);
  if (opt.warmup == -1) opt.warmup = opt.quick ? 2 : 3;
  if (opt.reps == -1) opt.reps = opt.quick ? 10 : 20;
  if (opt.reps < 1 || opt.warmup < 0) return usage(argv[0]);
  if (opt.seed == 0) opt.seed = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());

  int devices = 0;
  const cudaError_t st = cudaGetDeviceCount(&devices);
  if (st != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "SKIP: no CUDA device (%s)\n", st != cudaSuccess ? cudaGetErrorString(st) : "none found");
    return 77;
  }
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  Context cx;
  cx.opt = opt;
  cx.device = prop.name;
  CUDA_CHECK(cudaStreamCreateWithFlags(&cx.stream, cudaStreamNonBlocking));
  cublas_check(cublasLtCreate(&cx.lt), "cublasLtCreate");
  DeviceBuffer lt_workspace(kLtWorkspaceBytes);
  RandomFill rng(opt.seed, cx.stream);
  cx.lt_workspace = &lt_workspace;
  cx.rng = &rng;
  std::fprintf(stderr, "bench_gpu_kernels %s on %s (sm_%d%d), warmup %d, reps %d, seed %llu%s\n", opt.what.c_str(),
               prop.name, prop.major, prop.minor, opt.warmup, opt.reps, static_cast<unsigned long long>(opt.seed),
               opt.quick ? ", quick" : "");
  if (opt.what == "ceiling" || opt.what == "all") bench_ceiling(cx);
  if (opt.what == "attention" || opt.what == "all") bench_attention(cx);
  if (opt.what == "lora" || opt.what == "all") bench_lora(cx);
  cublasLtDestroy(cx.lt);
  cudaStreamDestroy(cx.stream);
  return 0;
}

}  // namespace
}  // namespace anvil::bench

int main(int argc, char** argv) {
  try {
    return anvil::bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gpu_kernels: %s\n", anvil::error_message(e).c_str());
    return anvil::error_exit_code(e);
  }
}
