// Mixture-of-experts blocks (Qwen3-MoE and Mixtral shapes) and Qwen3's qk-norm against
// themselves: the routing bookkeeping by hand, every adapter gradient (experts', and the
// attention's, which the router and the load-balancing loss feed) against central finite
// differences of the loss, micro-batch splits and activation checkpointing.
#include <numeric>
#include <random>

#include "backend/backend.h"
#include "llama_test_util.h"
#include "model/llama.h"
#include "model/llama_generate.h"
#include "model/moe_routing.h"
#include "model/tp_shard.h"
#include "quant/quant_state.h"

namespace anvil {
namespace {

using test::rel_error;

TEST(MoeRouting, TopKSortsRowsByExpertInTokenOrder) {
  // 3 tokens, 4 experts, top-2. Token 0 prefers 2 then 0, token 1 prefers 0 then 3, token 2
  // prefers 2 then 3.
  const std::vector<float> logits = {1.0f, -1.0f, 2.0f, 0.0f,  //
                                     3.0f, 0.0f,  1.0f, 2.0f,  //
                                     0.0f, -2.0f, 4.0f, 1.0f};
  std::vector<float> probs(12), weight(6);
  std::vector<std::int32_t> expert(6), row(6), token(6);
  std::vector<std::int64_t> offsets(5);
  const model::MoeRoute r{probs.data(), expert.data(), weight.data(), row.data(), token.data(), offsets.data()};
  model::moe_route(logits.data(), 3, 4, 2, true, r);
  EXPECT_EQ(expert, (std::vector<std::int32_t>{2, 0, 0, 3, 2, 3}));
  EXPECT_EQ(offsets, (std::vector<std::int64_t>{0, 2, 2, 4, 6}));
  // expert 0: (token 0, choice 1), (token 1, choice 0); expert 2: tokens 0, 2; expert 3: 1, 2
  EXPECT_EQ(token, (std::vector<std::int32_t>{0, 1, 0, 2, 1, 2}));
  EXPECT_EQ(row, (std::vector<std::int32_t>{2, 0, 1, 4, 3, 5}));
  for (int t = 0; t < 3; ++t) {
    EXPECT_NEAR(weight[2 * t] + weight[2 * t + 1], 1.0f, 1e-6f);
    const float e1 = std::exp(logits[4 * t + expert[2 * t]]), e2 = std::exp(logits[4 * t + expert[2 * t + 1]]);
    EXPECT_NEAR(weight[2 * t], e1 / (e1 + e2), 1e-6f);
  }
  // Without renormalisation the weights are the softmax probabilities themselves.
  model::moe_route(logits.data(), 3, 4, 2, false, r);
  EXPECT_FLOAT_EQ(weight[0], probs[2]);
  EXPECT_FLOAT_EQ(weight[1], probs[0]);
}

TEST(MoeRouting, CombineAndScatterAreEachOthersTranspose) {
  const std::vector<float> logits = {0.5f, 1.0f, -1.0f, 2.0f, 0.0f, 1.0f};  // 2 tokens, 3 experts
  std::vector<float> probs(6), weight(4);
  std::vector<std::int32_t> expert(4), row(4), token(4);
  std::vector<std::int64_t> offsets(4);
  const model::MoeRoute r{probs.data(), expert.data(), weight.data(), row.data(), token.data(), offsets.data()};
  model::moe_route(logits.data(), 2, 3, 2, true, r);
  const std::int64_t C = 3;
  std::vector<float> x = {1, 2, 3, 4, 5, 6}, xs(12), ye(12), y(6), dy = {1, -1, 2, 0.5f, 3, -2};
  model::moe_gather(xs.data(), x.data(), r, 2, 2, C);
  for (int i = 0; i < 4; ++i)
    for (int c = 0; c < C; ++c) EXPECT_EQ(xs[static_cast<std::size_t>(i * C + c)], x[static_cast<std::size_t>(token[i] * C + c)]);
  for (std::size_t i = 0; i < ye.size(); ++i) ye[i] = 0.25f * static_cast<float>(i) - 1.0f;
  model::moe_combine(y.data(), ye.data(), r, 2, 2, C);
  std::vector<float> dweight(4), d_ye(12), dx(6);
  model::moe_combine_backward(dweight.data(), d_ye.data(), dy.data(), ye.data(), r, 2, 2, C);
  // <dy, combine(ye)> = <d_ye, ye> and = Σ dweight · weight (both linear in their input)
  double lhs = 0, rhs = 0, wsum = 0;
  for (std::size_t i = 0; i < y.size(); ++i) lhs += static_cast<double>(dy[i]) * y[i];
  for (std::size_t i = 0; i < ye.size(); ++i) rhs += static_cast<double>(d_ye[i]) * ye[i];
  for (std::size_t i = 0; i < weight.size(); ++i) wsum += static_cast<double>(dweight[i]) * weight[i];
  EXPECT_NEAR(lhs, rhs, 1e-5);
  EXPECT_NEAR(lhs, wsum, 1e-5);
  model::moe_scatter(dx.data(), d_ye.data(), r, 2, 2, C);
  double g = 0, s = 0;  // <gather(x), d_ye> = <x, scatter(d_ye)>
  for (std::size_t i = 0; i < xs.size(); ++i) g += static_cast<double>(xs[i]) * d_ye[i];
  for (std::size_t i = 0; i < x.size(); ++i) s += static_cast<double>(x[i]) * dx[i];
  EXPECT_NEAR(g, s, 1e-5);
}

// Odd sizes: 5 experts, top-2, 3 heads on 1 KV head, a dense layer between sparse ones.
const char* kQwen3Moe = R"({"model_type": "qwen3_moe", "hidden_size": 48, "intermediate_size": 56,
  "moe_intermediate_size": 24, "num_hidden_layers": 3, "num_attention_heads": 3, "num_key_value_heads": 1,
  "head_dim": 16, "vocab_size": 320, "num_experts": 5, "num_experts_per_tok": 2, "norm_topk_prob": true,
  "mlp_only_layers": [1], "output_router_logits": true, "router_aux_loss_coef": 0.05,
  "max_position_embeddings": 64, "rms_norm_eps": 1e-6})";
