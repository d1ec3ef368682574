// The planner (train/plan.h) against the code it predicts: the arena of a built model, the
// weights a rank loads, and closed forms of the FLOPs and collectives of a tiny run.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "backend/backend.h"
#include "bnb_test_util.h"
#include "llama_test_util.h"
#include "model/llama.h"
#include "model/llama_weights.h"
#include "model/model_spec.h"
#include "model/tp_shard.h"
#include "quant/quant_load.h"
#include "train/config.h"
#include "train/flops.h"
#include "train/plan.h"

namespace anvil {
namespace {

using model::ModelSpec;

model::LoraSpec lora_all(int rank) {
  model::LoraSpec l;
  l.rank = rank;
  l.alpha = 2.0 * rank;
  l.targets.fill(true);
  return l;
}

// A quantized view's codes and scales are counted once, in BaseWeights::quantized_bytes.
std::int64_t view_bytes(const TensorView& v) {
  return v.data && !v.quant ? static_cast<std::int64_t>(v.nbytes()) : 0;
}

// Every tensor a rank's BaseWeights holds, a tied head once.
std::int64_t loaded_bytes(const model::BaseWeights& w) {
  std::int64_t n = view_bytes(w.embed) + view_bytes(w.final_norm) + w.quantized_bytes;
  if (w.lm_head.data != w.embed.data) n += view_bytes(w.lm_head);
  for (const model::LayerWeights& l : w.layers) {
    n += view_bytes(l.attn_norm) + view_bytes(l.mlp_norm);
    for (int p = 0; p < model::kProjCount; ++p) n += view_bytes(l.proj[p]) + view_bytes(l.bias[p]);
  }
  return n;
}

// A TP rank's arena depends only on its local shapes, so a single-rank model built on the
// local spec of tp ranks has exactly the arena of one of them (no TP group needed here).
TEST(Plan, ArenaMatchesTheBuiltModel) {
  struct Case {
    const char* preset;
    int tp;
    std::int64_t micro, seq;
    int rank;
  };
  for (const Case c : {Case{"tiny", 1, 2, 16, 4}, Case{"tiny", 2, 1, 24, 8}, Case{"tiny-tied", 2, 3, 8, 2},
                       Case{"tiny", 4, 2, 12, 4}}) {
    const ModelSpec spec = *model::model_preset(c.preset);
    const ModelSpec local = model::tp_local_spec(spec, model::tp_shard(spec, 0, c.tp));
    test::TempDir dir(str_cat("plan_arena_", c.preset, "_", c.tp));
    test::make_model_dir(dir, local, 3);
    for (const bool ckpt : {false, true}) {
      SCOPED_TRACE(str_cat(c.preset, " tp ", c.tp, " micro ", c.micro, " seq ", c.seq, ckpt ? " ckpt" : ""));
      model::ModelLimits limits{c.micro, c.seq, ckpt};
      const model::LoraLayout layout(local, lora_all(c.rank));
      auto be = backend::make_cpu_backend();
      model::LlamaModel m(local, model::base_weights_load(local, dir.str(), DType::dtype_f32, model::tp_shard(local, 0, 1)),
                          layout, limits, *be, 1);
      EXPECT_EQ(model::LlamaModel::arena_bytes_for(local, layout, limits), m.arena_bytes());
      // bf16 activations halve the activation buffers, never the adapter.
      const std::size_t half = model::LlamaModel::arena_bytes_for(local, layout, limits, DType::dtype_bf16);
      EXPECT_LT(half, m.arena_bytes());
      EXPECT_GT(half, m.arena_bytes() / 2);
    }
  }
}

TEST(Plan, ActivationCheckpointingKeepsOneBlockPlusTheLayerInputs) {
  const ModelSpec spec = *model::model_preset("smollm2-135m");
  const model::LoraLayout layout(spec, lora_all(16));
  const std::size_t full = model::LlamaModel::arena_bytes_for(spec, layout, {1, 512, false});
  const std::size_t ckpt = model::LlamaModel::arena_bytes_for(spec, layout, {1, 512, true});
  EXPECT_LT(ckpt * 5, full);  // 30 layers: one block's buffers instead of thirty
}

TEST(Plan, WeightBytesAreTheTensorsARankLoads) {
  for (const char* preset : {"tiny", "tiny-tied"}) {
    const ModelSpec spec = *model::model_preset(preset);
    test::TempDir dir(str_cat("plan_weights_", preset));
    test::make_model_dir(dir, spec, 5);
    for (const DType storage : {DType::dtype_f32, DType::dtype_bf16})
      for (const int tp : {1, 2, 4})
        for (int r = 0; r < tp; ++r) {
          SCOPED_TRACE(str_cat(preset, " ", dtype_name(storage), " rank ", r, " of tp ", tp));
          const model::TpShard shard = model::tp_shard(spec, r, tp);
          const model::BaseWeights w = model::base_weights_load(spec, dir.str(), storage, shard);
          EXPECT_EQ(train::plan_weight_bytes(spec, shard, storage), static_cast<double>(loaded_bytes(w)));
        }
  }
}

// Under model.quant the planned bytes are the loaded ones too: quantized linear weights
// (lm_head included when it is not skipped and not tied) as their codes and scales.
TEST(Plan, QuantizedWeightBytesAreWhatARankHolds) {
  for (const char* preset : {"tiny", "tiny-tied"}) {
    const ModelSpec spec = *model::model_preset(preset);
    test::TempDir dir(str_cat("plan_quant_", preset));
    test::make_model_dir(dir, spec, 5);
    for (const auto kind : {quant::QuantKind::quant_nf4, quant::QuantKind::quant_fp8})
      for (const std::vector<std::string>& skip : {std::vector<std::string>{"lm_head"}, std::vector<std::string>{}})
        for (const int tp : {1, 2}) {
          SCOPED_TRACE(str_cat(preset, " ", quant::quant_kind_name(kind), " skip ", skip.size(), " tp ", tp));
          const quant::QuantPolicy policy{kind, skip};
          const model::TpShard shard = model::tp_shard(spec, tp - 1, tp);
          const model::BaseWeights w = model::base_weights_load(spec, dir.str(), DType::dtype_f32, shard, policy);
          EXPECT_GT(w.quantized_bytes, 0);
          EXPECT_EQ(train::plan_weight_bytes(spec, shard, DType::dtype_f32, policy),
                    static_cast<double>(loaded_bytes(w)));
          EXPECT_LT(train::plan_weight_bytes(spec, shard, DType::dtype_f32, policy),
                    train::plan_weight_bytes(spec, shard, DType::dtype_f32));
        }
  }
}

// Llama 4: the planner counts each routed expert's projection in or out of model.quant as
// the loader does, by its per-expert name (quant_skip: [gate_proj] keeps the gate half of
// the fused gate_up_proj dense and quantizes the up half), so planned = loaded for every
// policy, at tp 1 and 2.
std::int64_t loaded_moe_bytes(const model::BaseWeights& w) {
  std::int64_t n = loaded_bytes(w);
  for (const model::LayerWeights& l : w.layers) {
    n += view_bytes(l.router) + view_bytes(l.q_norm) + view_bytes(l.k_norm);
    for (const auto& e : l.experts)
      for (const TensorView& v : e) n += view_bytes(v);
  }
  return n;
}

TEST(Plan, Llama4ExpertBytesFollowQuantSkipPerProjection) {
  const ModelSpec spec = model::model_spec_from_json(
      R"({"model_type": "llama4_text", "hidden_size": 64, "intermediate_size": 32,
  "intermediate_size_mlp": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
  "head_dim": 16, "vocab_size": 320, "num_local_experts": 3, "num_experts_per_tok": 1,
  "interleave_moe_layer_step": 2, "max_position_embeddings": 64, "rope_theta": 10000.0})",
      "plan_llama4");
  test::TempDir dir("plan_llama4");
  test::make_model_dir(dir, spec, 5);
  const std::vector<std::string>& base = quant::default_quant_skip();
  auto with = [&](std::vector<std::string> more) {
    more.insert(more.begin(), base.begin(), base.end());
    return more;
  };
  for (const auto kind : {quant::QuantKind::quant_nf4, quant::QuantKind::quant_fp8})
    for (const std::vector<std::string>& skip :
         {base, with({"gate_proj"}), with({"down_proj"}), with({"up_proj", "down_proj"}), with({"experts"})})
      for (const int tp : {1, 2}) {
        SCOPED_TRACE(str_cat(quant::quant_kind_name(kind), " skip ", skip.back(), " (", skip.size(), ") tp ", tp));
        const quant::QuantPolicy policy{kind, skip};
        const model::TpShard shard = model::tp_shard(spec, tp - 1, tp);
        const model::BaseWeights w = model::base_weights_load(spec, dir.str(), DType::dtype_f32, shard, policy);
        EXPECT_EQ(train::plan_weight_bytes(spec, shard, DType::dtype_f32, policy),
                  static_cast<double>(loaded_moe_bytes(w)));
      }
}

