// GGUF metadata and tensor names → Hugging Face config fields and tensor names.
#include "gguf/gguf_spec.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <numbers>
#include <utility>
#include <vector>

#include "core/error.h"
#include "io/gguf_dequant.h"
#include "model/lora.h"

namespace anvil::gguf {

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

// What convert_hf_to_gguf.py stores in rope_freqs.weight for Llama 3.1's rope scaling: the
// number each rotary frequency is divided by (1 for short wavelengths, `factor` for long
// ones, and between them the smooth interpolation transformers computes).
double llama3_freq_factor(const model::RopeSpec& r, double freq) {
  const double old_len = static_cast<double>(r.original_max_position);
  const double wavelen = 2.0 * std::numbers::pi / freq;
  if (wavelen < old_len / r.high_freq_factor) return 1.0;
  if (wavelen > old_len / r.low_freq_factor) return r.factor;
  const double smooth = (old_len / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
  return 1.0 / ((1.0 - smooth) / r.factor + smooth);
}

// Llama 3.1+ files carry their rope scaling only as rope_freqs.weight; config.json needs its
// parameters. `factor` is the largest entry; the band between short and long wavelengths,
// where 1/entry is linear in 1/wavelength, gives low_freq_factor and high_freq_factor once
// original_max_position_embeddings is known (the file's
// rope.scaling.original_context_length, else 8192 as in every Llama 3 release; Meta's 1 and
// 4 when the band has fewer than two entries). The result must give back every entry, or
// the tensor is refused by name.
void rope_from_freq_factors(const io::GgufFile& g, const std::string& arch, std::int64_t head_dim,
                            model::RopeSpec& rope) {
  const io::GgufTensorInfo& t = *g.find_tensor("rope_freqs.weight");
  const auto half = static_cast<std::uint64_t>(head_dim / 2);
  ANVIL_CHECK_INPUT(t.dims.size() == 1 && t.numel == half, g.path(), ": tensor 'rope_freqs.weight' has shape ",
                    t.shape().str(), ", not (", half, "), one factor per rotary frequency");
  io::gguf_check_dequantizable(t, g.path());
  std::vector<float> factors(half);
  io::gguf_dequantize(t, g.data(t), factors.data(), g.path());
  std::vector<double> freqs(half);
  for (std::uint64_t i = 0; i < half; ++i)  // in f32, as the converter computes them
    freqs[i] = static_cast<float>(1.0 / std::pow(rope.theta, static_cast<double>(2 * i) / head_dim));
  const double factor = *std::max_element(factors.begin(), factors.end());
  if (std::abs(factor - 1.0) < 1e-6 && *std::min_element(factors.begin(), factors.end()) > 1.0f - 1e-6f) return;
  ANVIL_CHECK_INPUT(rope.scaling == model::RopeScalingType::rope_none, g.path(),
                    ": the file has both rope_freqs.weight and ", arch, ".rope.scaling.type");
  rope.scaling = model::RopeScalingType::rope_llama3;
  rope.factor = factor;
  rope.original_max_position = get_int_or(g, arch + ".rope.scaling.original_context_length", 8192);
  // In the band, s = (1/entry - 1/factor) / (1 - 1/factor) = a / wavelength - b with
  // a = old_len / (high - low) and b = low / (high - low).
  std::vector<std::pair<double, double>> band;  // (1 / wavelength, s)
  for (std::uint64_t i = 0; i < half; ++i)
    if (factors[i] > 1.0 + 1e-4 && factors[i] < factor * (1.0 - 1e-4))
      band.push_back({freqs[i] / (2.0 * std::numbers::pi), (1.0 / factors[i] - 1.0 / factor) / (1.0 - 1.0 / factor)});
  if (band.size() >= 2) {
    const auto [x0, s0] = band.front();
    const auto [x1, s1] = band.back();
    const double a = (s1 - s0) / (x1 - x0), b = a * x0 - s0;
    const double width = static_cast<double>(rope.original_max_position) / a;
    // Rounded to 1/1000: the entries are f32, the parameters short decimals.
    rope.low_freq_factor = std::round(b * width * 1000.0) / 1000.0;
    rope.high_freq_factor = std::round((b * width + width) * 1000.0) / 1000.0;
  }
  for (std::uint64_t i = 0; i < half; ++i)
    ANVIL_CHECK_INPUT(std::abs(llama3_freq_factor(rope, freqs[i]) - factors[i]) <= 1e-4 * factors[i], g.path(),
                      ": tensor 'rope_freqs.weight' is not Llama 3 rope scaling (entry ", i, " is ", factors[i],
                      ", but factor ", rope.factor, ", low_freq_factor ", rope.low_freq_factor,
                      ", high_freq_factor ", rope.high_freq_factor, " and original context ",
                      rope.original_max_position, " give ", llama3_freq_factor(rope, freqs[i]),
                      "); anvil imports no other per-frequency rope factors");
}

model::RopeSpec rope_spec(const io::GgufFile& g, const std::string& arch, std::int64_t head_dim) {
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
  if (g.find_tensor("rope_freqs.weight")) rope_from_freq_factors(g, arch, head_dim, rope);
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
  spec.rope = rope_spec(g, arch, spec.head_dim);
  spec.vocab_size = vocab_size(g, arch);
  spec.tie_word_embeddings = g.find_tensor("output.weight") == nullptr;
  spec.bos_token_id = get_int_or(g, "tokenizer.ggml.bos_token_id", -1);
  if (g.find("tokenizer.ggml.eos_token_id")) spec.eos_token_ids = {get_int(g, "tokenizer.ggml.eos_token_id")};
  return spec;
}

namespace {

// The per-block tensors: GGUF stem (after "blk.N.") → HF module (after "model.layers.N.").
constexpr std::array<std::pair<const char*, const char*>, 11> kBlockNames = {{
    {"attn_q", "self_attn.q_proj"},
    {"attn_k", "self_attn.k_proj"},
    {"attn_v", "self_attn.v_proj"},
    {"attn_output", "self_attn.o_proj"},
    {"ffn_gate", "mlp.gate_proj"},
    {"ffn_up", "mlp.up_proj"},
    {"ffn_down", "mlp.down_proj"},
    {"attn_norm", "input_layernorm"},
    {"ffn_norm", "post_attention_layernorm"},
    {"attn_q_norm", "self_attn.q_norm"},
    {"attn_k_norm", "self_attn.k_norm"},
}};

// A sparse layer's router: Qwen3-MoE's and Mixtral's HF modules (after "model.layers.N.").
constexpr std::array<const char*, 2> kRouterModules = {"mlp.gate", "block_sparse_moe.gate"};

// Llama 4's feed-forward modules (after "model.layers.N."), written only: a sparse layer's
// router and shared expert, a dense layer's MLP.
constexpr std::array<std::pair<const char*, const char*>, 7> kLlama4Names = {{
    {"ffn_gate_inp", "feed_forward.router"},
    {"ffn_gate_shexp", "feed_forward.shared_expert.gate_proj"},
    {"ffn_up_shexp", "feed_forward.shared_expert.up_proj"},
    {"ffn_down_shexp", "feed_forward.shared_expert.down_proj"},
    {"ffn_gate", "feed_forward.gate_proj"},
    {"ffn_up", "feed_forward.up_proj"},
    {"ffn_down", "feed_forward.down_proj"},
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

std::optional<std::string> gguf_tensor_name(const std::string& hf_name) {
  static constexpr std::string_view kLayers = "model.layers.";
  if (hf_name.starts_with(kLayers)) {
    const std::size_t dot = hf_name.find('.', kLayers.size());
    if (dot == std::string::npos) return std::nullopt;
    const std::string layer = hf_name.substr(kLayers.size(), dot - kLayers.size());
    if (layer.empty() || !std::all_of(layer.begin(), layer.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return std::nullopt;
    const std::string rest = hf_name.substr(dot + 1);  // "self_attn.q_proj.weight"
    for (const auto& [to, from] : kBlockNames)
      for (const char* suffix : {".weight", ".bias"})
        if (rest == str_cat(from, suffix)) return str_cat("blk.", layer, ".", to, suffix);
    for (const char* router : kRouterModules)
      if (rest == str_cat(router, ".weight")) return str_cat("blk.", layer, ".ffn_gate_inp.weight");
    for (const auto& [to, from] : kLlama4Names)
      if (rest == str_cat(from, ".weight")) return str_cat("blk.", layer, ".", to, ".weight");
    return std::nullopt;
  }
  for (const auto& [to, from] : kTopNames)
    if (hf_name == str_cat(from, ".weight")) return str_cat(to, ".weight");
  return std::nullopt;
}

std::optional<GgufExpertSlice> gguf_expert_tensor(const model::ModelSpec& spec, const std::string& hf_name) {
  const auto w = model::expert_weight_from_name(spec, hf_name);
  if (!w) return std::nullopt;
  const char* stem = w->proj == model::Proj::proj_expert_gate ? "ffn_gate_exps"
                     : w->proj == model::Proj::proj_expert_up ? "ffn_up_exps"
                                                              : "ffn_down_exps";
  return GgufExpertSlice{str_cat("blk.", w->layer, ".", stem, ".weight"), w->expert};
}

std::int64_t gguf_permuted_row(std::int64_t hf_row, std::int64_t rows, std::int64_t heads) {
  if (heads == 0) return hf_row;
  const std::int64_t d = rows / heads, half = d / 2;
  const std::int64_t h = hf_row / d, k = hf_row % d;
  return h * d + 2 * (k % half) + k / half;
}

namespace {

// llama.cpp's llama4 fixes what Llama 4's config.json leaves open (llama4.cpp: chunks of
// 8192 on the RoPE layers, every fourth layer NoPE with temperature tuning at floor 8192 and
// scale 0.1, the L2 qk-norm unless the model has 128 experts); a model that differs would
// load and answer wrong. (Its experts every interleave_moe_layer_step-th layer are
// config.json's moe_layers, which model_spec.cpp holds to that rule.)
void llama4_check(const model::ModelSpec& spec) {
  const model::Llama4Spec& l4 = spec.llama4;
  const auto refuse = [](auto&&... why) {
    throw_user_error("export: llama.cpp's llama4 architecture ", why..., "; export --format hf instead");
  };
  if (l4.chunk != 8192) refuse("attends in chunks of 8192 positions, but attention_chunk_size is ", l4.chunk);
  for (std::int64_t l = 0; l < spec.num_hidden_layers; ++l)
    if (spec.layer_uses_rope(l) != ((l + 1) % 4 != 0))
      refuse("uses RoPE on every layer but each fourth, but no_rope_layers[", l, "] is ",
             spec.layer_uses_rope(l) ? 1 : 0);
  if (!l4.temperature_tuning || l4.floor_scale != 8192.0 || std::abs(l4.attn_scale - 0.1) > 1e-12)
    refuse("tunes the NoPE layers' attention temperature with floor_scale 8192 and attn_scale 0.1, but the model has ",
           "attn_temperature_tuning ", l4.temperature_tuning ? "true" : "false", ", floor_scale ", l4.floor_scale, ", attn_scale ",
           l4.attn_scale);
  if (l4.qk_norm != (spec.moe.num_experts != 128))
    refuse("L2-normalises q and k exactly when the model has other than 128 experts, but use_qk_norm is ",
           l4.qk_norm ? "true" : "false", " with ", spec.moe.num_experts, " experts");
}

}  // namespace

std::string gguf_architecture(const model::ModelSpec& spec) {
  if (spec.is_llama4()) {
    llama4_check(spec);
    return "llama4";
  }
  if (spec.is_moe()) {
    // llama.cpp's qwen3moe and its llama-with-experts (Mixtral) put experts in every layer
    // and renormalise the top-k weights of the softmax; other layouts would load and answer wrong.
    for (std::int64_t l = 0; l < spec.num_hidden_layers; ++l)
      ANVIL_CHECK_INPUT(spec.layer_is_moe(l), "export: layer ", l, " of this ", spec.model_type,
                        " model has a dense MLP (mlp_only_layers / decoder_sparse_step), which llama.cpp's ",
                        spec.model_type == "mixtral" ? "llama" : "qwen3moe",
                        " architecture cannot hold; export --format hf (or mlx) instead");
    ANVIL_CHECK_INPUT(spec.moe.norm_topk_prob, "export: norm_topk_prob is false, but llama.cpp renormalises the top-",
                      spec.moe.top_k, " expert weights of ", spec.model_type, "; export --format hf (or mlx) instead");
    if (spec.model_type == "qwen3_moe") return "qwen3moe";
    if (spec.model_type == "mixtral") return "llama";
    throw_user_error("export: the GGUF export does not write ", spec.model_type,
                     " mixture-of-experts models (qwen3_moe and mixtral are written); export --format hf");
  }
  if (spec.model_type == "llama" || spec.model_type == "mistral") return "llama";
  if (spec.model_type == "qwen2" || spec.model_type == "qwen3") return spec.model_type;
  throw_user_error("export: llama.cpp has no architecture anvil can write for model_type '", spec.model_type,
                   "' (llama, mistral, qwen2 and qwen3 are written)");
}

std::vector<io::GgufKv> gguf_model_metadata(const model::ModelSpec& spec, const std::string& name,
                                            std::uint32_t file_type) {
  const std::string arch = gguf_architecture(spec);
  ANVIL_CHECK_INPUT(spec.sliding_window == 0 || spec.sliding_window >= spec.max_position_embeddings,
                    "export: llama.cpp's ", arch, " architecture has no sliding-window attention (sliding_window ",
                    spec.sliding_window, ")");
  const auto u32 = [](std::int64_t v) { return io::gguf_value_u32(static_cast<std::uint32_t>(v)); };
  std::vector<io::GgufKv> kv = {
      {"general.architecture", io::gguf_value_string(arch)},
      {"general.type", io::gguf_value_string("model")},
      {"general.name", io::gguf_value_string(name)},
      {arch + ".block_count", u32(spec.num_hidden_layers)},
      {arch + ".context_length", u32(spec.max_position_embeddings)},
      {arch + ".embedding_length", u32(spec.hidden_size)},
      {arch + ".feed_forward_length", u32(spec.intermediate_size)},
      {arch + ".attention.head_count", u32(spec.num_attention_heads)},
      {arch + ".attention.head_count_kv", u32(spec.num_key_value_heads)},
  };
  if (spec.rope.scaling == model::RopeScalingType::rope_linear) {
    kv.push_back({arch + ".rope.scaling.type", io::gguf_value_string("linear")});
    kv.push_back({arch + ".rope.scaling.factor", io::gguf_value_f32(static_cast<float>(spec.rope.factor))});
  } else {
    ANVIL_CHECK_INPUT(spec.rope.scaling == model::RopeScalingType::rope_none ||
                          spec.rope.scaling == model::RopeScalingType::rope_llama3,
                      "export: this rope scaling has no GGUF form anvil writes (none, linear and llama3 do)");
  }
  kv.push_back({arch + ".rope.freq_base", io::gguf_value_f32(static_cast<float>(spec.rope.theta))});
  kv.push_back({arch + ".attention.layer_norm_rms_epsilon", io::gguf_value_f32(static_cast<float>(spec.rms_norm_eps))});
  if (spec.is_moe()) {
    kv.push_back({arch + ".expert_count", u32(spec.moe.num_experts)});
    kv.push_back({arch + ".expert_used_count", u32(spec.moe.top_k)});
  }
  if (spec.head_dim * spec.num_attention_heads != spec.hidden_size) {
    kv.push_back({arch + ".attention.key_length", u32(spec.head_dim)});
    kv.push_back({arch + ".attention.value_length", u32(spec.head_dim)});
  }
  kv.push_back({"general.file_type", io::gguf_value_u32(file_type)});
  if (arch == "qwen3moe" || arch == "llama4")
    kv.push_back({arch + ".expert_feed_forward_length", u32(spec.moe.intermediate_size)});
  if (arch == "llama4") kv.push_back({arch + ".interleave_moe_layer_step", u32(spec.moe.sparse_step)});
  if (arch == "llama" || arch == "llama4") {
    kv.push_back({arch + ".vocab_size", u32(spec.vocab_size)});
    kv.push_back({arch + ".rope.dimension_count", u32(spec.head_dim)});
  }
  return kv;
}

std::vector<float> gguf_rope_freqs(const model::ModelSpec& spec) {
  if (spec.rope.scaling != model::RopeScalingType::rope_llama3) return {};
  std::vector<float> factors(static_cast<std::size_t>(spec.head_dim / 2));
  for (std::size_t i = 0; i < factors.size(); ++i) {
    const double freq = static_cast<float>(1.0 / std::pow(spec.rope.theta, static_cast<double>(2 * i) / spec.head_dim));
    factors[i] = static_cast<float>(llama3_freq_factor(spec.rope, freq));
  }
  return factors;
}

std::int64_t gguf_permuted_heads(const model::ModelSpec& spec, const std::string& hf_name) {
  // Every family llama.cpp runs as its llama architecture (Llama, Mistral, Mixtral).
  if (spec.model_type != "llama" && spec.model_type != "mistral" && spec.model_type != "mixtral") return 0;
  if (hf_name.ends_with(".self_attn.q_proj.weight")) return spec.num_attention_heads;
  if (hf_name.ends_with(".self_attn.k_proj.weight")) return spec.num_key_value_heads;
  return 0;
}

}  // namespace anvil::gguf