const char* kMixtral = R"({"model_type": "mixtral", "hidden_size": 40, "intermediate_size": 32,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 320,
  "num_local_experts": 4, "num_experts_per_tok": 2, "output_router_logits": true,
  "router_aux_loss_coef": 0.02, "max_position_embeddings": 64, "sliding_window": null})";

// Llama 4 with every feature on at odd sizes: dense and sparse layers alternate, top-2
// sigmoid routing scaling the experts' input, the shared expert, a NoPE layer (1) with a
// temperature that changes every 2 positions, chunks of 4 on the RoPE layers, L2 qk-norm.
const char* kLlama4 = R"({"model_type": "llama4_text", "hidden_size": 48, "intermediate_size": 24,
  "intermediate_size_mlp": 56, "num_hidden_layers": 4, "num_attention_heads": 3, "num_key_value_heads": 1,
  "head_dim": 16, "vocab_size": 320, "num_local_experts": 5, "num_experts_per_tok": 2,
  "interleave_moe_layer_step": 2, "no_rope_layers": [1, 0, 1, 1], "attention_chunk_size": 4,
  "use_qk_norm": true, "attn_temperature_tuning": true, "floor_scale": 2, "attn_scale": 0.3,
  "max_position_embeddings": 64, "rope_theta": 10000.0})";

struct MoeFixture {
  model::ModelSpec spec;
  test::TempDir dir;
  std::unique_ptr<backend::Backend> be = backend::make_cpu_backend();
  model::LoraSpec lora;
  std::vector<float> adapter;

  MoeFixture(const char* json, const std::string& tag) : spec(model::model_spec_from_json(json, tag)), dir(tag) {
    test::make_model_dir(dir, spec, 9);
    lora.rank = 3;
    lora.alpha = 6;
    lora.targets = model::lora_targets_from_names(
        {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "experts"}, "test");
  }
  std::unique_ptr<model::LlamaModel> make(std::int64_t B, std::int64_t T, bool ckpt = false) {
    const model::LoraLayout layout(spec, lora);
    auto m = std::make_unique<model::LlamaModel>(
        spec, model::base_weights_load(spec, dir.str(), DType::dtype_f32, model::tp_shard(spec, 0, 1)), layout,
        model::ModelLimits{B, T, ckpt}, *be, 1);
    if (adapter.empty()) {
      std::mt19937 rng(4);
      std::normal_distribution<float> nd(0.0f, 0.1f);
      adapter.resize(static_cast<std::size_t>(layout.size()));
      for (auto& x : adapter) x = nd(rng);
    }
    std::copy(adapter.begin(), adapter.end(), m->lora_params());
    return m;
  }
};

