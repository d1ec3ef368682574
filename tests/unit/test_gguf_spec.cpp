// The GGUF ↔ Hugging Face mapping of src/gguf both ways: tensor names, llama.cpp's q/k row
// order, and the metadata the export writes for each family (read back by the import's
// own reader of it).
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "error_test_util.h"
#include "gguf/gguf_spec.h"
#include "model/model_spec.h"

namespace anvil::gguf {
namespace {

using test::contains;
using test::error_of;

model::ModelSpec spec_of(const std::string& json) { return model::model_spec_from_json(json, "config.json"); }

// The value of `key` among the metadata, nullptr when absent.
const io::GgufValue* kv_value(const std::vector<io::GgufKv>& kv, const std::string& key) {
  const auto it = std::find_if(kv.begin(), kv.end(), [&](const io::GgufKv& e) { return e.key == key; });
  return it == kv.end() ? nullptr : &it->value;
}

const std::string kLlama =
    R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300, "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192}})";

TEST(GgufSpec, TensorNamesMapBothWays) {
  for (const std::string hf : {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
                               "model.layers.7.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.bias",
                               "model.layers.3.mlp.down_proj.weight", "model.layers.1.input_layernorm.weight",
                               "model.layers.1.post_attention_layernorm.weight", "model.layers.2.self_attn.q_norm.weight"}) {
    const auto g = gguf_tensor_name(hf);
    ASSERT_TRUE(g.has_value()) << hf;
    EXPECT_EQ(gguf_tensor_hf_name(*g), hf) << *g;
  }
  EXPECT_EQ(gguf_tensor_name("model.layers.7.self_attn.q_proj.weight"), "blk.7.attn_q.weight");
  EXPECT_EQ(gguf_tensor_name("model.embed_tokens.weight"), "token_embd.weight");
  EXPECT_FALSE(gguf_tensor_name("model.layers.0.mlp.experts.3.gate_proj.weight").has_value());
  EXPECT_EQ(gguf_tensor_name("model.layers.4.mlp.gate.weight"), "blk.4.ffn_gate_inp.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.4.block_sparse_moe.gate.weight"), "blk.4.ffn_gate_inp.weight");
  EXPECT_FALSE(gguf_tensor_name("model.layers.x.self_attn.q_proj.weight").has_value());
}

// A routed expert's projection is one expert of its layer's stacked tensor.
TEST(GgufSpec, ExpertsStackPerLayerAndProjection) {
  const model::ModelSpec qwen = spec_of(R"({"model_type": "qwen3_moe", "hidden_size": 48, "intermediate_size": 56,
      "moe_intermediate_size": 24, "num_hidden_layers": 4, "num_attention_heads": 3, "num_key_value_heads": 1,
      "head_dim": 16, "vocab_size": 320, "num_experts": 8, "num_experts_per_tok": 2, "max_position_embeddings": 128})");
  const model::ModelSpec mixtral_spec = spec_of(R"({"model_type": "mixtral", "hidden_size": 40, "intermediate_size": 32,
      "num_hidden_layers": 13, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 320,
      "num_local_experts": 8, "num_experts_per_tok": 2, "max_position_embeddings": 128, "sliding_window": null})");
  const auto q = gguf_expert_tensor(qwen, "model.layers.3.mlp.experts.5.gate_proj.weight");
  ASSERT_TRUE(q.has_value());
  EXPECT_EQ(q->name, "blk.3.ffn_gate_exps.weight");
  EXPECT_EQ(q->expert, 5);
  EXPECT_EQ(gguf_expert_tensor(qwen, "model.layers.0.mlp.experts.0.down_proj.weight")->name,
            "blk.0.ffn_down_exps.weight");
  // Mixtral's w1 / w3 / w2 are gate / up / down.
  const auto mixtral = gguf_expert_tensor(mixtral_spec, "model.layers.12.block_sparse_moe.experts.7.w3.weight");
  ASSERT_TRUE(mixtral.has_value());
  EXPECT_EQ(mixtral->name, "blk.12.ffn_up_exps.weight");
  EXPECT_EQ(mixtral->expert, 7);
  EXPECT_EQ(gguf_expert_tensor(mixtral_spec, "model.layers.1.block_sparse_moe.experts.0.w2.weight")->name,
            "blk.1.ffn_down_exps.weight");
  for (const std::string bad : {"model.layers.3.mlp.gate_proj.weight", "model.layers.3.mlp.experts.x.gate_proj.weight",
                                "model.layers.3.mlp.experts.5.gate_proj.bias", "model.layers.3.mlp.experts.5.w4.weight",
                                "model.layers.y.mlp.experts.5.gate_proj.weight",
                                "model.layers.3.block_sparse_moe.experts.5.w1.weight"})  // Mixtral's, not Qwen's
    EXPECT_FALSE(gguf_expert_tensor(qwen, bad).has_value()) << bad;
}

