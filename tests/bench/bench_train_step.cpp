// Training-step throughput of the CPU backend: tokens/s and achieved GFLOP/s of LoRA
// fine-tuning steps on a model directory, next to the sgemm rate measured in the same run
// on the step's own GEMM shapes. Prints one JSON object last (for scripts/bench/).
//
//   bench_train_step MODEL_DIR [--seq 512] [--micro-batch 1] [--rank 16] [--steps 5]
//                    [--warmup 1] [--checkpointing] [--quant none|nf4|fp8]
//
// --quant quantizes the base's linear weights at load (model.quant; lm_head and the
// embedding stay f32): the QLoRA step, its GEMMs dequantizing tiles of rows.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"
#include "backend/cpu/cpu_backend.h"
#include "model/llama.h"
#include "quant/quant_state.h"
#include "train/flops.h"

namespace {

using namespace anvil;
using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// GFLOP/s of C(m,n) = A(m,k) B(n,k)^T, the shape of a linear layer's forward.
double sgemm_rate(backend::Backend& be, std::int64_t m, std::int64_t n, std::int64_t k) {
  std::vector<float> a(static_cast<std::size_t>(m * k), 0.5f), b(static_cast<std::size_t>(n * k), 0.25f),
      c(static_cast<std::size_t>(m * n));
  be.gemm(false, true, m, n, k, 1.0f, a.data(), k, b.data(), k, 0.0f, c.data(), n);  // warm-up
  int reps = 0;
  const auto t0 = Clock::now();
  do {
    be.gemm(false, true, m, n, k, 1.0f, a.data(), k, b.data(), k, 0.0f, c.data(), n);
    ++reps;
  } while (seconds(t0) < 1.0);
  return 2.0 * static_cast<double>(m * n * k) * reps / seconds(t0) / 1e9;
}

// Seconds to dequantize every quantized linear weight of `w` once, in tiles of
// backend::kConvertFloats as the CPU backend's GEMMs do (best of three passes).
double dequantize_pass_seconds(const model::BaseWeights& w) {
  std::vector<float> tile(static_cast<std::size_t>(backend::kConvertFloats));
  double best = 1e30;
  for (int pass = 0; pass < 3; ++pass) {
    const auto t0 = Clock::now();
    for (const model::LayerWeights& l : w.layers)
      for (const TensorView& v : l.proj) {
        if (!v.quant) continue;
        for (std::int64_t e = 0; e < v.numel(); e += backend::kConvertFloats)
          quant::quant_dequantize(v, e, std::min<std::int64_t>(backend::kConvertFloats, v.numel() - e), tile.data());
      }
    best = std::min(best, seconds(t0));
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_train_step MODEL_DIR [--seq N] [--micro-batch N] [--rank N] "
                         "[--steps N] [--warmup N] [--checkpointing] [--quant none|nf4|fp8]\n");
    return 2;
  }
  if (const std::string core = backend::blas_core_override(); !core.empty()) {
    ::setenv("OPENBLAS_CORETYPE", core.c_str(), 1);  // fast kernels, as anvil's main does
    ::execv("/proc/self/exe", argv);
  }
  const std::string dir = argv[1];
  std::int64_t T = 512, B = 1, rank = 16, steps = 5, warmup = 1;
  bool ckpt = false;
  quant::QuantPolicy quant{quant::QuantKind::quant_none, quant::default_quant_skip()};
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { ANVIL_CHECK_INPUT(i + 1 < argc, a, " needs a value"); return std::atoll(argv[++i]); };
    if (a == "--seq") T = next();
    else if (a == "--micro-batch") B = next();
    else if (a == "--rank") rank = next();
    else if (a == "--steps") steps = next();
    else if (a == "--warmup") warmup = next();
    else if (a == "--checkpointing") ckpt = true;
    else if (a == "--quant") {
      ANVIL_CHECK_INPUT(i + 1 < argc && quant::quant_kind_from_name(argv[i + 1], &quant.kind),
                        "--quant needs none, nf4 or fp8");
      ++i;
    }
    else throw_user_error("unknown option ", a);
  }
  const model::ModelSpec spec = model::model_spec_from_dir(dir);
  auto be = backend::make_cpu_backend();
  model::LoraSpec ls;
  ls.rank = static_cast<int>(rank);
  ls.alpha = 2.0 * static_cast<double>(rank);
  ls.targets.fill(true);
  const model::LoraLayout layout(spec, ls);
  model::BaseWeights base = model::base_weights_load(spec, dir, DType::dtype_f32, model::tp_shard(spec, 0, 1), quant);
  const double quantized_mib = static_cast<double>(base.quantized_bytes) / (1 << 20);
  const double dequant_s = quant.kind == quant::QuantKind::quant_none ? 0.0 : dequantize_pass_seconds(base);
  model::LlamaModel m(spec, std::move(base), layout, model::ModelLimits{B, T, ckpt}, *be, 1);
  model::lora_init(layout, 1, m.lora_params());
  // B = 0 would make every A gradient trivially zero; give B values so the math is real.
  for (const auto& s : layout.slots()) std::fill_n(m.lora_params() + s.b_offset, s.out * rank, 1e-3f);

  const std::int64_t N = B * T;
  std::vector<std::int32_t> ids(static_cast<std::size_t>(N)), targets(ids.size()), pos(ids.size());
  std::mt19937 rng(1);
  std::uniform_int_distribution<std::int32_t> tok(0, static_cast<std::int32_t>(spec.vocab_size - 1));
  for (std::int64_t i = 0; i < N; ++i) {
    ids[static_cast<std::size_t>(i)] = tok(rng);
    targets[static_cast<std::size_t>(i)] = tok(rng);
    pos[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i % T);
  }
  model::TokenBatch batch{B, T, ids.data(), targets.data(), pos.data(), nullptr, 0};
  std::vector<float> mom(static_cast<std::size_t>(layout.size())), var(mom.size());
  auto one_step = [&](std::int64_t step) {
    m.zero_grads();
    const double loss = m.train_micro_batch(batch, 1.0f / static_cast<float>(N), static_cast<std::uint64_t>(step));
    backend::AdamwArgs a;
    a.lr = 1e-4f;
    a.step = step;
    be->adamw_update(m.lora_params(), m.lora_grads(), mom.data(), var.data(), layout.size(), a);
    return loss / static_cast<double>(N);
  };
  for (std::int64_t s = 1; s <= warmup; ++s) one_step(s);
  const auto t0 = Clock::now();
  double loss = 0;
  for (std::int64_t s = 1; s <= steps; ++s) loss = one_step(warmup + s);
  const double step_s = seconds(t0) / static_cast<double>(steps);

  // FLOPs of one step, counted from the shapes (what the step must do, not what it did):
  // frozen linear layers run forward and input-gradient GEMMs (2 x 2·N·in·out); attention
  // QK^T and PV are 2·2·N·(T+1)/2·H·D forward (causal half) and twice that backward;
  // LoRA: its thin GEMMs forward (2·N·r·(in+out)) and about twice that backward.
  const double C = static_cast<double>(spec.hidden_size), F = static_cast<double>(spec.intermediate_size);
  const double HD = static_cast<double>(spec.num_attention_heads * spec.head_dim);
  const double KV = static_cast<double>(spec.num_key_value_heads * spec.head_dim);
  const double L = static_cast<double>(spec.num_hidden_layers), V = static_cast<double>(spec.vocab_size);
  const double n = static_cast<double>(N), r = static_cast<double>(rank);
  const double per_layer_linear = C * HD + 2 * C * KV + HD * C + 3 * C * F;
  const double per_layer_lora_width = (C + HD) + 2 * (C + KV) + (HD + C) + 2 * (C + F) + (F + C);
  const double fwd_linear = 2 * n * (L * per_layer_linear + V * C);
  const double attn_fwd = L * 4 * n * (static_cast<double>(T) + 1) / 2 * HD;
  const double lora = L * 2 * n * r * per_layer_lora_width;
  double flops = 2 * fwd_linear + 3 * attn_fwd + 3 * lora;
  if (ckpt) flops += fwd_linear - 2 * n * V * C + attn_fwd + lora;  // blocks run forward twice
  // A mixture-of-experts model: train/flops.h's count, which takes the active parameters
  // only (router + top_k experts per token), with its full T x T attention.
  if (spec.is_moe()) flops = train::train_flops_per_token(spec, ls, T, ckpt).total() * n;
  const double gflops = flops / step_s / 1e9;

  const double gemm_qkv = sgemm_rate(*be, N, static_cast<std::int64_t>(HD), spec.hidden_size);
  const double gemm_mlp = sgemm_rate(*be, N, spec.intermediate_size, spec.hidden_size);
  const double gemm_head = sgemm_rate(*be, std::min<std::int64_t>(N, 128), spec.vocab_size, spec.hidden_size);
  const double gemm_best = std::max({gemm_qkv, gemm_mlp, gemm_head});
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);

  std::printf("model %s: %lld layers, hidden %lld, vocab %lld; LoRA r=%lld on every projection%s; seq %lld x micro batch %lld%s\n",
              dir.c_str(), static_cast<long long>(spec.num_hidden_layers), static_cast<long long>(spec.hidden_size),
              static_cast<long long>(spec.vocab_size), static_cast<long long>(rank),
              spec.is_moe() ? " (every routed expert's too)" : "", static_cast<long long>(T),
              static_cast<long long>(B), ckpt ? ", activation checkpointing" : "");
  std::printf("step %.3f s, %.0f tokens/s, %.2f GFLOP/step, %.1f GFLOP/s achieved\n", step_s, n / step_s,
              flops / 1e9, gflops);
  std::printf("sgemm in this run: %.1f (N x q), %.1f (N x mlp), %.1f (lm head) GFLOP/s; step = %.0f%% of the best\n",
              gemm_qkv, gemm_mlp, gemm_head, 100 * gflops / gemm_best);
  // Without checkpointing each frozen weight is expanded twice a step (forward, input
  // gradient), with it three times (the recomputed forward).
  const double dequant_share = (ckpt ? 3.0 : 2.0) * dequant_s / step_s;
  if (dequant_s > 0)
    std::printf("dequantizing every linear weight once: %.3f s; x%d per step = %.0f%% of the step\n", dequant_s,
                ckpt ? 3 : 2, 100 * dequant_share);
  std::printf("peak RSS %.0f MiB, arena %.0f MiB, quantized base %s %.1f MiB, final loss %.4f\n",
              ru.ru_maxrss / 1024.0, static_cast<double>(m.arena_bytes()) / (1 << 20),
              quant::quant_kind_name(quant.kind), quantized_mib, loss);
  nlohmann::json j = {{"tokens_per_s", n / step_s}, {"step_s", step_s},   {"gflop_per_step", flops / 1e9},
                      {"gflops", gflops},           {"sgemm_gflops", gemm_best}, {"fraction_of_sgemm", gflops / gemm_best},
                      {"peak_rss_mib", ru.ru_maxrss / 1024.0}, {"checkpointing", ckpt}, {"seq", T},
                      {"micro_batch", B}, {"rank", rank}, {"quant", quant::quant_kind_name(quant.kind)},
                      {"quantized_mib", quantized_mib}, {"dequant_pass_s", dequant_s}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 2;
}