model::TokenBatch batch_of(const std::vector<std::int32_t>& ids, const std::vector<std::int32_t>& targets,
                           const std::vector<std::int32_t>& pos, std::int64_t B, std::int64_t T, std::int64_t row0 = 0) {
  model::TokenBatch b;
  b.batch = B;
  b.seq = T;
  const auto o = static_cast<std::size_t>(row0 * T);
  b.ids = ids.data() + o;
  b.targets = targets.data() + o;
  b.positions = pos.data() + o;
  b.row_offset = row0;
  return b;
}

struct Tokens {
  std::vector<std::int32_t> ids, targets, pos;
  Tokens(std::int64_t B, std::int64_t T, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<std::int32_t> tok(0, 319);
    for (std::int64_t i = 0; i < B * T; ++i) {
      ids.push_back(tok(rng));
      targets.push_back(i % 7 == 3 ? -100 : tok(rng));
      pos.push_back(static_cast<std::int32_t>(i % T));
    }
  }
};

// J = grad_scale · Σ CE + aux_weight · aux, the objective train_micro_batch differentiates.
void check_gradients(const char* json, const std::string& tag) {
  MoeFixture f(json, tag);
  const std::int64_t B = 2, T = 9;
  const Tokens tk(B, T, 5);
  auto m = f.make(B, T);
  const float scale = 0.05f, aux_w = static_cast<float>(f.spec.moe.aux_loss_coef) * 20.0f;  // make the aux term count
  m->set_aux_loss_weight(aux_w);
  const model::TokenBatch b = batch_of(tk.ids, tk.targets, tk.pos, B, T);
  auto objective = [&]() {
    const double ce = m->train_micro_batch(b, scale, 1);
    return scale * ce + aux_w * m->last_aux_loss();
  };
  m->zero_grads();
  objective();
  if (f.spec.moe.aux_loss) {
    EXPECT_GT(m->last_aux_loss(), 0.9);  // E · Σ f·P is about 1 for a spread routing
  }
  const auto n = static_cast<std::size_t>(m->lora_size());
  const std::vector<float> grad(m->lora_grads(), m->lora_grads() + n);
  const model::LoraLayout layout(f.spec, f.lora);
  // The largest gradient entry of A and of B of a few slots: attention of the first sparse
  // layer (fed by its router and the aux loss), an expert's gate/up/down, a dense MLP's.
  int checked = 0;
  for (const auto& s : layout.slots()) {
    const bool wanted = (s.layer == 0 && s.proj <= model::Proj::proj_v) ||
                        (s.expert == 1 && s.layer == 0) || (s.expert == 3 && s.layer == f.spec.num_hidden_layers - 1) ||
                        (!model::proj_is_expert(s.proj) && s.proj >= model::Proj::proj_gate);
    if (!wanted) continue;
    for (const std::int64_t off : {s.a_offset, s.b_offset}) {
      const std::int64_t count = off == s.a_offset ? f.lora.rank * s.in : s.out * f.lora.rank;
      std::int64_t at = off;
      for (std::int64_t i = off; i < off + count; ++i)
        if (std::abs(grad[static_cast<std::size_t>(i)]) > std::abs(grad[static_cast<std::size_t>(at)])) at = i;
      // A small step: a larger one can flip a routing choice, where the loss jumps.
      const float keep = m->lora_params()[at], h = 2e-3f;
      m->lora_params()[at] = keep + h;
      const double up = objective();
      m->lora_params()[at] = keep - h;
      const double down = objective();
      m->lora_params()[at] = keep;
      const double fd = (up - down) / (2.0 * h), g = grad[static_cast<std::size_t>(at)];
      EXPECT_NEAR(g, fd, 2e-2 * std::abs(fd) + 2e-5) << s.module << (off == s.a_offset ? " A" : " B");
      ++checked;
    }
  }
  EXPECT_GE(checked, 12);
}

TEST(MoeModel, Qwen3MoeGradientsMatchFiniteDifferences) { check_gradients(kQwen3Moe, "moe_fd_qwen3"); }
TEST(MoeModel, MixtralGradientsMatchFiniteDifferences) { check_gradients(kMixtral, "moe_fd_mixtral"); }
// Through the router's sigmoid into the scaled expert input, the shared expert, the paired
// RoPE, the L2 qk-norm, the NoPE temperature and the chunked attention.
TEST(MoeModel, Llama4GradientsMatchFiniteDifferences) { check_gradients(kLlama4, "moe_fd_llama4"); }

