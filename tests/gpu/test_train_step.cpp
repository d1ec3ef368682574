// A whole training micro-batch of the Llama + LoRA model on the CUDA backend against the
// CPU backend (the fp32 reference): same bf16 weights, same adapter, same packed batch with
// dropout. The GPU rounds activations to bf16 for its tensor-core products, so the loss and
// the adapter gradients agree to bf16 tolerance, not bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "backend/backend.h"
#include "gpu_test_util.h"
#include "llama_test_util.h"
#include "model/llama.h"

namespace anvil {
namespace {

// head_dim 64 (the CUDA attention kernels take 64 and 128), GQA 4:2, two layers.
model::ModelSpec gpu_spec() {
  model::ModelSpec s;
  s.hidden_size = 256;
  s.intermediate_size = 688;
  s.num_hidden_layers = 2;
  s.num_attention_heads = 4;
  s.num_key_value_heads = 2;
  s.head_dim = 64;
  s.vocab_size = 1000;
  s.max_position_embeddings = 512;
  return s;
}

model::LoraSpec lora_all(double dropout) {
  model::LoraSpec l;
  l.rank = 8;
  l.alpha = 16;
  l.dropout = dropout;
  l.targets.fill(true);
  return l;
}

struct Batch {
  std::vector<std::int32_t> ids, targets, positions, segments;
  model::TokenBatch view(std::int64_t B, std::int64_t T) const {
    return {B, T, ids.data(), targets.data(), positions.data(), segments.data(), 0};
  }
};

// Two rows of packed documents (lengths 37 + 63 + rest), some targets ignored.
Batch packed_batch(std::int64_t B, std::int64_t T, std::int64_t vocab, std::mt19937& rng) {
  std::uniform_int_distribution<std::int32_t> tok(0, static_cast<std::int32_t>(vocab - 1));
  Batch b;
  for (std::int64_t r = 0; r < B; ++r) {
    std::int32_t seg = 0, pos = 0;
    for (std::int64_t t = 0; t < T; ++t) {
      if (t == 37 || t == 100) seg += 1, pos = 0;
      b.ids.push_back(tok(rng));
      b.targets.push_back(t % 7 == 3 ? -100 : tok(rng));
      b.positions.push_back(pos++);
      b.segments.push_back(seg);
    }
  }
  return b;
}

struct StepResult {
  double loss = 0;
  std::vector<float> grads;
};

StepResult run_step(backend::Backend& be, const model::ModelSpec& spec, const std::string& dir,
             const std::vector<float>& adapter, const Batch& batch, std::int64_t B, std::int64_t T, bool ckpt,
             const model::LoraSpec& lora = lora_all(0.1)) {
  model::LoraLayout layout(spec, lora);
  model::LlamaModel m(spec, model::base_weights_load(spec, dir, DType::dtype_bf16, model::tp_shard(spec, 0, 1)),
                      layout, model::ModelLimits{B, T, ckpt}, be, 7);
  be.copy_from_host(m.lora_params(), adapter.data(), sizeof(float) * adapter.size());
  m.set_aux_loss_weight(0.01f);  // MoE: the load-balancing gradient reaches the router too
  m.zero_grads();
  StepResult r;
  r.loss = m.train_micro_batch(batch.view(B, T), 1.0f / static_cast<float>(B * T), 3);
  r.grads.resize(adapter.size());
  be.copy_to_host(r.grads.data(), m.lora_grads(), sizeof(float) * r.grads.size());
  return r;
}

double cosine(const std::vector<float>& a, const std::vector<float>& b) {
  double ab = 0, aa = 0, bb = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    ab += double(a[i]) * b[i];
    aa += double(a[i]) * a[i];
    bb += double(b[i]) * b[i];
  }
  return ab / std::sqrt(aa * bb);
}

TEST(GpuTrainStep, MatchesTheCpuBackend) {
  ANVIL_REQUIRE_GPU();
  const model::ModelSpec spec = gpu_spec();
  test::TempDir dir("gpu_step");
  test::make_model_dir(dir, spec, std::random_device{}(), DType::dtype_bf16);
  std::mt19937 rng(std::random_device{}());
  const std::int64_t B = 2, T = 160;
  const Batch batch = packed_batch(B, T, spec.vocab_size, rng);
  std::vector<float> adapter(static_cast<std::size_t>(model::LoraLayout(spec, lora_all(0.1)).size()));
  std::normal_distribution<float> nd(0.0f, 0.05f);
  for (auto& x : adapter) x = nd(rng);  // B != 0, so every A gradient is alive

  auto cpu = backend::make_cpu_backend();
  auto gpu = backend::make_cuda_backend(0);
  const StepResult want = run_step(*cpu, spec, dir.str(), adapter, batch, B, T, false);
  const StepResult got = run_step(*gpu, spec, dir.str(), adapter, batch, B, T, false);
  // bf16 activations in the products: ~3 significant digits per rounding, a few hundred
  // products deep. The loss is a mean over ~280 tokens.
  EXPECT_NEAR(got.loss, want.loss, 5e-3 * std::abs(want.loss));
  EXPECT_GT(cosine(got.grads, want.grads), 0.999);
  EXPECT_LT(test::rel_error(got.grads.data(), want.grads.data(), want.grads.size()), 5e-2);

  // Activation checkpointing recomputes the same deterministic kernels: identical bits.
  const StepResult ckpt = run_step(*gpu, spec, dir.str(), adapter, batch, B, T, true);
  EXPECT_EQ(ckpt.loss, got.loss);
  EXPECT_EQ(ckpt.grads, got.grads);
}

// One step of `spec` (random bf16 weights, a random adapter on every target, packed rows) on
// the CUDA and the CPU backend: the loss within 1%, the gradients' cosine over 0.99, and the
// CUDA step deterministic (recomputing under checkpointing gives the same bits).
void expect_moe_step_matches_cpu(const model::ModelSpec& spec, const std::string& tag) {
  test::TempDir dir(tag);
  test::make_model_dir(dir, spec, std::random_device{}(), DType::dtype_bf16);
  std::mt19937 rng(std::random_device{}());
  const std::int64_t B = 2, T = 160;
  const Batch batch = packed_batch(B, T, spec.vocab_size, rng);
  const model::LoraSpec lora = lora_all(0.0);  // LoRA dropout on experts is not supported
  std::vector<float> adapter(static_cast<std::size_t>(model::LoraLayout(spec, lora).size()));
  std::normal_distribution<float> nd(0.0f, 0.05f);
  for (auto& x : adapter) x = nd(rng);

  auto cpu = backend::make_cpu_backend();
  auto gpu = backend::make_cuda_backend(0);
  const StepResult want = run_step(*cpu, spec, dir.str(), adapter, batch, B, T, false, lora);
  const StepResult got = run_step(*gpu, spec, dir.str(), adapter, batch, B, T, false, lora);
  EXPECT_NEAR(got.loss, want.loss, 1e-2 * std::abs(want.loss));
  EXPECT_GT(cosine(got.grads, want.grads), 0.99);
  const StepResult ckpt = run_step(*gpu, spec, dir.str(), adapter, batch, B, T, true, lora);
  EXPECT_EQ(ckpt.loss, got.loss);
  EXPECT_EQ(ckpt.grads, got.grads);
}

// A tiny Qwen3-MoE (8 experts, top 2, head_dim 64, a dense layer between sparse ones) on
// the CUDA MoE path (kernels/moe.cu + per-expert cuBLASLt GEMMs) against the CPU backend.
// The router's logits come from a bf16 product on the GPU, so a token whose 2nd and 3rd
// experts are that close may pick another expert: the bounds are looser than the dense
// step's, and the expert loads may differ by a few rows.
TEST(GpuTrainStep, MoeMatchesTheCpuBackend) {
  ANVIL_REQUIRE_GPU();
  const model::ModelSpec spec = model::model_spec_from_json(
      R"({"model_type": "qwen3_moe", "hidden_size": 256, "intermediate_size": 384,
          "moe_intermediate_size": 96, "num_hidden_layers": 3, "num_attention_heads": 4,
          "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 1000, "num_experts": 8,
          "num_experts_per_tok": 2, "norm_topk_prob": true, "mlp_only_layers": [1],
          "output_router_logits": true, "router_aux_loss_coef": 0.01,
          "max_position_embeddings": 512, "rms_norm_eps": 1e-6})",
      "gpu_moe");
  expect_moe_step_matches_cpu(spec, "gpu_moe_step");
}