// The export's row order is the import's inverse: a permutation within each head.
TEST(GgufSpec, PermutedRowsArePerHeadPermutations) {
  const std::int64_t heads = 3, d = 8, rows = heads * d;
  std::set<std::int64_t> seen;
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t g = gguf_permuted_row(r, rows, heads);
    EXPECT_EQ(g / d, r / d) << r;  // stays in its head
    seen.insert(g);
  }
  EXPECT_EQ(seen.size(), static_cast<std::size_t>(rows));
  // HF row h·d + s·d/2 + j is GGUF row h·d + 2j + s: the two rotary halves interleave.
  EXPECT_EQ(gguf_permuted_row(d + 1, rows, heads), d + 2);
  EXPECT_EQ(gguf_permuted_row(d + d / 2, rows, heads), d + 1);
  EXPECT_EQ(gguf_permuted_row(5, rows, 0), 5);
}

TEST(GgufSpec, MetadataPerFamily) {
  const model::ModelSpec llama = spec_of(kLlama);
  const auto kv = gguf_model_metadata(llama, "m", 15);
  const auto find = [&](const std::string& key) { return kv_value(kv, key); };
  ASSERT_NE(find("general.architecture"), nullptr);
  EXPECT_EQ(find("general.architecture")->s, "llama");
  EXPECT_EQ(find("general.file_type")->u, 15u);
  EXPECT_EQ(find("llama.attention.head_count_kv")->u, 2u);
  EXPECT_EQ(find("llama.rope.dimension_count")->u, 16u);
  EXPECT_FLOAT_EQ(static_cast<float>(find("llama.rope.freq_base")->f), 500000.0f);
  EXPECT_EQ(find("llama.attention.key_length"), nullptr);  // head_dim is hidden / heads
  // Llama 3's rope scaling is the rope_freqs tensor: 1 for short wavelengths, the factor for long.
  const std::vector<float> freqs = gguf_rope_freqs(llama);
  ASSERT_EQ(freqs.size(), 8u);
  EXPECT_FLOAT_EQ(freqs.front(), 1.0f);
  EXPECT_FLOAT_EQ(freqs.back(), 8.0f);
  EXPECT_EQ(gguf_permuted_heads(llama, "model.layers.0.self_attn.k_proj.weight"), 2);

  const model::ModelSpec qwen2 = spec_of(R"({"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 96,
      "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
      "max_position_embeddings": 512, "rope_theta": 1000000.0, "use_sliding_window": false})");
  EXPECT_EQ(gguf_architecture(qwen2), "qwen2");
  EXPECT_EQ(gguf_permuted_heads(qwen2, "model.layers.0.self_attn.q_proj.weight"), 0);  // stored as HF has it
  EXPECT_TRUE(gguf_rope_freqs(qwen2).empty());

  const model::ModelSpec moe = spec_of(R"({"model_type": "qwen3_moe", "hidden_size": 48, "intermediate_size": 56,
      "moe_intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 3, "num_key_value_heads": 1,
      "head_dim": 16, "vocab_size": 320, "num_experts": 4, "num_experts_per_tok": 2, "max_position_embeddings": 128,
      "norm_topk_prob": true})");
  EXPECT_EQ(gguf_architecture(moe), "qwen3moe");
  EXPECT_EQ(gguf_permuted_heads(moe, "model.layers.0.self_attn.q_proj.weight"), 0);
  const auto moe_kv = gguf_model_metadata(moe, "m", 1);
  const auto moe_find = [&](const std::string& key) { return kv_value(moe_kv, key); };
  ASSERT_NE(moe_find("qwen3moe.expert_count"), nullptr);
  EXPECT_EQ(moe_find("qwen3moe.expert_count")->u, 4u);
  EXPECT_EQ(moe_find("qwen3moe.expert_used_count")->u, 2u);
  EXPECT_EQ(moe_find("qwen3moe.expert_feed_forward_length")->u, 24u);
  // llama.cpp's qwen3moe has experts in every layer and renormalises the top-k weights
  // (whatever the file says: a model without it answers differently there).
  model::ModelSpec dense_layer = moe;
  dense_layer.moe.mlp_only_layers = {1};
  EXPECT_TRUE(contains(error_of([&] { gguf_architecture(dense_layer); }), "layer 1"));
  model::ModelSpec raw_topk = moe;
  raw_topk.moe.norm_topk_prob = false;
  EXPECT_TRUE(contains(error_of([&] { gguf_architecture(raw_topk); }), "norm_topk_prob"));
  // Mixtral is llama.cpp's llama architecture with experts, q/k rows in its order (as Mistral).
  const model::ModelSpec mixtral = spec_of(R"({"model_type": "mixtral", "hidden_size": 40, "intermediate_size": 32,
      "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 320,
      "num_local_experts": 8, "num_experts_per_tok": 2, "max_position_embeddings": 128, "sliding_window": null})");
  EXPECT_EQ(gguf_architecture(mixtral), "llama");
  EXPECT_EQ(gguf_permuted_heads(mixtral, "model.layers.0.self_attn.k_proj.weight"), 2);
  model::ModelSpec mistral = mixtral;
  mistral.model_type = "mistral";
  mistral.moe = {};
  EXPECT_EQ(gguf_permuted_heads(mistral, "model.layers.0.self_attn.q_proj.weight"), 4);
}