TEST(MoeModel, MicroBatchSplitAndCheckpointingGiveTheSameGradients) {
  MoeFixture f(kQwen3Moe, "moe_split");
  const std::int64_t T = 8;
  const Tokens tk(2, T, 6);
  auto whole = f.make(2, T), split = f.make(1, T), ckpt = f.make(2, T, true);
  for (auto* m : {whole.get(), split.get(), ckpt.get()}) m->zero_grads();  // aux weight 0: additive in rows
  const double a = whole->train_micro_batch(batch_of(tk.ids, tk.targets, tk.pos, 2, T), 0.1f, 3);
  const double b = split->train_micro_batch(batch_of(tk.ids, tk.targets, tk.pos, 1, T, 0), 0.1f, 3) +
                   split->train_micro_batch(batch_of(tk.ids, tk.targets, tk.pos, 1, T, 1), 0.1f, 3);
  const double c = ckpt->train_micro_batch(batch_of(tk.ids, tk.targets, tk.pos, 2, T), 0.1f, 3);
  const auto n = static_cast<std::size_t>(whole->lora_size());
  EXPECT_NEAR(a, b, 1e-5 * std::abs(a));
  EXPECT_LE(rel_error(split->lora_grads(), whole->lora_grads(), n), 1e-5);
  EXPECT_EQ(a, c);  // the recompute repeats the forward exactly
  EXPECT_EQ(std::vector<float>(ckpt->lora_grads(), ckpt->lora_grads() + n),
            std::vector<float>(whole->lora_grads(), whole->lora_grads() + n));
  // Every token is routed to top_k experts of each sparse layer (layers 0 and 2).
  const auto load = whole->last_expert_load();
  ASSERT_EQ(load.size(), 2u * 5u);
  EXPECT_EQ(std::accumulate(load.begin(), load.begin() + 5, std::int64_t{0}), 2 * T * 2);
}

// Qwen3's dense form: q/k RMSNorm per head, no experts.
const char* kQwen3Dense = R"({"model_type": "qwen3", "hidden_size": 48, "intermediate_size": 56,
  "num_hidden_layers": 2, "num_attention_heads": 3, "num_key_value_heads": 1, "head_dim": 16,
  "vocab_size": 320, "max_position_embeddings": 64, "rms_norm_eps": 1e-6})";

TEST(MoeModel, KvCacheDecoderMatchesFullForward) {
  for (const char* json : {kQwen3Moe, kMixtral, kQwen3Dense, kLlama4}) {
    MoeFixture f(json, "moe_decode");
    const std::int64_t T = 9, V = f.spec.vocab_size;
    const Tokens tk(1, T, 8);
    auto m = f.make(1, T);
    std::vector<float> full(static_cast<std::size_t>(T * V));
    m->logits(batch_of(tk.ids, tk.targets, tk.pos, 1, T), full.data());
    model::Generator gen(f.spec, m->base(), &m->lora_layout(), m->lora_params(), *f.be, T);
    for (std::int64_t t = 0; t < T; ++t) {
      const float* step = gen.step(tk.ids[static_cast<std::size_t>(t)]);
      EXPECT_LE(rel_error(step, full.data() + t * V, static_cast<std::size_t>(V)), 1e-5)
          << f.spec.model_type << " position " << t;
    }
    // A prompt's prefill: all rows at once on a dense model (q/k norms per row), token by
    // token through the experts.
    gen.reset();
    const float* last = gen.prefill(std::span<const std::int32_t>(tk.ids.data(), static_cast<std::size_t>(T)));
    EXPECT_LE(rel_error(last, full.data() + (T - 1) * V, static_cast<std::size_t>(V)), 1e-5) << f.spec.model_type;
  }
}