train::TrainConfig tiny_config(int tp, int micro, int seq, int global, bool ckpt) {
  train::TrainConfig cfg = train::config_defaults();
  cfg.output_dir = "unused";
  cfg.model.path = "unused";
  cfg.model.dtype = train::WeightDtype::weight_auto;
  cfg.lora.rank = 4;
  cfg.lora.alpha = 8;
  cfg.lora.targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  cfg.data.seq_len = seq;
  cfg.train.micro_batch = micro;
  cfg.train.global_batch = global;
  cfg.train.activation_checkpointing = ckpt;
  cfg.parallel.tp = tp;
  cfg.parallel.dp = 0;
  return cfg;
}

// A bitsandbytes NF4 base on disk: a rank keeps its slice with an f32 absmax per sub-block
// of where the slice starts (quant::nf4_load_slice), not the packed form model.quant: nf4
// quantizes to, so the planner counts that, per TP rank (tiny's down_proj slices are 88
// columns wide: sub-blocks of 8), and at tp 1 the absmax as stored (8-bit nested, or f32).
// plan_run plans rank 0 and the largest other rank.
TEST(Plan, BitsandbytesBaseBytesAreWhatEachRankHolds) {
  const ModelSpec spec = *model::model_preset("tiny");
  test::TempDir dense("plan_bnb_dense");
  test::make_model_dir(dense, spec, 5);
  for (const bool nested : {true, false}) {
    test::TempDir dir(nested ? "plan_bnb_nested" : "plan_bnb_f32");
    test::make_bnb4_model_dir(dense.str(), dir.str(), nested);
    quant::QuantPolicy policy{quant::QuantKind::quant_nf4, {"lm_head"}};
    const quant::QuantPolicy packed_as_at_load = policy;
    policy.bnb = quant::bnb4_on_disk_of_model(dir.str());
    ASSERT_TRUE(policy.bnb);
    EXPECT_EQ(policy.bnb->nested, nested);
    double rank0 = 0, largest = 0;
    for (const int tp : {1, 2})
      for (int rank = 0; rank < tp; ++rank) {
        SCOPED_TRACE(str_cat(nested ? "nested" : "f32 absmax", " tp ", tp, " rank ", rank));
        const model::TpShard shard = model::tp_shard(spec, rank, tp);
        const model::BaseWeights w = model::base_weights_load(spec, dir.str(), DType::dtype_f32, shard, policy);
        const double planned = train::plan_weight_bytes(spec, shard, DType::dtype_f32, policy);
        EXPECT_EQ(planned, static_cast<double>(loaded_bytes(w)));
        if (tp > 1 || !nested) {  // what model.quant: nf4 would hold is another count
          EXPECT_NE(train::plan_weight_bytes(spec, shard, DType::dtype_f32, packed_as_at_load), planned);
        }
        if (tp == 2) (rank == 0 ? rank0 : largest) = planned;
      }
    train::TrainConfig cfg = tiny_config(2, 2, 32, 8, false);
    cfg.model.path = dir.str();
    cfg.model.quant = quant::QuantKind::quant_nf4;
    cfg.model.quant_skip = {"lm_head"};
    const train::RunPlan p = train::plan_run(cfg, spec, 2, train::plan_device(train::PlanDeviceKind::plan_cpu, 2));
    EXPECT_EQ(p.rank0.weights, rank0);
    EXPECT_EQ(p.others.weights, std::max(rank0, largest));
  }
}

