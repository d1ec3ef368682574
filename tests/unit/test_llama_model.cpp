// The Llama + LoRA model against itself: splitting a step into micro-batches, packing
// documents, the KV-cache decoder, bf16 storage and dropout determinism.
#include <random>

#include "backend/backend.h"
#include "llama_test_util.h"
#include "model/llama.h"
#include "model/llama_generate.h"

namespace anvil {
namespace {

using test::rel_error;

model::LoraSpec all_targets(double dropout) {
  model::LoraSpec s;
  s.rank = 4;
  s.alpha = 8;
  s.dropout = dropout;
  s.targets.fill(true);
  return s;
}

// A tiny GQA model with nonzero random adapters (B = 0 would hide every A gradient).
struct Fixture {
  model::ModelSpec spec = model::model_spec_from_file(test::golden_dir("gqa_untied") + "/spec.json");
  test::TempDir dir;
  std::unique_ptr<backend::Backend> be = backend::make_cpu_backend();
  std::vector<float> adapter;

  explicit Fixture(const std::string& tag, DType dtype = DType::dtype_f32) : dir(tag) {
    test::make_model_dir(dir, spec, 5, dtype);
  }
  std::unique_ptr<model::LlamaModel> make(std::int64_t B, std::int64_t T, double dropout,
                                          DType storage = DType::dtype_f32, bool ckpt = false) {
    model::LoraLayout layout(spec, all_targets(dropout));
    auto m = std::make_unique<model::LlamaModel>(spec, model::base_weights_load(spec, dir.str(), storage, model::tp_shard(spec, 0, 1)),
                                                 layout, model::ModelLimits{B, T, ckpt}, *be, 42);
    if (adapter.empty()) {
      std::mt19937 rng(3);
      std::normal_distribution<float> nd(0.0f, 0.05f);
      adapter.resize(static_cast<std::size_t>(layout.size()));
      for (auto& x : adapter) x = nd(rng);
    }
    std::copy(adapter.begin(), adapter.end(), m->lora_params());
    return m;
  }
};

struct Rows {
  std::vector<std::int32_t> ids, targets, positions, segments;
  model::TokenBatch view(std::int64_t B, std::int64_t T, std::int64_t first_row = 0, bool segs = false) const {
    model::TokenBatch b;
    b.batch = B;
    b.seq = T;
    const auto o = static_cast<std::size_t>(first_row * T);
    b.ids = ids.data() + o;
    b.targets = targets.data() + o;
    b.positions = positions.data() + o;
    b.segments = segs ? segments.data() + o : nullptr;
    b.row_offset = first_row;
    return b;
  }
};

Rows random_rows(std::int64_t B, std::int64_t T, std::int64_t vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<std::int32_t> tok(0, static_cast<std::int32_t>(vocab - 1));
  Rows r;
  for (std::int64_t i = 0; i < B * T; ++i) {
    r.ids.push_back(tok(rng));
    r.targets.push_back(i % 5 == 0 ? -100 : tok(rng));
    r.positions.push_back(static_cast<std::int32_t>(i % T));
    r.segments.push_back(0);
  }
  return r;
}

TEST(LlamaModel, MicroBatchSplitGivesTheSameGradients) {
  Fixture f("split");
  const std::int64_t T = 12;
  const Rows rows = random_rows(2, T, f.spec.vocab_size, 1);
  auto whole = f.make(2, T, 0.3);
  auto split = f.make(1, T, 0.3);
  whole->zero_grads();
  split->zero_grads();
  const double a = whole->train_micro_batch(rows.view(2, T), 0.01f, 7);
  const double b = split->train_micro_batch(rows.view(1, T, 0), 0.01f, 7) +
                   split->train_micro_batch(rows.view(1, T, 1), 0.01f, 7);
  EXPECT_NEAR(a, b, 1e-5 * std::abs(a));
  EXPECT_LE(rel_error(split->lora_grads(), whole->lora_grads(), static_cast<std::size_t>(whole->lora_size())), 1e-5);
}

TEST(LlamaModel, DropoutIsDeterministicPerStep) {
  Fixture f("dropout");
  const std::int64_t T = 10;
  const Rows rows = random_rows(1, T, f.spec.vocab_size, 2);
  auto m = f.make(1, T, 0.5);
  const auto n = static_cast<std::size_t>(m->lora_size());
  auto grads_at = [&](std::uint64_t step) {
    m->zero_grads();
    m->train_micro_batch(rows.view(1, T), 1.0f, step);
    return std::vector<float>(m->lora_grads(), m->lora_grads() + n);
  };
  const auto g1 = grads_at(1), g1_again = grads_at(1), g2 = grads_at(2);
  EXPECT_EQ(g1, g1_again);
  EXPECT_GT(rel_error(g1.data(), g2.data(), n), 1e-3) << "a new step must draw new masks";
  // Evaluation never drops.
  auto plain = f.make(1, T, 0.0);
  EXPECT_DOUBLE_EQ(m->eval_loss(rows.view(1, T)), plain->eval_loss(rows.view(1, T)));
}

TEST(LlamaModel, PackedDocumentsEqualDocumentsAlone) {
  Fixture f("packing");
  const std::int64_t T = 16, len0 = 7;
  Rows packed = random_rows(1, T, f.spec.vocab_size, 3);
  for (std::int64_t t = 0; t < T; ++t) {
    packed.segments[static_cast<std::size_t>(t)] = t < len0 ? 0 : 1;
    packed.positions[static_cast<std::size_t>(t)] = static_cast<std::int32_t>(t < len0 ? t : t - len0);
  }
  auto split_rows = [&](std::int64_t from, std::int64_t len) {
    Rows r;
    for (std::int64_t t = from; t < from + len; ++t) {
      const auto i = static_cast<std::size_t>(t);
      r.ids.push_back(packed.ids[i]);
      r.targets.push_back(packed.targets[i]);
      r.positions.push_back(static_cast<std::int32_t>(t - from));
      r.segments.push_back(0);
    }
    return r;
  };
  const Rows doc0 = split_rows(0, len0), doc1 = split_rows(len0, T - len0);
  auto m = f.make(1, T, 0.0);
  auto alone = f.make(1, T, 0.0);
  const double together = m->eval_loss(packed.view(1, T, 0, true));
  const double separate = alone->eval_loss(doc0.view(1, len0)) + alone->eval_loss(doc1.view(1, T - len0));
  EXPECT_NEAR(together, separate, 1e-5 * separate);
  m->zero_grads();
  alone->zero_grads();
  m->train_micro_batch(packed.view(1, T, 0, true), 0.1f, 1);
  alone->train_micro_batch(doc0.view(1, len0), 0.1f, 1);
  alone->train_micro_batch(doc1.view(1, T - len0), 0.1f, 1);
  EXPECT_LE(rel_error(m->lora_grads(), alone->lora_grads(), static_cast<std::size_t>(m->lora_size())), 1e-5);
}

TEST(LlamaModel, KvCacheDecoderMatchesFullForward) {
  Fixture f("kvcache");
  const std::int64_t T = 9, V = f.spec.vocab_size;
  const Rows rows = random_rows(1, T, V, 4);
  auto m = f.make(1, T, 0.0);
  std::vector<float> full(static_cast<std::size_t>(T * V));
  m->logits(rows.view(1, T), full.data());
  model::Generator gen(f.spec, m->base(), &m->lora_layout(), m->lora_params(), *f.be, T);
  for (std::int64_t t = 0; t < T; ++t) {
    const float* step = gen.step(rows.ids[static_cast<std::size_t>(t)]);
    EXPECT_LE(rel_error(step, full.data() + t * V, static_cast<std::size_t>(V)), 1e-5) << "position " << t;
  }
  // A prompt's prefill (all its rows at once) fills the cache as the steps do: the logits
  // after it, and of the steps that follow, are the full forward's.
  gen.reset();
  const std::span<const std::int32_t> ids(rows.ids.data(), static_cast<std::size_t>(T));
  const float* logits = gen.prefill(ids.first(6));
  EXPECT_EQ(gen.position(), 6);
  EXPECT_LE(rel_error(logits, full.data() + 5 * V, static_cast<std::size_t>(V)), 1e-5);
  for (std::int64_t t = 6; t < T; ++t) {
    logits = gen.step(ids[static_cast<std::size_t>(t)]);
    EXPECT_LE(rel_error(logits, full.data() + t * V, static_cast<std::size_t>(V)), 1e-5) << "position " << t;
  }
  gen.reset();  // two prefills back to back are one
  gen.prefill(ids.first(4));
  logits = gen.prefill(ids.subspan(4, 4));
  EXPECT_LE(rel_error(logits, full.data() + 7 * V, static_cast<std::size_t>(V)), 1e-5);
}

TEST(LlamaModel, Bf16StorageMatchesTheSameWeightsInF32) {
  Fixture f("bf16", DType::dtype_bf16);
  const std::int64_t T = 8, V = f.spec.vocab_size;
  const Rows rows = random_rows(2, T, V, 5);
  auto as_f32 = f.make(2, T, 0.0, DType::dtype_f32);
  auto as_bf16 = f.make(2, T, 0.0, DType::dtype_bf16);
  EXPECT_GT(as_f32->base().converted_bytes, 0);
  // Only the norms (kept in f32) are converted; the bf16 matrices are used in place.
  const std::int64_t norms = (2 * f.spec.num_hidden_layers + 1) * f.spec.hidden_size * 4;
  EXPECT_EQ(as_bf16->base().converted_bytes, norms);
  std::vector<float> a(static_cast<std::size_t>(2 * T * V)), b(a.size());
  as_f32->logits(rows.view(2, T), a.data());
  as_bf16->logits(rows.view(2, T), b.data());
  EXPECT_LE(rel_error(b.data(), a.data(), a.size()), 1e-6);
}

TEST(LlamaModel, FreshAdaptersLeaveTheBaseModelUnchanged) {
  Fixture f("init");
  const std::int64_t T = 6, V = f.spec.vocab_size;
  const Rows rows = random_rows(1, T, V, 6);
  auto m = f.make(1, T, 0.0);
  std::vector<float> with_random(static_cast<std::size_t>(T * V)), with_init(with_random.size());
  m->logits(rows.view(1, T), with_random.data());
  model::lora_init(m->lora_layout(), 9, m->lora_params());
  m->logits(rows.view(1, T), with_init.data());
  model::Generator base_only(f.spec, m->base(), nullptr, nullptr, *f.be, T);
  const float* base_logits = base_only.step(rows.ids[0]);
  EXPECT_LE(rel_error(with_init.data(), base_logits, static_cast<std::size_t>(V)), 1e-6);
  EXPECT_GT(rel_error(with_random.data(), base_logits, static_cast<std::size_t>(V)), 1e-4);
  // A is Kaiming-uniform within 1/sqrt(in), B is zero.
  for (const auto& s : m->lora_layout().slots()) {
    const float bound = 1.0f / std::sqrt(static_cast<float>(s.in));
    const float* a = m->lora_params() + s.a_offset;
    const float* b = m->lora_params() + s.b_offset;
    float amax = 0;
    for (std::int64_t i = 0; i < 4 * s.in; ++i) amax = std::max(amax, std::abs(a[i]));
    EXPECT_LE(amax, bound);
    EXPECT_GT(amax, 0.5f * bound);
    EXPECT_TRUE(std::all_of(b, b + s.out * 4, [](float x) { return x == 0.0f; }));
  }
}

}  // namespace
}  // namespace anvil