TEST(MoeModel, SpecNamesEveryTensorAndLayoutSkipsMissingModules) {
  const model::ModelSpec q = model::model_spec_from_json(kQwen3Moe, "q");
  EXPECT_TRUE(q.layer_is_moe(0));
  EXPECT_FALSE(q.layer_is_moe(1));  // mlp_only_layers
  EXPECT_TRUE(q.qk_norm);
  const model::ModelSpec m = model::model_spec_from_json(kMixtral, "m");
  EXPECT_FALSE(m.qk_norm);
  EXPECT_EQ(m.moe.intermediate_size, 32);
  EXPECT_EQ(model::proj_module_path(m, 1, model::Proj::proj_expert_up, 3), "model.layers.1.block_sparse_moe.experts.3.w3");
  model::LoraSpec l;
  l.rank = 2;
  l.alpha = 2;
  l.targets = model::lora_targets_from_names({"gate_proj", "experts"}, "t");
  const model::LoraLayout layout(q, l);
  // layer 0: 5 experts × 3; layer 1: the dense gate; layer 2: 5 × 3
  ASSERT_EQ(layout.slots().size(), 31u);
  EXPECT_EQ(layout.slots()[15].module, "model.layers.1.mlp.gate_proj");
  EXPECT_EQ(layout.find(2, model::Proj::proj_expert_down, 4)->module, "model.layers.2.mlp.experts.4.down_proj");
  EXPECT_EQ(layout.find(0, model::Proj::proj_gate), nullptr);
  EXPECT_THROW(model::model_spec_from_json(R"({"model_type": "mixtral", "hidden_size": 8, "intermediate_size": 8,
    "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 16, "num_local_experts": 2,
    "num_experts_per_tok": 3})", "bad"), Error);
}

// model.quant on Llama 4: each routed expert is quantized from its own (out, in) copy out of
// the fused x·W tensors, so its dequantized values are those of quantizing the dense load's
// expert; the router stays f32 (quant_skip's default), the shared expert is quantized like
// any linear weight, and quant_skip: [experts] keeps the routed experts dense.
TEST(MoeModel, Llama4ExpertsQuantizeAtLoadFromTheirOwnCopy) {
  MoeFixture f(kLlama4, "moe_quant_llama4");
  const model::TpShard one = model::tp_shard(f.spec, 0, 1);
  const model::BaseWeights dense = model::base_weights_load(f.spec, f.dir.str(), DType::dtype_f32, one);
  for (const auto kind : {quant::QuantKind::quant_nf4, quant::QuantKind::quant_fp8}) {
    const DType dt = kind == quant::QuantKind::quant_nf4 ? DType::dtype_nf4 : DType::dtype_fp8_e4m3;
    const quant::QuantPolicy policy{kind, quant::default_quant_skip()};
    const model::BaseWeights q = model::base_weights_load(f.spec, f.dir.str(), DType::dtype_f32, one, policy);
    int checked = 0;
    for (std::int64_t l = 0; l < f.spec.num_hidden_layers; ++l) {
      if (!f.spec.layer_is_moe(l)) continue;
      const model::LayerWeights& got = q.layers[static_cast<std::size_t>(l)];
      const model::LayerWeights& want = dense.layers[static_cast<std::size_t>(l)];
      ASSERT_EQ(got.router.dtype, DType::dtype_f32);
      EXPECT_EQ(std::vector<float>(got.router.as<float>(), got.router.as<float>() + got.router.numel()),
                std::vector<float>(want.router.as<float>(), want.router.as<float>() + want.router.numel()));
      EXPECT_EQ(got.proj[static_cast<int>(model::Proj::proj_gate)].dtype, dt);  // the shared expert
      ASSERT_EQ(got.experts.size(), 5u);
      for (std::size_t e = 0; e < 5; ++e)
        for (std::size_t k = 0; k < 3; ++k) {
          const TensorView& v = got.experts[e][k];
          const TensorView& d = want.experts[e][k];
          ASSERT_EQ(v.dtype, dt);
          ASSERT_EQ(v.shape, d.shape);
          std::vector<float> expect(d.as<float>(), d.as<float>() + d.numel()), values(expect.size());
          quant::quant_roundtrip_sliced(expect.data(), d.shape[0], d.shape[1], kind, 1, false);
          quant::quant_dequantize(v, 0, v.numel(), values.data());
          EXPECT_EQ(values, expect) << "layer " << l << " expert " << e << " projection " << k;
          EXPECT_NE(values, std::vector<float>(d.as<float>(), d.as<float>() + d.numel()));  // really quantized
          ++checked;
        }
    }
    EXPECT_EQ(checked, 2 * 5 * 3);
    EXPECT_GT(q.quantized_bytes, 0);
    quant::QuantPolicy keep = policy;
    keep.skip.push_back("experts");
    const model::BaseWeights kept = model::base_weights_load(f.spec, f.dir.str(), DType::dtype_f32, one, keep);
    EXPECT_EQ(kept.layers[1].experts[2][0].dtype, DType::dtype_f32);
    EXPECT_EQ(kept.layers[1].proj[static_cast<int>(model::Proj::proj_up)].dtype, dt);
  }
}