// tiny: C 64, F 176, 2 layers, 4 heads of 16, 2 KV heads, vocab 320. tp 2 x dp 2, micro 2 x
// seq 32 (N = 64 tokens), global 8: 2 micro-batches per rank per step; LoRA r 4 everywhere.
TEST(Plan, CollectivesAndFlopsOfATinyRun) {
  const ModelSpec spec = *model::model_preset("tiny");
  train::PlanDevice dev = train::plan_device(train::PlanDeviceKind::plan_h200, 4);
  for (const bool ckpt : {false, true}) {
    SCOPED_TRACE(ckpt ? "checkpointing" : "no checkpointing");
    const train::RunPlan p = train::plan_run(tiny_config(2, 2, 32, 8, ckpt), spec, 4, dev);
    ASSERT_EQ(p.dp, 2);
    ASSERT_EQ(p.accumulation, 2);
    const double N = 64, C = 64, L = 2, r = 4, e = 2;  // bf16 activations on the GPU
    const double per_layer = ckpt ? 5 : 4;
    // Replicated adapter matrices (partial gradients over TP): A of q, k, v, gate, up (r, C)
    // and B of o, down (C, r).
    const double staged = 4.0 * L * (5 * r * C + 2 * C * r);
    const double tp_payload = 2 * (N * C * e * (2 + L * per_layer) + N * 20) + staged + 8;
    EXPECT_DOUBLE_EQ(p.tp_comm.payload, tp_payload);
    EXPECT_DOUBLE_EQ(p.tp_comm.count, 2 * (2 + L * per_layer + 2) + 2);
    EXPECT_DOUBLE_EQ(p.tp_comm.moved, tp_payload);  // 2(p-1)/p = 1 for p = 2
    // One rank's adapter: q (A r x C, B 32 x r), k/v (r x C, 16 x r), o (r x 32, C x r),
    // gate/up (r x C, 88 x r), down (r x 88, C x r).
    const double local = L * ((r * C + 32 * r) + 2 * (r * C + 16 * r) + (r * 32 + C * r) + 2 * (r * C + 88 * r) +
                              (r * 88 + C * r));
    EXPECT_EQ(p.lora_local, static_cast<std::int64_t>(local));
    EXPECT_DOUBLE_EQ(p.dp_comm.payload, 4 * local + 8 + 4);
    EXPECT_DOUBLE_EQ(p.dp_comm.count, 3);
    EXPECT_DOUBLE_EQ(p.dp_comm.moved, 4 * local + 8 + 1.5 * 4);
    // FLOPs: flops.h per token, 8 x 32 tokens over 4 ranks, at 50% of 989 TFLOP/s.
    const double per_token = train::train_flops_per_token(spec, lora_all(4), 32, ckpt).total();
    EXPECT_DOUBLE_EQ(p.flops_per_rank, per_token * 8 * 32 / 4);
    EXPECT_DOUBLE_EQ(p.time.compute, p.flops_per_rank / (989e12 * 0.5));
    EXPECT_DOUBLE_EQ(p.time.tp, p.tp_comm.count * 10e-6 + p.tp_comm.moved / 450e9);  // NVLink
    // Memory: AdamW m, v are two f32 copies of the local adapter; the weights bf16.
    EXPECT_DOUBLE_EQ(p.rank0.optimizer, 8 * local);
    EXPECT_DOUBLE_EQ(p.rank0.weights, train::plan_weight_bytes(spec, model::tp_shard(spec, 0, 2), DType::dtype_bf16));
    EXPECT_DOUBLE_EQ(p.rank0.activations, ckpt ? p.rank0.activations_ckpt : p.rank0.activations_full);
  }
}

