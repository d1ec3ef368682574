// The whole Llama + LoRA model split over the world as one TP group against the same model
// on one rank, which every rank also builds: loss, every adapter gradient (gathered into
// the full layout), the gradient norm and the evaluation loss, with dropout on, packed
// documents and with activation checkpointing. np 2 splits the KV heads; np 4 replicates
// each of the 2 KV heads on two ranks. The same for a Qwen3-MoE shape: every expert's
// slice on every rank, the router replicated, its weights' gradient reduced.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "comm/comm.h"
#include "model/llama.h"
#include "model/model_init.h"
#include "model/tp_shard.h"

namespace anvil {
namespace {

struct TempModel {
  std::filesystem::path dir;
  explicit TempModel(const model::ModelSpec& spec) {
    dir = std::filesystem::temp_directory_path() / ("anvil_test_tp_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    model::InitOptions o;
    o.seed = 11;
    model::model_init_write(spec, dir.string(), o);
  }
  ~TempModel() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

struct Case {
  bool checkpointing = false;
  double dropout = 0.0;
  bool moe = false;  // a Qwen3-MoE shape (qk-norm, experts, a dense layer, the aux loss)
};

model::ModelSpec case_spec(const Case& c) {
  if (!c.moe) {
    model::ModelSpec spec = *model::model_preset("tiny");  // 4 heads, 2 KV heads, F 176, V 320
    spec.num_hidden_layers = 2;
    return spec;
  }
  return model::model_spec_from_json(R"({"model_type": "qwen3_moe", "hidden_size": 64, "intermediate_size": 64,
    "moe_intermediate_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 16, "vocab_size": 320, "num_experts": 6, "num_experts_per_tok": 2, "mlp_only_layers": [1],
    "output_router_logits": true, "router_aux_loss_coef": 0.05, "max_position_embeddings": 64})", "moe spec");
}

class TpModel : public ::testing::TestWithParam<Case> {};

TEST_P(TpModel, MatchesTheSingleRankModel) {
  const Case c = GetParam();
  auto world = comm::mpi_comm_world();
  const int tp = world->size(), t = world->rank();
  const model::ModelSpec spec = case_spec(c);
  const TempModel files(spec);
  model::LoraSpec ls;
  ls.rank = 4;
  ls.alpha = 8;
  ls.dropout = c.dropout;
  ls.targets.fill(true);
  const std::int64_t B = 2, T = 24;
  const model::ModelLimits limits{B, T, c.checkpointing};
  auto be = backend::make_cpu_backend();

  // Nonzero adapters (B = 0 would hide every A gradient), the same on every rank.
  const model::LoraLayout full(spec, ls);
  std::vector<float> params(static_cast<std::size_t>(full.size()));
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  for (auto& x : params) x = nd(rng);

  // Two packed documents per row; the last tokens of each row not trained.
  std::vector<std::int32_t> ids(B * T), targets(B * T), positions(B * T), segments(B * T);
  for (std::int64_t i = 0; i < B * T; ++i) {
    const std::int64_t pos = i % T, doc = pos < 10 ? 0 : 1;
    ids[i] = static_cast<std::int32_t>((i * 37 + 5) % spec.vocab_size);
    targets[i] = pos >= T - 3 ? -100 : static_cast<std::int32_t>((i * 53 + 1) % spec.vocab_size);
    positions[i] = static_cast<std::int32_t>(doc == 0 ? pos : pos - 10);
    segments[i] = static_cast<std::int32_t>(doc);
  }
  model::TokenBatch batch{B, T, ids.data(), targets.data(), positions.data(), segments.data(), 3};
  const float scale = 1.0f / 40.0f;

  model::LlamaModel single(spec, model::base_weights_load(spec, files.dir.string(), DType::dtype_f32,
                                                         model::tp_shard(spec, 0, 1)),
                           full, limits, *be, 7);
  std::copy(params.begin(), params.end(), single.lora_params());
  single.set_aux_loss_weight(0.5f);
  single.zero_grads();
  const double want_loss = single.train_micro_batch(batch, scale, 5);
  const std::vector<float> want_grads(single.lora_grads(), single.lora_grads() + full.size());
  const double want_norm2 = single.grad_sum_squares();
  const double want_eval = single.eval_loss(batch);

  model::TpGroup group;
  group.shard = model::tp_shard(spec, t, tp);
  group.comm = world.get();
  std::unique_ptr<comm::Comm> kv;
  if (group.shard.kv_replicas > 1) {
    kv = world->split(static_cast<int>(group.shard.kv_head_first), t, "tp-kv");
    group.kv_comm = kv.get();
  }
  const model::LoraLayout local(model::tp_local_spec(spec, group.shard), ls);
  auto be_tp = backend::make_cpu_backend();
  model::LlamaModel sharded(spec, model::base_weights_load(spec, files.dir.string(), DType::dtype_f32, group.shard),
                            local, limits, *be_tp, 7, group);
  model::lora_shard_extract(spec, group.shard, full, local, params.data(), sharded.lora_params());
  sharded.set_aux_loss_weight(0.5f);
  sharded.zero_grads();
  const double got_loss = sharded.train_micro_batch(batch, scale, 5);
  sharded.reduce_tp_grads();
  const double got_norm2 = sharded.grad_sum_squares();
  const double got_eval = sharded.eval_loss(batch);

  EXPECT_NEAR(got_loss, want_loss, 1e-5 * want_loss);
  EXPECT_NEAR(got_eval, want_eval, 1e-5 * want_eval);
  EXPECT_NEAR(got_norm2, want_norm2, 1e-5 * want_norm2);

  // Every rank's gradients, put back in the full layout, are the single-rank gradients.
  const std::int64_t n = local.size();
  std::vector<float> gathered(static_cast<std::size_t>(n * tp)), got_grads(static_cast<std::size_t>(full.size()), 0.0f);
  world->allgather(sharded.lora_grads(), gathered.data(), n, DType::dtype_f32);
  for (int r = 0; r < tp; ++r)
    model::lora_shard_insert(spec, model::tp_shard(spec, r, tp), full, local, gathered.data() + r * n,
                             got_grads.data());
  EXPECT_LT(rel_error(got_grads, want_grads), 1e-5);
  for (const model::LoraSlot& s : full.slots()) {  // each matrix on its own scale, too
    for (const auto& [off, cnt, which] : {std::tuple{s.a_offset, ls.rank * s.in, 'A'},
                                          std::tuple{s.b_offset, s.out * ls.rank, 'B'}}) {
      const std::vector<float> g(got_grads.begin() + off, got_grads.begin() + off + cnt);
      const std::vector<float> w(want_grads.begin() + off, want_grads.begin() + off + cnt);
      EXPECT_LT(rel_error(g, w), 1e-5) << model::LoraLayout::peft_name(s, which);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, TpModel,
                         ::testing::Values(Case{false, 0.0}, Case{false, 0.2}, Case{true, 0.2},
                                           Case{false, 0.0, true}, Case{true, 0.0, true}),
                         [](const auto& info) {
                           return std::string(info.param.moe ? "Moe" : "") +
                                  (info.param.checkpointing ? "Checkpointing" : "Plain") +
                                  (info.param.dropout > 0 ? "Dropout" : "");
                         });

}  // namespace
}  // namespace anvil
