#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/model_init.h"
#include "model/model_spec.h"

namespace anvil::model {
namespace {

namespace fs = std::filesystem;

const char* kLlama3 = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
  "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
  "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "tie_word_embeddings": false, "bos_token_id": 128000, "eos_token_id": [128001, 128009],
  "torch_dtype": "bfloat16"})";

// Expects a user error naming `key`.
void expect_bad(const std::string& json, const std::string& key) {
  try {
    model_spec_from_json(json, "cfg.json");
    ADD_FAILURE() << "accepted: " << json;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("cfg.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find(key), std::string::npos) << msg << "\nexpected key: " << key;
  }
}

// A small valid config; `extra` keys come last and, as in any JSON parser that keeps the
// last duplicate, override the defaults above them.
std::string small(const std::string& extra = "") {
  return R"({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300)" +
         extra + "}";
}

TEST(ModelSpec, ParsesLlama3Config) {
  const ModelSpec s = model_spec_from_json(kLlama3, "llama3.json");
  EXPECT_EQ(s.hidden_size, 4096);
  EXPECT_EQ(s.head_dim, 128);
  EXPECT_EQ(s.num_key_value_heads, 8);
  EXPECT_EQ(s.rope.scaling, RopeScalingType::rope_llama3);
  EXPECT_DOUBLE_EQ(s.rope.theta, 500000.0);
  EXPECT_DOUBLE_EQ(s.rope.factor, 8.0);
  EXPECT_EQ(s.rope.original_max_position, 8192);
  EXPECT_EQ(s.eos_token_ids, (std::vector<std::int64_t>{128001, 128009}));
  EXPECT_EQ(s.bos_token_id, 128000);
  EXPECT_FALSE(s.tie_word_embeddings);
  EXPECT_EQ(model_parameter_count(s), 8'030'261'248);
}

TEST(ModelSpec, RopeParametersSpellingAndLinear) {
  const ModelSpec s = model_spec_from_json(
      small(R"(, "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1234.0})"), "x");
  EXPECT_EQ(s.rope.scaling, RopeScalingType::rope_linear);
  EXPECT_DOUBLE_EQ(s.rope.factor, 2.0);
  EXPECT_DOUBLE_EQ(s.rope.theta, 1234.0);
  const ModelSpec d = model_spec_from_json(small(R"(, "rope_scaling": null, "rope_theta": 77.0)"), "x");
  EXPECT_EQ(d.rope.scaling, RopeScalingType::rope_none);
  EXPECT_DOUBLE_EQ(d.rope.theta, 77.0);
  const ModelSpec t = model_spec_from_json(small(R"(, "rope_scaling": {"type": "linear", "factor": 4})"), "x");
  EXPECT_DOUBLE_EQ(t.rope.factor, 4.0);
}

TEST(ModelSpec, DefaultsAndExplicitHeadDim) {
  const ModelSpec s = model_spec_from_json(
      R"({"hidden_size": 72, "intermediate_size": 100, "num_hidden_layers": 1, "num_attention_heads": 3, "vocab_size": 50})",
      "x");
  EXPECT_EQ(s.model_type, "llama");
  EXPECT_EQ(s.num_key_value_heads, 3);  // defaults to the head count (no GQA)
  EXPECT_EQ(s.head_dim, 24);
  const ModelSpec h = model_spec_from_json(small(R"(, "head_dim": 32)"), "x");
  EXPECT_EQ(h.head_dim, 32);
  EXPECT_EQ(model_weight_list(h)[2].shape, (Shape{4 * 32, 64}));  // q_proj
}

TEST(ModelSpec, Qwen2HasImpliedBiasesAndIsRejectedForTraining) {
  const ModelSpec s = model_spec_from_json(small(R"(, "model_type": "qwen2")"), "qwen.json");
  EXPECT_TRUE(s.attention_bias);
  bool has_q_bias = false, has_o_bias = false;
  for (const auto& w : model_weight_list(s)) {
    has_q_bias |= w.name == "model.layers.0.self_attn.q_proj.bias";
    has_o_bias |= w.name == "model.layers.0.self_attn.o_proj.bias";
  }
  EXPECT_TRUE(has_q_bias);
  EXPECT_FALSE(has_o_bias);
  try {
    model_spec_check_supported(s, "qwen.json");
    FAIL() << "biases must be rejected";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("qwen2"), std::string::npos) << e.what();
  }
}

TEST(ModelSpec, BiasesFollowTransformersPerModelType) {
  // Qwen2 hard-codes q/k/v biases, Mistral has none, whatever the keys say.
  EXPECT_TRUE(model_spec_from_json(small(R"(, "model_type": "qwen2", "attention_bias": false)"), "q").attention_bias);
  const auto m = model_spec_from_json(small(R"(, "model_type": "mistral", "attention_bias": true, "mlp_bias": true,
                                              "sliding_window": null)"), "m");
  EXPECT_FALSE(m.attention_bias);
  EXPECT_FALSE(m.mlp_bias);
  const auto l = model_spec_from_json(small(R"(, "attention_bias": true, "mlp_bias": true)"), "llama.json");
  EXPECT_EQ(model_weight_list(l).size(), model_weight_list(model_spec_from_json(small(), "x")).size() + 2 * 7);
  try {
    model_spec_check_supported(l, "llama.json");
    FAIL() << "biases must be rejected";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user);
    EXPECT_NE(std::string(e.what()).find("'attention_bias'"), std::string::npos) << e.what();
  }
}

TEST(ModelSpec, MistralSlidingWindow) {
  const auto full = model_spec_from_json(small(R"(, "model_type": "mistral", "sliding_window": null)"), "m");
  EXPECT_NO_THROW(model_spec_check_supported(full, "m"));
  const auto wide = model_spec_from_json(
      small(R"(, "model_type": "mistral", "sliding_window": 4096, "max_position_embeddings": 4096)"), "m");
  EXPECT_NO_THROW(model_spec_check_supported(wide, "m"));
  const auto sw = model_spec_from_json(
      small(R"(, "model_type": "mistral", "sliding_window": 16, "max_position_embeddings": 64)"), "m");
  EXPECT_THROW(model_spec_check_supported(sw, "m"), Error);
  // No key: transformers' default window (4096) applies, which is short of 32768 positions.
  const auto absent = model_spec_from_json(small(R"(, "model_type": "mistral", "max_position_embeddings": 32768)"), "m");
  EXPECT_EQ(absent.sliding_window, 4096);
  try {
    model_spec_check_supported(absent, "mistral.json");
    FAIL() << "a 4096 window over 32768 positions must be rejected";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'sliding_window'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("mistral.json"), std::string::npos) << e.what();
  }
  // Qwen2 only uses its window when use_sliding_window is true.
  EXPECT_EQ(model_spec_from_json(small(R"(, "model_type": "qwen2", "sliding_window": 16)"), "q").sliding_window, 0);
  EXPECT_EQ(model_spec_from_json(small(R"(, "model_type": "qwen2", "use_sliding_window": true,
                                          "sliding_window": 16, "max_window_layers": 0)"), "q").sliding_window, 16);
  // ... and then only on the layers from max_window_layers (default 28) on, or those that
  // layer_types calls sliding_attention: none here (2 layers), so no window at all.
  // Qwen3-MoE has no such rule in transformers: its window is every layer's.
  EXPECT_EQ(model_spec_from_json(small(R"(, "model_type": "qwen3_moe", "use_sliding_window": true,
                                          "sliding_window": 16)"), "q").sliding_window, 16);
  EXPECT_EQ(model_spec_from_json(small(R"(, "model_type": "qwen3_moe", "use_sliding_window": true,
                                          "sliding_window": 16, "max_window_layers": 28)"), "q").sliding_window, 16);
  for (const char* type : {"qwen2", "qwen3"}) {
    SCOPED_TRACE(type);
    const std::string t = std::string(R"(, "model_type": ")") + type + R"(", "use_sliding_window": true, "sliding_window": 16)";
    EXPECT_EQ(model_spec_from_json(small(t), "q").sliding_window, 0);
    EXPECT_EQ(model_spec_from_json(small(t + R"(, "max_window_layers": 1)"), "q").sliding_window, 16);
    EXPECT_EQ(model_spec_from_json(small(t + R"(, "layer_types": ["full_attention", "full_attention"])"), "q").sliding_window, 0);
    EXPECT_EQ(model_spec_from_json(small(t + R"(, "layer_types": ["full_attention", "sliding_attention"])"), "q")
                  .sliding_window, 16);
    expect_bad(small(t + R"(, "layer_types": ["full_attention"])"), "'layer_types'");
    expect_bad(small(t + R"(, "max_window_layers": -1)"), "'max_window_layers'");
  }
}

TEST(ModelSpec, DtypeSpellings) {
  EXPECT_EQ(model_spec_from_json(small(R"(, "torch_dtype": "bfloat16")"), "x").torch_dtype, "bfloat16");
  EXPECT_EQ(model_spec_from_json(small(R"(, "dtype": "float16")"), "x").torch_dtype, "float16");
  EXPECT_EQ(model_spec_from_json(small(), "x").torch_dtype, "float32");
}

TEST(ModelSpec, BadConfigsNameTheKey) {
  expect_bad("{", "not valid JSON");
  expect_bad("[]", "JSON object");
  expect_bad(small(R"(, "model_type": "gpt2")"), "model_type");
  expect_bad(R"({"intermediate_size": 1, "num_hidden_layers": 1, "num_attention_heads": 1, "vocab_size": 2})",
             "'hidden_size'");
  expect_bad(small(R"(, "hidden_size": "64")"), "'hidden_size' must be an integer");
  expect_bad(small(R"(, "num_hidden_layers": 0)"), "'num_hidden_layers' must be positive");
  expect_bad(small(R"(, "num_key_value_heads": 3)"), "num_key_value_heads");
  expect_bad(small(R"(, "num_attention_heads": 5)"), "head_dim");
  expect_bad(small(R"(, "rope_scaling": {"rope_type": "yarn", "factor": 4})"), "yarn");
  expect_bad(small(R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8})"), "low_freq_factor");
  expect_bad(small(R"(, "rope_scaling": {"rope_type": "linear"})"), "factor");
  expect_bad(small(R"(, "rope_theta": -1)"), "rope_theta");
  expect_bad(small(R"(, "tie_word_embeddings": "yes")"), "tie_word_embeddings");
  expect_bad(small(R"(, "eos_token_id": [1, "x"])"), "eos_token_id");
  expect_bad(small(R"(, "eos_token_id": 300)"), "eos_token_id");
  expect_bad(small(R"(, "bos_token_id": -3)"), "'bos_token_id'");
  expect_bad(small(R"(, "model_type": 7)"), "'model_type'");
  expect_bad(small(R"(, "num_key_value_heads": -2)"), "'num_key_value_heads' must be positive");
  expect_bad(small(R"(, "head_dim": 0)"), "'head_dim' must be positive");
  expect_bad(small(R"(, "head_dim": 15)"), "'head_dim'");
  expect_bad(small(R"(, "vocab_size": 3.5)"), "'vocab_size' must be an integer");
  expect_bad(small(R"(, "rms_norm_eps": 0)"), "'rms_norm_eps'");
  expect_bad(small(R"(, "rope_scaling": "linear")"), "'rope_scaling'");
  expect_bad(small(R"(, "rope_parameters": {"rope_type": 3})"), "'rope_parameters.rope_type'");
  expect_bad(small(R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8, "low_freq_factor": 4,
                        "high_freq_factor": 1, "original_max_position_embeddings": 8192})"), "high_freq_factor");
  expect_bad(small(R"(, "hidden_act": "gelu")"), "'hidden_act'");
  expect_bad(small(R"(, "torch_dtype": 16)"), "'torch_dtype'");
  expect_bad(small(R"(, "attention_bias": 1)"), "'attention_bias'");
  expect_bad(small(R"(, "model_type": "mistral", "sliding_window": "none")"), "'sliding_window'");
  expect_bad(small(R"(, "max_position_embeddings": 0)"), "'max_position_embeddings'");
}

// spec -> config.json -> spec keeps everything the model depends on.
void expect_same_spec(const ModelSpec& a, const ModelSpec& b) {
  EXPECT_EQ(b.model_type, a.model_type);
  EXPECT_EQ(b.hidden_size, a.hidden_size);
  EXPECT_EQ(b.intermediate_size, a.intermediate_size);
  EXPECT_EQ(b.num_hidden_layers, a.num_hidden_layers);
  EXPECT_EQ(b.num_attention_heads, a.num_attention_heads);
  EXPECT_EQ(b.num_key_value_heads, a.num_key_value_heads);
  EXPECT_EQ(b.head_dim, a.head_dim);
  EXPECT_EQ(b.vocab_size, a.vocab_size);
  EXPECT_EQ(b.max_position_embeddings, a.max_position_embeddings);
  EXPECT_DOUBLE_EQ(b.rms_norm_eps, a.rms_norm_eps);
  EXPECT_DOUBLE_EQ(b.rope.theta, a.rope.theta);
  EXPECT_EQ(b.rope.scaling, a.rope.scaling);
  EXPECT_DOUBLE_EQ(b.rope.factor, a.rope.factor);
  EXPECT_EQ(b.tie_word_embeddings, a.tie_word_embeddings);
  EXPECT_EQ(b.attention_bias, a.attention_bias);
  EXPECT_EQ(b.mlp_bias, a.mlp_bias);
  EXPECT_EQ(b.sliding_window, a.sliding_window);
  EXPECT_EQ(b.bos_token_id, a.bos_token_id);
  EXPECT_EQ(b.eos_token_ids, a.eos_token_ids);
  EXPECT_EQ(b.torch_dtype, a.torch_dtype);
  EXPECT_EQ(b.qk_norm, a.qk_norm);
  EXPECT_EQ(b.moe.num_experts, a.moe.num_experts);
  EXPECT_EQ(b.moe.top_k, a.moe.top_k);
  EXPECT_EQ(b.moe.intermediate_size, a.moe.intermediate_size);
  EXPECT_EQ(b.moe.norm_topk_prob, a.moe.norm_topk_prob);
  EXPECT_EQ(b.moe.sparse_step, a.moe.sparse_step);
  EXPECT_EQ(b.moe.mlp_only_layers, a.moe.mlp_only_layers);
  EXPECT_EQ(b.moe.aux_loss, a.moe.aux_loss);
  EXPECT_DOUBLE_EQ(b.moe.aux_loss_coef, a.moe.aux_loss_coef);
}

TEST(ModelSpec, JsonRoundTrip) {
  const ModelSpec a = model_spec_from_json(kLlama3, "a");
  const ModelSpec b = model_spec_from_json(model_spec_to_json(a), "b");
  expect_same_spec(a, b);
  EXPECT_DOUBLE_EQ(b.rope.low_freq_factor, a.rope.low_freq_factor);
  EXPECT_DOUBLE_EQ(b.rope.high_freq_factor, a.rope.high_freq_factor);
  EXPECT_EQ(b.rope.original_max_position, a.rope.original_max_position);
  EXPECT_EQ(model_parameter_count(b), model_parameter_count(a));
}

TEST(ModelSpec, JsonRoundTripOtherTypes) {
  for (const char* extra : {R"(, "tie_word_embeddings": true, "rope_scaling": {"type": "linear", "factor": 2})",
                            R"(, "model_type": "qwen2", "head_dim": 8, "eos_token_id": 5)",
                            R"(, "model_type": "mistral", "sliding_window": 512, "rms_norm_eps": 1e-6)",
                            R"(, "model_type": "mistral", "sliding_window": null, "dtype": "bfloat16")"}) {
    SCOPED_TRACE(extra);
    const ModelSpec a = model_spec_from_json(small(extra), "a");
    const std::string text = model_spec_to_json(a);
    expect_same_spec(a, model_spec_from_json(text, "b"));
  }
  for (const auto& name : model_preset_names()) {
    SCOPED_TRACE(name);
    const ModelSpec a = *model_preset(name);
    expect_same_spec(a, model_spec_from_json(model_spec_to_json(a), "b"));
  }
  // The class transformers instantiates follows model_type.
  EXPECT_NE(model_spec_to_json(*model_preset("tiny")).find("\"LlamaForCausalLM\""), std::string::npos);
  EXPECT_NE(model_spec_to_json(model_spec_from_json(small(R"(, "model_type": "qwen2")"), "q")).find("Qwen2ForCausalLM"),
            std::string::npos);
}

// transformers 5 saves a Qwen3-MoE config with num_local_experts (num_experts is another
// name of it there); Mixtral's configs may say num_experts. Either name, both if they agree.
TEST(ModelSpec, MoeExpertCountUnderEitherName) {
  for (const char* type : {"qwen3_moe", "mixtral"}) {
    SCOPED_TRACE(type);
    const std::string t = std::string(R"(, "model_type": ")") + type + R"(", "num_experts_per_tok": 2)";
    EXPECT_EQ(model_spec_from_json(small(t + R"(, "num_experts": 6)"), "a").moe.num_experts, 6);
    EXPECT_EQ(model_spec_from_json(small(t + R"(, "num_local_experts": 6)"), "b").moe.num_experts, 6);
    EXPECT_EQ(model_spec_from_json(small(t + R"(, "num_experts": 6, "num_local_experts": 6)"), "c").moe.num_experts, 6);
    expect_bad(small(t + R"(, "num_experts": 6, "num_local_experts": 4)"), "'num_local_experts' (4)");
  }
}

TEST(ModelSpec, TinyWeightList) {
  const ModelSpec s = *model_preset("tiny");
  const auto w = model_weight_list(s);
  ASSERT_EQ(w.size(), 1u + 2 * 9 + 2);
  const std::pair<const char*, Shape> expected[] = {
      {"model.embed_tokens.weight", Shape{320, 64}},
      {"model.layers.0.input_layernorm.weight", Shape{64}},
      {"model.layers.0.self_attn.q_proj.weight", Shape{64, 64}},
      {"model.layers.0.self_attn.k_proj.weight", Shape{32, 64}},
      {"model.layers.0.self_attn.v_proj.weight", Shape{32, 64}},
      {"model.layers.0.self_attn.o_proj.weight", Shape{64, 64}},
      {"model.layers.0.post_attention_layernorm.weight", Shape{64}},
      {"model.layers.0.mlp.gate_proj.weight", Shape{176, 64}},
      {"model.layers.0.mlp.up_proj.weight", Shape{176, 64}},
      {"model.layers.0.mlp.down_proj.weight", Shape{64, 176}},
  };
  for (std::size_t i = 0; i < std::size(expected); ++i) {
    EXPECT_EQ(w[i].name, expected[i].first);
    EXPECT_EQ(w[i].shape, expected[i].second) << w[i].name;
  }
  EXPECT_EQ(w[10].name, "model.layers.1.input_layernorm.weight");
  EXPECT_EQ(w[19].name, "model.norm.weight");
  EXPECT_EQ(w[20].name, "lm_head.weight");
  EXPECT_EQ(w[20].shape, (Shape{320, 64}));
  EXPECT_EQ(model_weight_list(*model_preset("tiny-tied")).back().name, "model.norm.weight");
  EXPECT_EQ(model_parameter_count(s), 133'440);
}

// Llama4TextConfig's defaults and layouts, and a Llama4ForConditionalGeneration config's
// text_config.
TEST(ModelSpec, Llama4TextConfig) {
  const std::string text = R"({"model_type": "llama4_text", "hidden_size": 64, "intermediate_size": 24,
    "intermediate_size_mlp": 80, "num_hidden_layers": 8, "num_attention_heads": 4, "num_key_value_heads": 2,
    "vocab_size": 320, "num_local_experts": 3, "interleave_moe_layer_step": 2})";
  const ModelSpec s = model_spec_from_json(text, "l4");
  EXPECT_TRUE(s.is_llama4() && s.is_moe());
  EXPECT_EQ(s.head_dim, 128);  // Llama4TextConfig's default, not hidden / heads
  EXPECT_EQ(s.intermediate_size, 80);
  EXPECT_EQ(s.moe.intermediate_size, 24);
  EXPECT_EQ(s.moe.top_k, 1);
  EXPECT_FALSE(s.moe.aux_loss);  // transformers' Llama 4 adds no load-balancing loss
  for (std::int64_t l = 0; l < 8; ++l) {
    EXPECT_EQ(s.layer_is_moe(l), l % 2 == 1) << l;  // moe_layers = range(step - 1, L, step)
    EXPECT_EQ(s.layer_uses_rope(l), (l + 1) % 4 != 0) << l;  // no_rope_layer_interval 4
    EXPECT_EQ(s.mlp_rows(l), l % 2 == 1 ? 24 : 80) << l;
  }
  EXPECT_EQ(s.llama4.chunk, 8192);
  EXPECT_TRUE(s.llama4.qk_norm && s.llama4.temperature_tuning);
  EXPECT_EQ(s.rope.theta, 500000.0);
  const std::string wrapped = R"({"model_type": "llama4", "vision_config": {}, "text_config": )" + text + "}";
  EXPECT_EQ(model_spec_to_json(model_spec_from_json(wrapped, "l4")), model_spec_to_json(s));
  EXPECT_THROW(model_spec_from_json(R"({"model_type": "llama4_text", "hidden_size": 64, "intermediate_size": 24,
    "num_hidden_layers": 4, "num_attention_heads": 4, "vocab_size": 320, "moe_layers": [0, 2]})", "l4"),
               Error);  // not the interleave rule
}

TEST(ModelSpec, PresetParameterCounts) {
  EXPECT_EQ(model_parameter_count(*model_preset("llama3-8b")), 8'030'261'248);
  EXPECT_EQ(model_parameter_count(*model_preset("llama3-70b")), 70'553'706'496);
  EXPECT_EQ(model_parameter_count(*model_preset("llama3-405b")), 405'853'388'800);  // Llama 3.1 405B
  // SmolLM2-135M: tied embeddings, so no lm_head.
  EXPECT_EQ(model_parameter_count(*model_preset("smollm2-135m")), 134'515'008);
  // Published totals: Qwen3-30B-A3B 30.5B, Mixtral 8x7B 46.7B.
  EXPECT_EQ(model_parameter_count(*model_preset("qwen3-30b-a3b")), 30'532'122'624);
  EXPECT_EQ(model_parameter_count(*model_preset("mixtral-8x7b")), 46'702'792'704);
  // Llama 4 text models: Scout 109B total with its ~1B vision tower (17B active: attention,
  // the shared expert and one routed expert per layer, the embeddings), Maverick 400B.
  const auto scout = *model_preset("llama4-scout"), maverick = *model_preset("llama4-maverick");
  EXPECT_EQ(model_parameter_count(scout), 107'769'861'120);
  EXPECT_EQ(model_parameter_count(maverick), 400'711'848'960);
  EXPECT_TRUE(scout.layer_is_moe(0) && !maverick.layer_is_moe(0) && maverick.layer_is_moe(1));
  EXPECT_TRUE(scout.layer_uses_rope(2) && !scout.layer_uses_rope(3));
  // The spec survives its config.json (what init-model --config-only writes).
  for (const auto& p : {scout, maverick}) {
    const ModelSpec back = model_spec_from_json(model_spec_to_json(p), "preset");
    EXPECT_EQ(model_parameter_count(back), model_parameter_count(p));
    EXPECT_EQ(back.llama4.rope_layers, p.llama4.rope_layers);
    EXPECT_EQ(back.llama4.qk_norm, p.llama4.qk_norm);
    EXPECT_EQ(back.llama4.chunk, 8192);
    EXPECT_EQ(back.moe.sparse_step, p.moe.sparse_step);
    EXPECT_EQ(back.rope.scaling, p.rope.scaling);
  }
  const auto tiny = *model_preset("tiny");
  const auto tied = *model_preset("tiny-tied");
  EXPECT_LT(model_parameter_count(tiny), 1'000'000);
  EXPECT_GT(model_parameter_count(tiny), 100'000);
  EXPECT_EQ(model_parameter_count(tiny) - model_parameter_count(tied), tiny.vocab_size * tiny.hidden_size);
  EXPECT_LT(tiny.num_key_value_heads, tiny.num_attention_heads);  // GQA
  EXPECT_EQ(tiny.num_key_value_heads % 2, 0);                      // tp = 2 ready
  EXPECT_FALSE(model_preset("llama3-9b").has_value());
  for (const auto& name : model_preset_names()) EXPECT_TRUE(model_preset(name).has_value()) << name;
}

class ModelFiles : public ::testing::Test {
 protected:
  // ctest -j runs the cases as separate processes at once: one directory per process.
  fs::path dir = fs::temp_directory_path() / ("anvil_test_model_" + std::to_string(::getpid()));
  void SetUp() override {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  void TearDown() override { fs::remove_all(dir); }
};

TEST_F(ModelFiles, InitWritesCheckableWeights) {
  ModelSpec spec = *model_preset("tiny");
  InitOptions opt;
  opt.seed = 3;
  model_init_write(spec, dir.string(), opt);
  const ModelSpec back = model_spec_from_dir(dir.string());
  EXPECT_EQ(model_parameter_count(back), model_parameter_count(spec));
  const auto weights = io::SafetensorsModel::open(dir.string());
  EXPECT_NO_THROW(model_check_weights(back, weights));
  const auto* norm = weights.find("model.norm.weight");
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(norm->file->view(*norm->info).as<float>()[5], 1.0f);
  // N(0, 0.02): the sample std of a 11k-element matrix is within a few percent of 0.02.
  const auto* q = weights.find("model.layers.0.self_attn.q_proj.weight");
  const auto v = q->file->view(*q->info);
  double sum = 0, sq = 0;
  for (std::int64_t i = 0; i < v.numel(); ++i) {
    sum += v.as<float>()[i];
    sq += double(v.as<float>()[i]) * v.as<float>()[i];
  }
  const double mean = sum / double(v.numel()), stdev = std::sqrt(sq / double(v.numel()) - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.002);
  EXPECT_NEAR(stdev, 0.02, 0.002);
}

TEST_F(ModelFiles, ShardingKeepsValuesAndIndex) {
  const ModelSpec spec = *model_preset("tiny");
  InitOptions one, many;
  one.seed = many.seed = 9;
  many.max_shard_bytes = 60'000;  // forces several shards
  model_init_write(spec, dir.string(), one);
  const fs::path sharded = dir / "sharded";
  fs::create_directories(sharded);
  model_init_write(spec, sharded.string(), many);
  EXPECT_TRUE(fs::exists(sharded / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(sharded / "model.safetensors"));
  const auto a = io::SafetensorsModel::open(dir.string());
  const auto b = io::SafetensorsModel::open(sharded.string());
  EXPECT_GT(b.files().size(), 2u);
  ASSERT_EQ(a.tensors().size(), b.tensors().size());
  for (const auto& e : a.tensors()) {
    const auto* f = b.find(e.info->name);
    ASSERT_NE(f, nullptr) << e.info->name;
    const auto va = e.file->view(*e.info), vb = f->file->view(*f->info);
    ASSERT_EQ(va.nbytes(), vb.nbytes());
    EXPECT_EQ(std::memcmp(va.data, vb.data, va.nbytes()), 0) << e.info->name;  // values independent of sharding
  }
}

TEST_F(ModelFiles, CheckWeightsNamesTensorAndShapes) {
  const ModelSpec spec = *model_preset("tiny");
  model_init_write(spec, dir.string(), InitOptions{});
  const auto weights = io::SafetensorsModel::open(dir.string());
  ModelSpec wider = spec;
  wider.intermediate_size = 192;
  try {
    model_check_weights(wider, weights);
    FAIL() << "shape mismatch accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("model.layers.0.mlp.gate_proj.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[176, 64]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[192, 64]"), std::string::npos) << msg;
    // gate, up and down of both layers: all listed, not only the first.
    EXPECT_NE(msg.find("6 problems"), std::string::npos) << msg;
    EXPECT_NE(msg.find("model.layers.1.mlp.down_proj.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find((dir / "model.safetensors").string()), std::string::npos) << msg;
  }
  ModelSpec deeper = spec;
  deeper.num_hidden_layers = 3;
  try {
    model_check_weights(deeper, weights);
    FAIL() << "missing layer accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.2."), std::string::npos) << e.what();
  }
  ModelSpec tied = spec;
  tied.tie_word_embeddings = true;  // lm_head.weight present in a tied model: tolerated
  EXPECT_NO_THROW(model_check_weights(tied, weights));
  ModelSpec shallower = spec;
  shallower.num_hidden_layers = 1;
  try {
    model_check_weights(shallower, weights);
    FAIL() << "extra tensors accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unexpected tensor 'model.layers.1."), std::string::npos) << e.what();
  }
}

// A hand-written file: a missing norm, an integer tensor, a stray tensor.
TEST_F(ModelFiles, CheckWeightsListsEveryKindOfProblem) {
  ModelSpec spec = *model_preset("tiny-tied");
  spec.num_hidden_layers = 1;
  {
    io::SafetensorsWriter writer((dir / "model.safetensors").string());
    std::vector<std::pair<WeightInfo, DType>> tensors;
    for (const auto& w : model_weight_list(spec)) {
      if (w.name == "model.norm.weight") continue;
      tensors.push_back({w, w.name == "model.layers.0.mlp.up_proj.weight" ? DType::dtype_i32 : DType::dtype_bf16});
    }
    tensors.push_back({{"model.layers.0.self_attn.rotary_emb.inv_freq", Shape{8}}, DType::dtype_f32});
    tensors.push_back({{"lm_head.weight", Shape{320, 64}}, DType::dtype_bf16});  // tied: tolerated
    tensors.push_back({{"model.extra.weight", Shape{3}}, DType::dtype_f32});
    for (const auto& [w, dt] : tensors) writer.declare(w.name, dt, w.shape);
    for (const auto& [w, dt] : tensors) {
      const std::vector<std::uint8_t> zeros(static_cast<std::size_t>(w.shape.numel()) * dtype_size(dt));
      writer.write_tensor(w.name, zeros.data(), zeros.size());
    }
    writer.finish();
  }
  const auto weights = io::SafetensorsModel::open(dir.string());
  try {
    model_check_weights(spec, weights);
    FAIL() << "broken weights accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("3 problems"), std::string::npos) << msg;
    EXPECT_NE(msg.find("tensor 'model.norm.weight' [64] is missing"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'model.layers.0.mlp.up_proj.weight' has dtype I32"), std::string::npos) << msg;
    EXPECT_NE(msg.find("unexpected tensor 'model.extra.weight' [3]"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("inv_freq"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("lm_head"), std::string::npos) << msg;
  }
}

// bf16 output is the rounding of the f32 values: the generator does not depend on dtype.
TEST_F(ModelFiles, Bf16IsRoundedF32AndSeedMatters) {
  const ModelSpec spec = *model_preset("tiny-tied");
  InitOptions f32, bf16, other;
  f32.seed = bf16.seed = 11;
  other.seed = 12;
  bf16.dtype = DType::dtype_bf16;
  for (const char* sub : {"f32", "bf16", "other"}) fs::create_directories(dir / sub);
  model_init_write(spec, (dir / "f32").string(), f32);
  model_init_write(spec, (dir / "bf16").string(), bf16);
  model_init_write(spec, (dir / "other").string(), other);
  EXPECT_EQ(model_spec_from_dir((dir / "bf16").string()).torch_dtype, "bfloat16");
  const auto a = io::SafetensorsModel::open((dir / "f32").string());
  const auto b = io::SafetensorsModel::open((dir / "bf16").string());
  const auto c = io::SafetensorsModel::open((dir / "other").string());
  for (const auto& e : a.tensors()) {
    const auto va = e.file->view(*e.info);
    const auto* fb = b.find(e.info->name);
    ASSERT_NE(fb, nullptr);
    const auto vb = fb->file->view(*fb->info);
    ASSERT_EQ(vb.dtype, DType::dtype_bf16);
    for (std::int64_t i = 0; i < va.numel(); ++i)
      ASSERT_EQ(vb.as<const std::uint16_t>()[i], f32_to_bf16(va.as<const float>()[i])) << e.info->name << " " << i;
    const auto* fc = c.find(e.info->name);
    const bool differs = std::memcmp(va.data, fc->file->view(*fc->info).data, va.nbytes()) != 0;
    EXPECT_EQ(differs, e.info->name.find("norm") == std::string::npos) << e.info->name;
  }
}

}  // namespace
}  // namespace anvil::model