// QLoRA's case: Llama-3-70B (70.6 B parameters) with an NF4 base and LoRA r 16 on every
// projection, seq 4096, micro batch 1, activation checkpointing, fits one H200 (141 GB);
// the same run with its bf16 base (141 GB of weights alone) does not. The margin is printed.
TEST(Plan, Llama3_70bNf4FitsOneH200) {
  const ModelSpec spec = *model::model_preset("llama3-70b");
  const train::PlanDevice dev = train::plan_device(train::PlanDeviceKind::plan_h200, 1);
  train::TrainConfig cfg = tiny_config(1, 1, 4096, 1, true);
  cfg.lora.rank = 16;
  cfg.lora.alpha = 32;
  cfg.model.quant = train::QuantMode::quant_nf4;
  const train::RunPlan nf4 = train::plan_run(cfg, spec, 1, dev);
  cfg.model.quant = train::QuantMode::quant_none;
  const train::RunPlan bf16 = train::plan_run(cfg, spec, 1, dev);
  const double gb = 1e9, total = nf4.rank0.total();
  std::printf("llama3-70b nf4 LoRA r16, seq 4096, 1 x H200: weights %.1f GB, adapter+optimizer %.2f GB, "
              "activations %.1f GB, scratch+comm+runtime %.1f GB, total %.1f GB of %.1f GB: margin %.1f GB "
              "(%.0f%%); with a bf16 base %.1f GB\n",
              nf4.rank0.weights / gb, (nf4.rank0.adapter + nf4.rank0.optimizer) / gb, nf4.rank0.activations / gb,
              (nf4.rank0.scratch + nf4.rank0.comm + nf4.rank0.runtime) / gb, total / gb, dev.memory_bytes / gb,
              (dev.memory_bytes - total) / gb, 100.0 * (dev.memory_bytes - total) / dev.memory_bytes,
              bf16.rank0.total() / gb);
  EXPECT_LT(total, dev.memory_bytes);
  EXPECT_GT(bf16.rank0.total(), dev.memory_bytes);
  // NF4 with double quantization: ~0.53 bytes per quantized parameter; the embedding and the
  // untied head stay bf16 (2 x 128256 x 8192 x 2 bytes = 4.2 GB).
  const double head_and_embed = 2.0 * 128256 * 8192 * 2;
  const double linear_params = static_cast<double>(spec.num_hidden_layers) *
                               (8192.0 * 8192 * 2 + 8192.0 * 1024 * 2 + 3.0 * 8192 * 28672);
  EXPECT_NEAR(nf4.rank0.weights, head_and_embed + linear_params * 0.5 * (1 + 1.0 / 64 * 2 + 4.0 / 64 / 256 * 2),
              0.01 * nf4.rank0.weights);
  EXPECT_NE(train::plan_format(nf4).find("device memory"), std::string::npos);
  EXPECT_EQ(train::plan_format(nf4).find("DOES NOT FIT"), std::string::npos);
  EXPECT_NE(train::plan_format(bf16).find("DOES NOT FIT"), std::string::npos);
}

