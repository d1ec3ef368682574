// Named model shapes: tiny ones for tests, real ones for dry runs and benchmarks.
#include "model/model_spec.h"

namespace anvil::model {

namespace {
ModelSpec make_spec(std::int64_t hidden, std::int64_t inter, std::int64_t layers, std::int64_t heads,
                    std::int64_t kv_heads, std::int64_t vocab, bool tied, double theta, std::int64_t max_pos) {
  ModelSpec s;
  s.hidden_size = hidden;
  s.intermediate_size = inter;
  s.num_hidden_layers = layers;
  s.num_attention_heads = heads;
  s.num_key_value_heads = kv_heads;
  s.head_dim = hidden / heads;
  s.vocab_size = vocab;
  s.tie_word_embeddings = tied;
  s.rope.theta = theta;
  s.max_position_embeddings = max_pos;
  s.rms_norm_eps = 1e-5;
  return s;
}

// Llama 3.x: vocab 128256, rope theta 500000 with llama3 scaling (factor 8 over an 8192
// original context), bf16 weights, untied head. The sizes alone tell 8B from 70B.
ModelSpec llama3_spec(std::int64_t hidden, std::int64_t inter, std::int64_t layers, std::int64_t heads) {
  ModelSpec s = make_spec(hidden, inter, layers, heads, 8, 128256, false, 500000.0, 131072);
  s.rope.scaling = RopeScalingType::rope_llama3;
  s.rope.factor = 8.0;
  s.rope.low_freq_factor = 1.0;
  s.rope.high_freq_factor = 4.0;
  s.rope.original_max_position = 8192;
  s.torch_dtype = "bfloat16";
  s.bos_token_id = 128000;
  s.eos_token_ids = {128001};
  return s;
}

// Llama 4 (meta-llama/Llama-4-{Scout-17B-16E,Maverick-17B-128E}'s text_config): 48 layers,
// 40 heads on 8 KV heads of 128, experts of 8192 with a shared expert, top-1, every fourth
// layer NoPE, chunks of 8192 elsewhere. Scout: 16 experts on every layer, qk-norm, llama3
// RoPE scaling (factor 16); Maverick: 128 experts on every second layer (dense MLPs of
// 16384 between), no qk-norm, no RoPE scaling.
ModelSpec llama4_spec(std::int64_t experts, std::int64_t step) {
  ModelSpec s = make_spec(5120, 16384, 48, 40, 8, 202048, false, 500000.0, 0);
  s.model_type = "llama4_text";
  s.head_dim = 128;
  s.moe = MoeSpec{experts, 1, 8192, false, step, {}, false, 0.001};
  Llama4Spec& f = s.llama4;
  f.on = true;
  f.rope_layers.assign(48, true);
  for (std::size_t l = 3; l < 48; l += 4) f.rope_layers[l] = false;
  f.chunk = 8192;
  f.temperature_tuning = true;
  s.torch_dtype = "bfloat16";
  s.bos_token_id = 200000;
  s.eos_token_ids = {200001, 200007, 200008};
  return s;
}

// The byte-level tokenizer anvil writes has 256 byte tokens followed by three specials.
constexpr std::int64_t kTinyVocab = 320;
}  // namespace

std::optional<ModelSpec> model_preset(std::string_view name) {
  if (name == "tiny" || name == "tiny-tied") {
    // ~150k parameters; heads and kv heads divisible by 2 so tp = 2 tests can use it.
    ModelSpec s = make_spec(64, 176, 2, 4, 2, kTinyVocab, name == "tiny-tied", 10000.0, 1024);
    s.bos_token_id = 256;
    s.eos_token_ids = {257};
    return s;
  }
  if (name == "smollm2-135m") {
    ModelSpec s = make_spec(576, 1536, 30, 9, 3, 49152, true, 100000.0, 8192);
    s.bos_token_id = 1;
    s.eos_token_ids = {2};
    s.torch_dtype = "bfloat16";
    return s;
  }
  if (name == "llama3-8b") return llama3_spec(4096, 14336, 32, 32);
  if (name == "llama3-70b") return llama3_spec(8192, 28672, 80, 64);
  if (name == "llama3-405b") return llama3_spec(16384, 53248, 126, 128);
  if (name == "qwen3-30b-a3b") {
    // 128 experts of 768, top 8 renormalised, every layer sparse; head_dim 128 with qk-norm.
    ModelSpec s = make_spec(2048, 6144, 48, 32, 4, 151936, false, 1000000.0, 40960);
    s.model_type = "qwen3_moe";
    s.head_dim = 128;
    s.rms_norm_eps = 1e-6;
    s.qk_norm = true;
    s.moe = MoeSpec{128, 8, 768, true, 1, {}, false, 0.001};
    s.torch_dtype = "bfloat16";
    s.bos_token_id = 151643;
    s.eos_token_ids = {151645};
    return s;
  }
  if (name == "mixtral-8x7b") {
    ModelSpec s = make_spec(4096, 14336, 32, 32, 8, 32000, false, 1000000.0, 32768);
    s.model_type = "mixtral";
    s.moe = MoeSpec{8, 2, 14336, true, 1, {}, false, 0.02};
    s.torch_dtype = "bfloat16";
    s.bos_token_id = 1;
    s.eos_token_ids = {2};
    return s;
  }
  if (name == "llama4-scout") {
    ModelSpec s = llama4_spec(16, 1);
    s.max_position_embeddings = 10485760;
    s.llama4.qk_norm = true;
    s.rope.scaling = RopeScalingType::rope_llama3;
    s.rope.factor = 16.0;
    s.rope.low_freq_factor = 1.0;
    s.rope.high_freq_factor = 1.0;
    s.rope.original_max_position = 8192;
    return s;
  }
  if (name == "llama4-maverick") {
    ModelSpec s = llama4_spec(128, 2);
    s.max_position_embeddings = 1048576;
    return s;
  }
  return std::nullopt;
}

std::vector<std::string> model_preset_names() {
  return {"tiny",        "tiny-tied",  "smollm2-135m",  "llama3-8b",
          "llama3-70b",  "llama3-405b", "qwen3-30b-a3b", "mixtral-8x7b",
          "llama4-scout", "llama4-maverick"};
}

}  // namespace anvil::model
