// The Llama + LoRA model against Hugging Face transformers + PEFT (fp32, CPU): logits,
// loss, every LoRA gradient and five AdamW steps with clipping (Llama, Qwen3 with qk-norm,
// Qwen3-MoE and Mixtral: routing, the load-balancing loss, per-expert adapters; Llama 4: iRoPE,
// chunked attention, the sigmoid router scaling the experts' input, the shared expert; QLoRA: an
// NF4 base against bitsandbytes' Linear4bit under PEFT), on the tiny models of
// tests/golden (made by scripts/reference/make_golden.py; the model weights come from our
// generator with the committed spec and seed, so only small outputs are committed).
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "export/peft.h"
#include "io/files.h"
#include "llama_test_util.h"
#include "model/llama.h"
#include "quant/quant_state.h"

namespace anvil {
namespace {

using test::rel_error;

struct GoldenCase {
  std::string name;
  model::ModelSpec spec;
  nlohmann::json meta;
  io::SafetensorsFile golden;
  exporting::PeftAdapter adapter;
  std::int64_t B, T;
  std::vector<std::int32_t> ids, targets, positions;

  explicit GoldenCase(const std::string& n)
      : name(n),
        spec(model::model_spec_from_file(test::golden_dir(n) + "/spec.json")),
        meta(nlohmann::json::parse(io::read_text_file(test::golden_dir(n) + "/case.json"))),
        golden(io::SafetensorsFile::open(test::golden_dir(n) + "/golden.safetensors")),
        adapter(exporting::peft_load(test::golden_dir(n), spec)),
        B(meta["B"].get<std::int64_t>()),
        T(meta["T"].get<std::int64_t>()) {
    ids = test::read_tensor<std::int32_t>(golden, "input_ids");
    targets = test::read_tensor<std::int32_t>(golden, "targets");
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < T; ++t) positions.push_back(static_cast<std::int32_t>(t));
  }
  model::TokenBatch batch() const {
    model::TokenBatch b;
    b.batch = B;
    b.seq = T;
    b.ids = ids.data();
    b.targets = targets.data();
    b.positions = positions.data();
    return b;
  }
  std::int64_t trained() const {
    return std::count_if(targets.begin(), targets.end(), [](std::int32_t t) { return t != -100; });
  }
};

class GoldenTest : public ::testing::TestWithParam<std::string> {};

void check_golden(const std::string& name, bool checkpointing) {
  GoldenCase c(name);
  test::TempDir dir("golden_" + name);
  test::make_model_dir(dir, c.spec, c.meta["seed"].get<std::uint64_t>(), DType::dtype_f32,
                       c.meta.value("norm_std", 0.0));
  auto be = backend::make_cpu_backend();
  const model::LoraLayout layout(c.spec, c.adapter.spec);
  EXPECT_FLOAT_EQ(layout.spec().scale(), c.meta["lora"]["scaling"].get<float>());
  model::ModelLimits lim{c.B, c.T, checkpointing};
  // A QLoRA case: the base's projections quantized at load as model.quant does, with the
  // default model.quant_skip (the reference: bitsandbytes' Linear4bit under PEFT).
  quant::QuantPolicy quant;
  if (c.meta.contains("quant")) {
    ASSERT_TRUE(quant::quant_kind_from_name(c.meta["quant"].get<std::string>(), &quant.kind));
    quant.skip = quant::default_quant_skip();
  }
  model::BaseWeights base =
      model::base_weights_load(c.spec, dir.str(), DType::dtype_f32, model::tp_shard(c.spec, 0, 1), quant);
  EXPECT_EQ(base.quant, quant.kind);
  EXPECT_EQ(base.quantized_bytes > 0, quant.kind != quant::QuantKind::quant_none);
  model::LlamaModel m(c.spec, std::move(base), layout, lim, *be, 0);
  std::copy(c.adapter.params.begin(), c.adapter.params.end(), m.lora_params());
  const model::TokenBatch batch = c.batch();
  const auto count = static_cast<double>(c.trained());

  // logits and loss
  const auto ref_logits = test::read_tensor<float>(c.golden, "logits");
  std::vector<float> logits(ref_logits.size());
  m.logits(batch, logits.data());
  EXPECT_LE(rel_error(logits.data(), ref_logits.data(), logits.size()), 1e-5) << "logits";
  // A mixture-of-experts model's loss has transformers' load-balancing term as well:
  // coef · aux, with the CE part as loss_ce.
  const double coef = c.spec.is_moe() && c.spec.moe.aux_loss ? c.spec.moe.aux_loss_coef : 0.0;
  m.set_aux_loss_weight(static_cast<float>(coef));
  const float ref_loss = test::read_tensor<float>(c.golden, "loss")[0];
  const float ref_ce = c.spec.is_moe() ? test::read_tensor<float>(c.golden, "loss_ce")[0] : ref_loss;
  const double eval = m.eval_loss(batch) / count;
  EXPECT_LE(std::abs(eval - ref_ce) / ref_ce, 1e-5) << "loss " << eval << " vs " << ref_ce;

  // every LoRA gradient of the mean loss
  m.zero_grads();
  const double train_loss = m.train_micro_batch(batch, static_cast<float>(1.0 / count), 1) / count +
                            coef * m.last_aux_loss();
  EXPECT_LE(std::abs(train_loss - ref_loss) / ref_loss, 1e-5);
  if (c.spec.is_moe()) {
    const float ref_aux = test::read_tensor<float>(c.golden, "aux_loss")[0];
    if (c.spec.moe.aux_loss) {
      EXPECT_LE(std::abs(m.last_aux_loss() - ref_aux) / ref_aux, 1e-5) << "aux loss";
    } else {
      EXPECT_EQ(ref_aux, 0.0f) << "a model without the load-balancing loss";
    }
    for (std::int64_t l = 0; l < c.spec.num_hidden_layers; ++l) {  // every token's experts, best first
      if (!c.spec.layer_is_moe(l)) continue;
      const auto ref = test::read_tensor<std::int32_t>(c.golden, str_cat("router_topk.", l));
      const std::int32_t* ours = m.route(l)->expert;
      EXPECT_EQ(std::vector<std::int32_t>(ours, ours + ref.size()), ref) << "top-k experts of layer " << l;
    }
  }
  for (const auto& s : layout.slots()) {
    for (char which : {'A', 'B'}) {
      const std::string pname = model::LoraLayout::peft_name(s, which);
      const auto ref = test::read_tensor<float>(c.golden, "grad." + pname);
      const float* ours = m.lora_grads() + (which == 'A' ? s.a_offset : s.b_offset);
      EXPECT_LE(rel_error(ours, ref.data(), ref.size()), 1e-4) << "gradient of " << pname;
    }
  }

  // five AdamW steps with global-norm clipping, as torch does them
  const auto ref_losses = test::read_tensor<float>(c.golden, "adamw_losses");
  const auto ref_norms = test::read_tensor<float>(c.golden, "adamw_grad_norms");
  const auto& opt = c.meta["optimizer"];
  const double max_norm = c.meta["clip"]["max_norm"].get<double>();
  std::vector<float> mom(static_cast<std::size_t>(layout.size())), var(mom.size());
  for (std::int64_t step = 1; step <= static_cast<std::int64_t>(ref_losses.size()); ++step) {
    m.zero_grads();
    const double loss = m.train_micro_batch(batch, static_cast<float>(1.0 / count),
                                            static_cast<std::uint64_t>(step)) / count +
                        coef * m.last_aux_loss();
    const float ref = ref_losses[static_cast<std::size_t>(step - 1)];
    EXPECT_LE(std::abs(loss - ref) / ref, 1e-4) << "loss before AdamW step " << step;
    const double norm = std::sqrt(be->sum_squares(m.lora_grads(), layout.size()));
    const float ref_norm = ref_norms[static_cast<std::size_t>(step - 1)];
    EXPECT_LE(std::abs(norm - ref_norm) / ref_norm, 1e-4) << "grad norm at step " << step;
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) be->scale(m.lora_grads(), static_cast<float>(coef), layout.size());
    backend::AdamwArgs a;
    a.lr = opt["lr"].get<float>();
    a.beta1 = opt["betas"][0].get<float>();
    a.beta2 = opt["betas"][1].get<float>();
    a.eps = opt["eps"].get<float>();
    a.weight_decay = opt["weight_decay"].get<float>();
    a.step = step;
    be->adamw_update(m.lora_params(), m.lora_grads(), mom.data(), var.data(), layout.size(), a);
  }
  // AdamW divides each gradient by its own running size, so an element whose gradient is
  // rounding noise (1.7e-8 in qwen3_moe's layer-0 k_proj A, where its neighbours' are ~1e-4)
  // takes steps of up to lr in a direction each machine's rounding picks: such elements
  // (step-1 gradient under 1e-5 of the matrix's largest) are held to steps × lr, every
  // other element to 1e-4 of the matrix's scale as before.
  const double lr = opt["lr"].get<double>();
  const auto steps = static_cast<double>(ref_losses.size());
  for (const auto& s : layout.slots()) {
    for (char which : {'A', 'B'}) {
      const std::string pname = model::LoraLayout::peft_name(s, which);
      const auto ref = test::read_tensor<float>(c.golden, "after_adamw." + pname);
      const auto grad = test::read_tensor<float>(c.golden, "grad." + pname);
      ASSERT_EQ(grad.size(), ref.size()) << pname;
      const float* ours = m.lora_params() + (which == 'A' ? s.a_offset : s.b_offset);
      double scale = 0, grad_max = 0;
      for (std::size_t i = 0; i < ref.size(); ++i) {
        scale = std::max(scale, std::abs(static_cast<double>(ref[i])));
        grad_max = std::max(grad_max, std::abs(static_cast<double>(grad[i])));
      }
      std::size_t noise = 0;
      for (std::size_t i = 0; i < ref.size(); ++i) {
        const double diff = std::abs(static_cast<double>(ours[i]) - ref[i]);
        if (std::abs(static_cast<double>(grad[i])) < 1e-5 * grad_max) {
          ++noise;
          EXPECT_LE(diff, steps * lr) << "weights after AdamW: " << pname << " [" << i << "] (noise-level gradient)";
        } else {
          EXPECT_LE(diff, 1e-4 * scale) << "weights after AdamW: " << pname << " [" << i << "]";
        }
      }
      EXPECT_LT(noise, ref.size() / 10 + 1) << pname << ": most gradients at the noise level";
    }
  }
}

TEST_P(GoldenTest, MatchesTransformersAndPeft) { check_golden(GetParam(), false); }
TEST_P(GoldenTest, MatchesWithActivationCheckpointing) { check_golden(GetParam(), true); }

INSTANTIATE_TEST_SUITE_P(Golden, GoldenTest,
                         ::testing::Values("gqa_untied", "tied", "odd_mqa", "llama3_rope", "qwen3_dense", "qwen3_moe",
                                           "qwen3_moe_sparse_step", "mixtral", "llama4", "qlora_nf4"));

}  // namespace
}  // namespace anvil