// The workload anvil is for: Llama 4 Maverick (400.7 B parameters, 128 experts, top 1) with
// LoRA r 16 on attention, every routed expert and the shared experts, seq 4096, micro batch 1,
// activation checkpointing, on one server of 4 H200 NVL with ep 4. A bf16 base does not fit
// (about 800 GB over 4 GPUs of 141 GB); NF4 and FP8 bases do. The margins are printed.
TEST(Plan, Llama4MaverickFitsFourH200NvlQuantized) {
  const ModelSpec spec = *model::model_preset("llama4-maverick");
  const train::PlanDevice dev = train::plan_device(train::PlanDeviceKind::plan_h200_nvl, 4);
  train::TrainConfig cfg = tiny_config(1, 1, 4096, 8, true);
  cfg.lora.rank = 16;
  cfg.lora.alpha = 32;
  cfg.lora.targets = {"q_proj", "k_proj", "v_proj", "o_proj", "experts", "shared_expert"};
  cfg.parallel.ep = 4;
  const double gb = 1e9;
  double totals[3] = {};
  int i = 0;
  for (const train::QuantMode q : {train::QuantMode::quant_none, train::QuantMode::quant_nf4,
                                   train::QuantMode::quant_fp8}) {
    cfg.model.quant = q;
    const train::RunPlan p = train::plan_run(cfg, spec, 4, dev);
    ASSERT_EQ(p.ep, 4);
    const double total = std::max(p.rank0.total(), p.others.total());
    std::printf("llama4-maverick LoRA r16, seq 4096, ep 4 on 4 x H200 NVL, base %s: weights %.1f GB, adapter+optimizer "
                "%.2f GB, activations %.1f GB, total %.1f GB of %.1f GB (%s %.1f GB); all-to-all %.2f GB sent per "
                "rank per step\n",
                i == 0 ? "bf16" : i == 1 ? "nf4" : "fp8", p.rank0.weights / gb,
                (p.rank0.adapter + p.rank0.optimizer) / gb, p.rank0.activations / gb, total / gb,
                dev.memory_bytes / gb, total <= dev.memory_bytes ? "margin" : "short by",
                std::abs(dev.memory_bytes - total) / gb, p.ep_comm.moved / gb);
    EXPECT_GT(p.ep_comm.moved, 0);
    totals[i++] = total;
  }
  EXPECT_GT(totals[0], dev.memory_bytes);  // bf16: the routed experts alone are ~190 GB a GPU
  EXPECT_LT(totals[1], dev.memory_bytes);
  EXPECT_LT(totals[2], dev.memory_bytes);
  EXPECT_LT(totals[1], totals[2]);
  // bf16 weights: every parameter but a GPU's 3/4 of the routed experts, two bytes each.
  const double routed = 48.0 / 2 * 128 * 3 * 5120 * 8192;  // MoE every other layer, 128 experts of 8192
  const double params = static_cast<double>(model::model_parameter_count(spec));
  cfg.model.quant = train::QuantMode::quant_none;
  EXPECT_NEAR(train::plan_run(cfg, spec, 4, dev).rank0.weights, 2.0 * (params - routed * 3 / 4),
              0.01 * 2.0 * params / 4);
}

