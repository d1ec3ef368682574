// GGUF metadata and tensor names → Hugging Face config fields and tensor names.
#include "import/gguf_spec.h"

#include <array>
#include <charconv>
#include <utility>

#include "core/error.h"

namespace anvil::importing {

namespace {

std::int64_t get_int(const io::GgufFile& g, const std::string& key) {
  return static_cast<std::int64_t>(g.get_u64(key));
}

std::int64_t get_int_or(const io::GgufFile& g, const std::string& key, std::int64_t fallback) {
  return g.find(key) ? get_int(g, key) : fallback;
}

double get_f64_or(const io::GgufFile& g, const std::string& key, double fallback) {
  return g.find(key) ? g.get_f64(key) : fallback;
}

model::RopeSpec rope_spec(const io::GgufFile& g, const std::string& arch) {
  model::RopeSpec rope;
  rope.theta = get_f64_or(g, arch + ".rope.freq_base", 10000.0);
  const std::string type_key = arch + ".rope.scaling.type";
  const std::string type = g.find(type_key) ? g.get_string(type_key) : "none";
  if (type == "linear") {
    rope.scaling = model::RopeScalingType::rope_linear;
    rope.factor = g.get_f64(arch + ".rope.scaling.factor");
  } else {
    ANVIL_CHECK_INPUT(type == "none", g.path(), ": rope scaling '", type, "' (", type_key,
                      ") is not supported (none and linear are)");
  }
  return rope;
}

std::int64_t vocab_size(const io::GgufFile& g, const std::string& arch) {
  if (g.find("tokenizer.ggml.tokens")) return static_cast<std::int64_t>(g.get_array("tokenizer.ggml.tokens").size());
  return get_int(g, arch + ".vocab_size");
}

}  // namespace

model::ModelSpec gguf_model_spec(const io::GgufFile& g) {
  const std::string& arch = g.get_string("general.architecture");
  ANVIL_CHECK_INPUT(arch == "llama" || arch == "qwen2", g.path(), ": architecture '", arch,
                    "' is not supported by anvil import (llama and qwen2 are)");
  model::ModelSpec spec;
  spec.model_type = arch;
  spec.attention_bias = arch == "qwen2";  // q/k/v biases, as transformers' Qwen2 has them
  spec.hidden_size = get_int(g, arch + ".embedding_length");
  spec.intermediate_size = get_int(g, arch + ".feed_forward_length");
  spec.num_hidden_layers = get_int(g, arch + ".block_count");
  spec.num_attention_heads = get_int(g, arch + ".attention.head_count");
  spec.num_key_value_heads = get_int_or(g, arch + ".attention.head_count_kv", spec.num_attention_heads);
  ANVIL_CHECK_INPUT(spec.num_attention_heads > 0 && spec.num_key_value_heads > 0 &&
                        spec.num_attention_heads % spec.num_key_value_heads == 0,
                    g.path(), ": ", spec.num_attention_heads, " attention heads cannot be shared by ",
                    spec.num_key_value_heads, " kv heads");
  spec.head_dim =
      get_int_or(g, arch + ".attention.key_length", spec.hidden_size / spec.num_attention_heads);
  spec.max_position_embeddings = get_int(g, arch + ".context_length");
  spec.rms_norm_eps = g.get_f64(arch + ".attention.layer_norm_rms_epsilon");
  spec.rope = rope_spec(g, arch);
  spec.vocab_size = vocab_size(g, arch);
  spec.tie_word_embeddings = g.find_tensor("output.weight") == nullptr;
  spec.bos_token_id = get_int_or(g, "tokenizer.ggml.bos_token_id", -1);
  if (g.find("tokenizer.ggml.eos_token_id")) spec.eos_token_ids = {get_int(g, "tokenizer.ggml.eos_token_id")};
  return spec;
}

namespace {

// The per-block tensors: GGUF stem (after "blk.N.") → HF module (after "model.layers.N.").
constexpr std::array<std::pair<const char*, const char*>, 9> kBlockNames = {{
    {"attn_q", "self_attn.q_proj"},
    {"attn_k", "self_attn.k_proj"},
    {"attn_v", "self_attn.v_proj"},
    {"attn_output", "self_attn.o_proj"},
    {"ffn_gate", "mlp.gate_proj"},
    {"ffn_up", "mlp.up_proj"},
    {"ffn_down", "mlp.down_proj"},
    {"attn_norm", "input_layernorm"},
    {"ffn_norm", "post_attention_layernorm"},
}};

constexpr std::array<std::pair<const char*, const char*>, 3> kTopNames = {{
    {"token_embd", "model.embed_tokens"},
    {"output_norm", "model.norm"},
    {"output", "lm_head"},
}};

// "blk.12.ffn_up.weight" → {12, "ffn_up", "weight"}; false when the name is not that shape.
bool split_block_name(const std::string& name, std::string* layer, std::string* stem, std::string* suffix) {
  if (!name.starts_with("blk.")) return false;
  const std::size_t dot1 = name.find('.', 4);
  const std::size_t dot2 = dot1 == std::string::npos ? dot1 : name.find('.', dot1 + 1);
  if (dot2 == std::string::npos || dot1 == 4) return false;
  *layer = name.substr(4, dot1 - 4);
  int n = 0;
  const auto [end, ec] = std::from_chars(layer->data(), layer->data() + layer->size(), n);
  if (ec != std::errc() || end != layer->data() + layer->size()) return false;
  *stem = name.substr(dot1 + 1, dot2 - dot1 - 1);
  *suffix = name.substr(dot2 + 1);
  return true;
}

}  // namespace

std::optional<std::string> gguf_tensor_hf_name(const std::string& gguf_name) {
  std::string layer, stem, suffix;
  if (split_block_name(gguf_name, &layer, &stem, &suffix)) {
    if (suffix != "weight" && suffix != "bias") return std::nullopt;
    for (const auto& [from, to] : kBlockNames)
      if (stem == from) return str_cat("model.layers.", layer, ".", to, ".", suffix);
    return std::nullopt;
  }
  for (const auto& [from, to] : kTopNames)
    if (gguf_name == str_cat(from, ".weight")) return str_cat(to, ".weight");
  return std::nullopt;
}

std::int64_t gguf_permuted_heads(const model::ModelSpec& spec, const std::string& hf_name) {
  if (spec.model_type != "llama") return 0;
  if (hf_name.ends_with(".self_attn.q_proj.weight")) return spec.num_attention_heads;
  if (hf_name.ends_with(".self_attn.k_proj.weight")) return spec.num_key_value_heads;
  return 0;
}

}  // namespace anvil::importing