// Expert parallelism: ep rank 1 of 2 on 4 experts holds experts 2 and 3, only their weights
// (the same values as the whole model's), and only their adapters; its values move to and
// from the full layout in place, the other experts' untouched.
void check_ep_shard(const std::string& json, const std::string& tag) {
  MoeFixture f(json.c_str(), tag);
  model::TpShard shard = model::tp_shard(f.spec, 0, 1);
  model::ep_shard_set(shard, f.spec, 1, 2);
  EXPECT_EQ(shard.expert_first, 2);
  EXPECT_EQ(shard.experts, 2);
  const model::BaseWeights whole = model::base_weights_load(f.spec, f.dir.str(), DType::dtype_f32,
                                                            model::tp_shard(f.spec, 0, 1));
  const model::BaseWeights mine = model::base_weights_load(f.spec, f.dir.str(), DType::dtype_f32, shard);
  std::int64_t sparse = 0, first_sparse = -1;
  for (std::size_t l = 0; l < mine.layers.size(); ++l) {
    if (!f.spec.layer_is_moe(static_cast<std::int64_t>(l))) continue;
    if (sparse++ == 0) first_sparse = static_cast<std::int64_t>(l);
    ASSERT_EQ(mine.layers[l].experts.size(), 2u);
    for (std::size_t j = 0; j < 2; ++j)
      for (std::size_t k = 0; k < 3; ++k) {
        const TensorView& a = mine.layers[l].experts[j][k];
        const TensorView& b = whole.layers[l].experts[2 + j][k];
        ASSERT_EQ(a.shape, b.shape);
        EXPECT_EQ(std::vector<float>(a.as<float>(), a.as<float>() + a.numel()),
                  std::vector<float>(b.as<float>(), b.as<float>() + b.numel()));
      }
  }
  ASSERT_GT(sparse, 0);
  const model::LoraLayout full(f.spec, f.lora);
  const model::LoraLayout local(model::tp_local_spec(f.spec, shard), f.lora);
  std::int64_t expert_slots = 0;
  for (const model::LoraSlot& s : local.slots())
    if (s.expert >= 0) {
      ++expert_slots;
      EXPECT_TRUE(s.expert == 2 || s.expert == 3) << s.module;
      EXPECT_NE(s.module.find(str_cat(".experts.", s.expert, ".")), std::string::npos) << s.module;
    }
  EXPECT_EQ(expert_slots, sparse * 3 * 2);
  EXPECT_EQ(local.find(first_sparse, model::Proj::proj_expert_up, 1), nullptr);
  ASSERT_NE(local.find(first_sparse, model::Proj::proj_expert_up, 3), nullptr);
  EXPECT_EQ(local.find(first_sparse, model::Proj::proj_expert_up, 3)->expert, 3);

  std::vector<float> values(static_cast<std::size_t>(full.size())), part(static_cast<std::size_t>(local.size()));
  std::iota(values.begin(), values.end(), 1.0f);
  model::lora_shard_extract(f.spec, shard, full, local, values.data(), part.data());
  std::vector<float> back(values.size(), 0.0f);
  model::lora_shard_insert(f.spec, shard, full, local, part.data(), back.data());
  for (const model::LoraSlot& s : full.slots()) {
    const bool held = s.expert < 0 || s.expert >= 2;
    const std::int64_t end = s.b_offset + s.out * f.lora.rank;
    for (std::int64_t i = s.a_offset; i < end; ++i)
      ASSERT_EQ(back[static_cast<std::size_t>(i)], held ? values[static_cast<std::size_t>(i)] : 0.0f) << s.module;
  }
}

TEST(MoeModel, AnEpShardHoldsItsBlockOfExpertsOnly) { check_ep_shard(kMixtral, "moe_ep_shard"); }
// Llama 4's experts are carved out of the fused tensors: an ep rank copies only its block.
TEST(MoeModel, ALlama4EpShardCarvesItsBlockOfTheFusedExperts) {
  std::string json = kLlama4;
  const std::string five = "\"num_local_experts\": 5";
  json.replace(json.find(five), five.size(), "\"num_local_experts\": 4");
  check_ep_shard(json, "moe_ep_shard_llama4");
}

}  // namespace
}  // namespace anvil