TEST(Plan, DevicesAndTheirLinks) {
  EXPECT_EQ(train::plan_device_from_name("h200"), train::PlanDeviceKind::plan_h200);
  EXPECT_EQ(train::plan_device_from_name("h200-nvl"), train::PlanDeviceKind::plan_h200_nvl);
  EXPECT_FALSE(train::plan_device_from_name("a100").has_value());
  // The target server: 4 H200 NVL on an NVLink bridge; tp 4 stays on it, tp 8 would not.
  const train::PlanDevice nvl = train::plan_device(train::PlanDeviceKind::plan_h200_nvl, 4);
  EXPECT_EQ(nvl.ranks_per_node, 4);
  EXPECT_DOUBLE_EQ(nvl.memory_bytes, 141e9);
  const train::RunPlan on_bridge = train::plan_run(tiny_config(4, 1, 16, 8, false), *model::model_preset("tiny"), 4, nvl);
  EXPECT_FALSE(on_bridge.tp_across_nodes);
  EXPECT_DOUBLE_EQ(on_bridge.time.tp, on_bridge.tp_comm.count * 15e-6 + on_bridge.tp_comm.moved / 300e9);
  EXPECT_NE(train::plan_format(on_bridge).find("NVLink bridge"), std::string::npos);
  const train::PlanDevice cpu = train::plan_device(train::PlanDeviceKind::plan_cpu, 2);
  EXPECT_GT(cpu.memory_bytes, 1e9);
  EXPECT_EQ(cpu.ranks_per_node, 2);
  // 16 GPUs: tp 8 in a node, dp 2 across nodes.
  const train::RunPlan p = train::plan_run(tiny_config(2, 1, 16, 8, false), *model::model_preset("tiny"), 16,
                                           train::plan_device(train::PlanDeviceKind::plan_h100, 16));
  EXPECT_FALSE(p.tp_across_nodes);
  EXPECT_TRUE(p.dp_across_nodes);
  const std::string text = train::plan_format(p);
  for (const char* want : {"rank 0", "base weights (bf16)", "activations, checkpointing", "TP collectives",
                           "DP collectives", "step", "400 Gb/s"})
    EXPECT_NE(text.find(want), std::string::npos) << want << " in\n" << text;
}