// Llama 4 is llama.cpp's llama4: the published Scout and Maverick shapes pass its fixed
// choices (Maverick's 128 experts without qk-norm, Scout's 16 with it); a model that differs
// in one of them is refused by name, since it would load and answer wrong.
TEST(GgufSpec, Llama4IsLlamaCppsLlama4) {
  const model::ModelSpec scout = *model::model_preset("llama4-scout");
  const model::ModelSpec maverick = *model::model_preset("llama4-maverick");
  EXPECT_EQ(gguf_architecture(scout), "llama4");
  EXPECT_EQ(gguf_architecture(maverick), "llama4");
  const auto kv = gguf_model_metadata(maverick, "m", 1);
  const auto find = [&](const std::string& key) { return kv_value(kv, key); };
  ASSERT_NE(find("llama4.interleave_moe_layer_step"), nullptr);
  EXPECT_EQ(find("llama4.interleave_moe_layer_step")->u, 2u);
  EXPECT_EQ(find("llama4.expert_feed_forward_length")->u, static_cast<std::uint64_t>(maverick.moe.intermediate_size));
  EXPECT_EQ(find("llama4.feed_forward_length")->u, static_cast<std::uint64_t>(maverick.intermediate_size));
  EXPECT_EQ(find("llama4.expert_count")->u, 128u);
  EXPECT_EQ(gguf_permuted_heads(maverick, "model.layers.0.self_attn.q_proj.weight"), 0);  // adjacent pairs already
  EXPECT_EQ(gguf_tensor_name("model.layers.1.feed_forward.router.weight"), "blk.1.ffn_gate_inp.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.1.feed_forward.shared_expert.down_proj.weight"), "blk.1.ffn_down_shexp.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.0.feed_forward.up_proj.weight"), "blk.0.ffn_up.weight");
  const auto slice = gguf_expert_tensor(maverick, "model.layers.3.feed_forward.experts.17.up_proj.weight");
  ASSERT_TRUE(slice.has_value());
  EXPECT_EQ(slice->name, "blk.3.ffn_up_exps.weight");
  EXPECT_EQ(slice->expert, 17);

  model::ModelSpec chunk = scout;
  chunk.llama4.chunk = 16;
  EXPECT_TRUE(contains(error_of([&] { gguf_architecture(chunk); }), "attention_chunk_size is 16"));
  model::ModelSpec nope = scout;
  nope.llama4.rope_layers[2] = false;
  EXPECT_TRUE(contains(error_of([&] { gguf_architecture(nope); }), "no_rope_layers[2] is 0"));
  model::ModelSpec no_norm = scout;
  no_norm.llama4.qk_norm = false;
  EXPECT_TRUE(contains(error_of([&] { gguf_architecture(no_norm); }), "use_qk_norm is false with 16 experts"));
  model::ModelSpec floor = maverick;
  floor.llama4.floor_scale = 4096;
  EXPECT_TRUE(contains(error_of([&] { gguf_architecture(floor); }), "floor_scale 4096"));
}

}  // namespace
}  // namespace anvil::gguf
