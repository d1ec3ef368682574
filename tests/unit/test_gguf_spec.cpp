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
  EXPECT_FALSE(gguf_tensor_name("model.layers.x.self_attn.q_proj.weight").has_value());
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
  const auto find = [&](const std::string& key) {
    const auto it = std::find_if(kv.begin(), kv.end(), [&](const io::GgufKv& e) { return e.key == key; });
    return it == kv.end() ? nullptr : &it->value;
  };
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
      "head_dim": 16, "vocab_size": 320, "num_experts": 4, "num_experts_per_tok": 2, "max_position_embeddings": 128})");
  EXPECT_TRUE(contains(error_of([&] { gguf_architecture(moe); }), "mixture-of-experts"));
}

}  // namespace
}  // namespace anvil::gguf