// A tiny Qwen3-MoE: C 64, 2 layers both sparse, 6 experts of 32, top 2; tp 1, ep 2 on 4
// H200s, micro 1 x seq 32 (N = 32 tokens), global 8, LoRA r 4 on attention and experts.
model::ModelSpec tiny_moe() {
  return model::model_spec_from_json(R"({"model_type": "qwen3_moe", "hidden_size": 64, "intermediate_size": 96,
      "moe_intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
      "head_dim": 16, "vocab_size": 320, "num_experts": 6, "num_experts_per_tok": 2, "norm_topk_prob": true,
      "max_position_embeddings": 128})", "tiny_moe");
}

TEST(Plan, ExpertParallelSplitsExpertsAndCountsAllToAlls) {
  const ModelSpec spec = tiny_moe();
  const model::TpShard whole = model::tp_shard(spec, 0, 1);
  // Weights: each doubling of ep halves what a rank holds of the routed experts.
  const double w1 = train::plan_weight_bytes(spec, whole, DType::dtype_bf16, {}, 1);
  const double w2 = train::plan_weight_bytes(spec, whole, DType::dtype_bf16, {}, 2);
  const double experts = 2.0 * 6 * 3 * 64 * 32 * 2;  // layers x E x 3 projections x C x F x bf16
  EXPECT_DOUBLE_EQ(w1 - w2, experts / 2);
  EXPECT_NEAR(w2 - train::plan_weight_bytes(spec, whole, DType::dtype_bf16, {}, 3), experts / 6, 1e-6 * experts);

  const train::PlanDevice dev = train::plan_device(train::PlanDeviceKind::plan_h200, 4);
  for (const bool ckpt : {false, true}) {
    SCOPED_TRACE(ckpt ? "checkpointing" : "no checkpointing");
    train::TrainConfig cfg = tiny_config(1, 1, 32, 8, ckpt);
    cfg.lora.targets = {"q_proj", "k_proj", "v_proj", "o_proj", "experts"};
    const train::RunPlan one = train::plan_run(cfg, spec, 4, dev);
    cfg.parallel.ep = 2;
    const train::RunPlan p = train::plan_run(cfg, spec, 4, dev);
    ASSERT_EQ(p.ep, 2);
    EXPECT_EQ(one.ep_comm.count, 0);
    // Per sparse layer and micro-batch: counts (6 experts, 8 bytes each) once per forward,
    // N·k rows of C in bf16 out and back per forward, and twice in the backward.
    const double a = p.accumulation, S = 2, rows = 32 * 2 * 64 * 2.0, passes = ckpt ? 2 : 1;
    EXPECT_DOUBLE_EQ(p.ep_comm.count, a * S * (passes + 2 * passes + 2));
    const double payload = a * S * (passes * 8 * 6 + (2 * passes + 2) * rows);
    EXPECT_DOUBLE_EQ(p.ep_comm.payload, payload);
    EXPECT_DOUBLE_EQ(p.ep_comm.moved, payload / 2);  // half of each rank's rows stay
    EXPECT_DOUBLE_EQ(p.time.ep, p.ep_comm.count * 10e-6 + p.ep_comm.moved / 450e9);
    // The adapter: each expert's A (4 x 64 or 4 x 32) and B (32 x 4 or 64 x 4) on one rank of two.
    const double expert_lora = S * 6 * (2 * (4 * 64 + 32 * 4) + (4 * 32 + 64 * 4));
    EXPECT_EQ(one.lora_local - p.lora_local, static_cast<std::int64_t>(expert_lora / 2));
    EXPECT_DOUBLE_EQ(one.rank0.optimizer - p.rank0.optimizer, 8.0 * expert_lora / 2);
    EXPECT_DOUBLE_EQ(one.rank0.weights - p.rank0.weights, experts / 2);
    const std::string text = train::plan_format(p);
    for (const char* want : {"ep 2", "EP all-to-alls", "6 routed, top 2", "3 per rank (ep 2)"})
      EXPECT_NE(text.find(want), std::string::npos) << want << " in\n" << text;
  }
}