// A tiny Llama 4 (8 experts, top 1, head_dim 64) with every feature on: sigmoid-scored
// experts and the shared expert on sparse layers 1 and 3, a NoPE layer (1) whose
// temperature changes every 16 positions, chunks of 32 on the RoPE layers, L2 qk-norm; on
// the CUDA path (kernels/llama4.cu and kernels/moe.cu) against the CPU backend. As for the
// MoE step, a token whose two best router logits lie within the bf16 product's error may
// pick another expert, so the bounds are the MoE step's.
TEST(GpuTrainStep, Llama4MatchesTheCpuBackend) {
  ANVIL_REQUIRE_GPU();
  const model::ModelSpec spec = model::model_spec_from_json(
      R"({"model_type": "llama4_text", "hidden_size": 256, "intermediate_size": 96,
          "intermediate_size_mlp": 384, "num_hidden_layers": 4, "num_attention_heads": 4,
          "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 1000, "num_local_experts": 8,
          "num_experts_per_tok": 1, "interleave_moe_layer_step": 2, "no_rope_layers": [1, 0, 1, 1],
          "attention_chunk_size": 32, "use_qk_norm": true, "attn_temperature_tuning": true,
          "floor_scale": 16, "attn_scale": 0.3, "max_position_embeddings": 512, "rope_theta": 10000.0})",
      "gpu_llama4");
  expect_moe_step_matches_cpu(spec, "gpu_llama4_step");
}

}  // namespace
}  // namespace anvil