// The layouts table: every tp x ep x dp of the world, the ones the model or the batch cannot
// take named with their key, the fastest that fits marked.
TEST(Plan, LayoutChoicesCoverTheWorld) {
  const ModelSpec spec = tiny_moe();
  train::TrainConfig cfg = tiny_config(1, 1, 32, 8, true);
  cfg.lora.targets = {"q_proj", "v_proj", "experts"};
  const train::PlanDevice dev = train::plan_device(train::PlanDeviceKind::plan_h200_nvl, 4);
  const std::vector<train::PlanChoice> choices = train::plan_grid_choices(cfg, spec, 4, dev);
  // tp 1: ep 1, 2, 4; tp 2: ep 1, 2; tp 4: ep 1.
  ASSERT_EQ(choices.size(), 6u);
  int planned = 0;
  for (const train::PlanChoice& c : choices) {
    EXPECT_EQ(c.tp * c.ep * c.dp, 4);
    if (c.ep == 4) {  // 6 experts do not split 4 ways
      EXPECT_NE(c.problem.find("parallel.ep"), std::string::npos) << c.problem;
      continue;
    }
    EXPECT_TRUE(c.problem.empty()) << c.problem;
    EXPECT_GT(c.memory, 0);
    EXPECT_GT(c.step, 0);
    EXPECT_TRUE(c.fits);
    ++planned;
  }
  EXPECT_EQ(planned, 5);
  // On 8 GPUs tp 8 cannot split 4 attention heads.
  for (const train::PlanChoice& c : train::plan_grid_choices(cfg, spec, 8, train::plan_device(
                                         train::PlanDeviceKind::plan_h200_nvl, 8)))
    if (c.tp == 8) {
      EXPECT_NE(c.problem.find("parallel.tp: 8 does not divide"), std::string::npos) << c.problem;
    }
  const std::string text = train::plan_format_choices(choices, dev);
  EXPECT_NE(text.find("fastest that fits"), std::string::npos) << text;
  EXPECT_NE(text.find("not possible: parallel.ep"), std::string::npos) << text;
  // A dense model has no ep choices.
  EXPECT_EQ(train::plan_grid_choices(tiny_config(1, 1, 32, 8, true), *model::model_preset("tiny"), 4, dev).size(), 3u);
}

TEST(Plan, MeasuredCpuGemmRateIsPlausible) {
  const double rate = train::plan_measure_cpu_gemm(*model::model_preset("tiny"), 64, 1);
  EXPECT_GT(rate, 1e7);
  EXPECT_LT(rate, 1e14);
}

}  // namespace
}  // namespace anvil
