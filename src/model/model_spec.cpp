// ModelSpec <-> Hugging Face config.json.
#include "model/model_spec.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "io/files.h"

namespace anvil::model {

using json = nlohmann::json;

namespace {

// Typed access to config.json keys; every failure names the file and the key.
struct ConfigReader {
  const json& j;
  const std::string& label;

  bool has(const char* key) const { return j.contains(key) && !j[key].is_null(); }

  std::int64_t positive_int(const char* key) const {
    ANVIL_CHECK_INPUT(has(key), label, ": missing required key '", key, "'");
    return positive_int_value(j[key], key);
  }
  std::int64_t positive_int_value(const json& v, const std::string& key) const {
    ANVIL_CHECK_INPUT(v.is_number_integer(), label, ": key '", key, "' must be an integer, got ", v.dump());
    const auto x = v.get<std::int64_t>();
    ANVIL_CHECK_INPUT(x > 0, label, ": key '", key, "' must be positive, got ", x);
    return x;
  }
  std::int64_t optional_positive_int(const char* key, std::int64_t fallback) const {
    return has(key) ? positive_int_value(j[key], key) : fallback;
  }
  double number_value(const json& v, const std::string& key) const {
    ANVIL_CHECK_INPUT(v.is_number(), label, ": key '", key, "' must be a number, got ", v.dump());
    return v.get<double>();
  }
  double positive_number(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    const double x = number_value(j[key], key);
    ANVIL_CHECK_INPUT(x > 0, label, ": key '", key, "' must be positive, got ", x);
    return x;
  }
  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    ANVIL_CHECK_INPUT(j[key].is_boolean(), label, ": key '", key, "' must be true or false, got ", j[key].dump());
    return j[key].get<bool>();
  }
};

void parse_rope(const ConfigReader& r, ModelSpec& spec) {
  // Newer transformers write "rope_parameters" (with rope_theta inside); older ones
  // "rope_scaling" next to a top-level "rope_theta".
  const char* key = r.has("rope_parameters") ? "rope_parameters" : r.has("rope_scaling") ? "rope_scaling" : nullptr;
  spec.rope.theta = r.positive_number("rope_theta", spec.model_type == "llama4_text" ? 500000.0 : 10000.0);
  if (!key) return;
  const json& p = r.j[key];
  const std::string k = key;
  ANVIL_CHECK_INPUT(p.is_object(), r.label, ": key '", k, "' must be an object or null");
  if (p.contains("rope_theta")) {
    spec.rope.theta = r.number_value(p["rope_theta"], k + ".rope_theta");
    ANVIL_CHECK_INPUT(spec.rope.theta > 0, r.label, ": key '", k, ".rope_theta' must be positive");
  }
  std::string type = "default";
  for (const char* tk : {"rope_type", "type"}) {
    if (p.contains(tk)) {
      ANVIL_CHECK_INPUT(p[tk].is_string(), r.label, ": key '", k, ".", tk, "' must be a string");
      type = p[tk].get<std::string>();
      break;
    }
  }
  auto num = [&](const char* name, double fallback) {
    return p.contains(name) ? r.number_value(p[name], k + "." + name) : fallback;
  };
  if (type == "default") {
    spec.rope.scaling = RopeScalingType::rope_none;
  } else if (type == "linear") {
    spec.rope.scaling = RopeScalingType::rope_linear;
    ANVIL_CHECK_INPUT(p.contains("factor"), r.label, ": key '", k, ".factor' is required for linear scaling");
    spec.rope.factor = num("factor", 1.0);
  } else if (type == "llama3") {
    spec.rope.scaling = RopeScalingType::rope_llama3;
    for (const char* req : {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"})
      ANVIL_CHECK_INPUT(p.contains(req), r.label, ": key '", k, ".", req, "' is required for llama3 scaling");
    spec.rope.factor = num("factor", 1.0);
    spec.rope.low_freq_factor = num("low_freq_factor", 1.0);
    spec.rope.high_freq_factor = num("high_freq_factor", 4.0);
    spec.rope.original_max_position = r.positive_int_value(p["original_max_position_embeddings"],
                                                           k + ".original_max_position_embeddings");
    // Equal factors (Llama 4 Scout) leave no band to smooth: frequencies are kept or divided.
    ANVIL_CHECK_INPUT(spec.rope.high_freq_factor >= spec.rope.low_freq_factor, r.label, ": key '", k,
                      ".high_freq_factor' must not be less than low_freq_factor");
  } else {
    throw_user_error(r.label, ": key '", k, "' has rope type '", type,
                     "', which anvil does not support (supported: default, linear, llama3)");
  }
  ANVIL_CHECK_INPUT(spec.rope.factor > 0, r.label, ": key '", k, ".factor' must be positive");
}

// Whether any layer of a Qwen2/Qwen3 model with use_sliding_window attends through the
// window: transformers' layer_types when given, else layers from max_window_layers (default
// 28) on. With fewer layers than that (most Qwen configs), none does. (Qwen3-MoE has no
// per-layer rule in transformers: its window, when on, is every layer's.)
bool qwen_window_used(const ConfigReader& r, const ModelSpec& spec) {
  if (r.has("layer_types")) {
    const json& types = r.j["layer_types"];
    ANVIL_CHECK_INPUT(types.is_array() && static_cast<std::int64_t>(types.size()) == spec.num_hidden_layers, r.label,
                      ": key 'layer_types' must list one type per layer (", spec.num_hidden_layers, ")");
    return std::any_of(types.begin(), types.end(), [](const json& t) { return t == "sliding_attention"; });
  }
  std::int64_t first = 28;  // Qwen2Config's and Qwen3Config's default
  if (r.has("max_window_layers")) {
    const json& v = r.j["max_window_layers"];
    ANVIL_CHECK_INPUT(v.is_number_integer() && v.get<std::int64_t>() >= 0, r.label,
                      ": key 'max_window_layers' must be a non-negative integer, got ", v.dump());
    first = v.get<std::int64_t>();
  }
  return first < spec.num_hidden_layers;
}

// Mistral: a missing key means transformers' default window of 4096, null means none.
// Qwen2: the window is only used when use_sliding_window is true, and then only on the
// layers qwen_window_used names. Llama has none.
// Qwen3 as Qwen2; Qwen3-MoE's window, when on, on every layer; Mixtral as Mistral but with no
// window when the key is missing.
void parse_sliding_window(const ConfigReader& r, ModelSpec& spec) {
  const std::string& t = spec.model_type;
  const bool mistral = t == "mistral" || t == "mixtral";
  const bool per_layer = t == "qwen2" || t == "qwen3";
  const bool qwen_on = (per_layer || t == "qwen3_moe") && r.boolean("use_sliding_window", false) &&
                       (!per_layer || qwen_window_used(r, spec));
  if (!mistral && !qwen_on) return;
  if (!r.j.contains("sliding_window")) {
    if (t != "mixtral") spec.sliding_window = 4096;  // MistralConfig's and Qwen2/3Config's default
    return;
  }
  if (r.j["sliding_window"].is_null()) return;
  spec.sliding_window = r.positive_int_value(r.j["sliding_window"], "sliding_window");
}

std::vector<std::int64_t> int_list(const ConfigReader& r, const char* key) {
  std::vector<std::int64_t> out;
  if (!r.has(key)) return out;
  const json& v = r.j[key];
  ANVIL_CHECK_INPUT(v.is_array(), r.label, ": key '", key, "' must be a list of integers");
  for (const auto& x : v) {
    ANVIL_CHECK_INPUT(x.is_number_integer(), r.label, ": key '", key, "' must list integers, got ", x.dump());
    out.push_back(x.get<std::int64_t>());
  }
  return out;
}

// The routed experts' count. transformers reads either key for Qwen3-MoE and Mixtral (its
// attribute_map makes num_experts another name of num_local_experts) and saves
// num_local_experts since version 5; the hub's Qwen3-MoE configs say num_experts.
std::int64_t expert_count(const ConfigReader& r, std::int64_t fallback) {
  const bool plain = r.has("num_experts"), local = r.has("num_local_experts");
  if (plain && local) {
    const std::int64_t a = r.positive_int_value(r.j["num_experts"], "num_experts");
    const std::int64_t b = r.positive_int_value(r.j["num_local_experts"], "num_local_experts");
    ANVIL_CHECK_INPUT(a == b, r.label, ": keys 'num_experts' (", a, ") and 'num_local_experts' (", b,
                      ") name the same count and differ");
    return a;
  }
  if (local) return r.positive_int_value(r.j["num_local_experts"], "num_local_experts");
  return r.optional_positive_int("num_experts", fallback);
}

// Qwen3-MoE (num_experts, moe_intermediate_size, decoder_sparse_step, mlp_only_layers) and
// Mixtral (num_local_experts, every layer sparse, intermediate_size is the expert's).
void parse_moe(const ConfigReader& r, ModelSpec& spec) {
  MoeSpec& m = spec.moe;
  const bool mixtral = spec.model_type == "mixtral";
  m.num_experts = expert_count(r, mixtral ? 8 : 128);
  m.top_k = r.optional_positive_int("num_experts_per_tok", mixtral ? 2 : 8);
  m.intermediate_size = mixtral ? spec.intermediate_size : r.optional_positive_int("moe_intermediate_size", 768);
  m.norm_topk_prob = mixtral || r.boolean("norm_topk_prob", false);
  if (!mixtral) {
    m.sparse_step = r.optional_positive_int("decoder_sparse_step", 1);
    m.mlp_only_layers = int_list(r, "mlp_only_layers");
    for (auto l : m.mlp_only_layers)
      ANVIL_CHECK_INPUT(l >= 0 && l < spec.num_hidden_layers, r.label, ": key 'mlp_only_layers' names layer ", l,
                        ", outside 0..", spec.num_hidden_layers - 1);
  }
  ANVIL_CHECK_INPUT(m.top_k <= m.num_experts, r.label, ": key 'num_experts_per_tok' (", m.top_k,
                    ") exceeds the number of experts (", m.num_experts, ")");
  m.aux_loss = r.boolean("output_router_logits", false);
  if (r.has("router_aux_loss_coef")) m.aux_loss_coef = r.number_value(r.j["router_aux_loss_coef"], "router_aux_loss_coef");
  else m.aux_loss_coef = 0.001;
  ANVIL_CHECK_INPUT(m.aux_loss_coef >= 0, r.label, ": key 'router_aux_loss_coef' must not be negative");
  if (mixtral && r.has("router_jitter_noise")) {
    // transformers multiplies the router input by noise in training mode: not reproducible.
    ANVIL_CHECK_INPUT(r.number_value(r.j["router_jitter_noise"], "router_jitter_noise") == 0.0, r.label,
                      ": key 'router_jitter_noise' must be 0: anvil's routing is deterministic");
  }
}

// Llama 4 text (transformers' Llama4TextConfig): intermediate_size is the experts' and the
// shared expert's width, intermediate_size_mlp the dense layers'. moe_layers defaults to
// every interleave_moe_layer_step-th layer, (l + 1) % step == 0, the rule of sparse_step.
void parse_llama4(const ConfigReader& r, ModelSpec& spec) {
  MoeSpec& m = spec.moe;
  Llama4Spec& f = spec.llama4;
  const std::int64_t L = spec.num_hidden_layers;
  f.on = true;
  m.num_experts = r.optional_positive_int("num_local_experts", 16);
  m.top_k = r.optional_positive_int("num_experts_per_tok", 1);
  m.intermediate_size = spec.intermediate_size;
  spec.intermediate_size = r.optional_positive_int("intermediate_size_mlp", 16384);
  m.sparse_step = r.optional_positive_int("interleave_moe_layer_step", 1);
  ANVIL_CHECK_INPUT(m.top_k <= m.num_experts, r.label, ": key 'num_experts_per_tok' (", m.top_k,
                    ") exceeds the number of experts (", m.num_experts, ")");
  if (r.has("moe_layers")) {
    std::vector<std::int64_t> want;
    for (std::int64_t l = m.sparse_step - 1; l < L; l += m.sparse_step) want.push_back(l);
    ANVIL_CHECK_INPUT(int_list(r, "moe_layers") == want, r.label,
                      ": key 'moe_layers' must list every interleave_moe_layer_step-th layer "
                      "(anvil supports transformers' default layout only)");
  }
  // transformers' Llama 4 has no load-balancing loss in its forward (router_aux_loss_coef is
  // kept for the round trip only); its sigmoid scores are not renormalised.
  m.aux_loss = false;
  m.aux_loss_coef = r.has("router_aux_loss_coef") ? r.number_value(r.j["router_aux_loss_coef"], "router_aux_loss_coef")
                                                  : 0.001;
  m.norm_topk_prob = false;
  const std::int64_t interval = r.optional_positive_int("no_rope_layer_interval", 4);
  f.rope_layers.assign(static_cast<std::size_t>(L), true);
  const std::vector<std::int64_t> given = int_list(r, "no_rope_layers");
  ANVIL_CHECK_INPUT(given.empty() || static_cast<std::int64_t>(given.size()) == L, r.label,
                    ": key 'no_rope_layers' must have one entry per layer");
  for (std::int64_t l = 0; l < L; ++l) {  // empty: a NoPE layer every `interval` layers
    const auto i = static_cast<std::size_t>(l);
    f.rope_layers[i] = given.empty() ? (l + 1) % interval != 0 : given[i] != 0;
  }
  f.chunk = r.optional_positive_int("attention_chunk_size", 8192);
  if (r.j.contains("attention_chunk_size") && r.j["attention_chunk_size"].is_null()) f.chunk = 0;
  f.qk_norm = r.boolean("use_qk_norm", true);
  f.temperature_tuning = r.boolean("attn_temperature_tuning", true);
  f.floor_scale = r.positive_number("floor_scale", 8192.0);
  f.attn_scale = r.has("attn_scale") ? r.number_value(r.j["attn_scale"], "attn_scale") : 0.1;
  if (r.has("layer_types")) {  // transformers derives it from no_rope_layers and writes it back
    json want = json::array();
    for (const bool rope : f.rope_layers) want.push_back(rope && f.chunk > 0 ? "chunked_attention" : "full_attention");
    ANVIL_CHECK_INPUT(r.j["layer_types"] == want, r.label, ": key 'layer_types' must be ", want.dump(),
                      " (chunked attention on the RoPE layers; anvil supports transformers' default layout only)");
  }
  if (r.has("router_jitter_noise"))
    ANVIL_CHECK_INPUT(r.number_value(r.j["router_jitter_noise"], "router_jitter_noise") == 0.0, r.label,
                      ": key 'router_jitter_noise' must be 0: anvil's routing is deterministic");
}

// Llama4TextConfig's keys (intermediate_size is the experts' width there).
void llama4_to_json(const ModelSpec& s, json& j) {
  const Llama4Spec& f = s.llama4;
  j["intermediate_size"] = s.moe.intermediate_size;
  j["intermediate_size_mlp"] = s.intermediate_size;
  j["num_local_experts"] = s.moe.num_experts;
  j["interleave_moe_layer_step"] = s.moe.sparse_step;
  std::vector<int> rope;
  for (const bool r : f.rope_layers) rope.push_back(r ? 1 : 0);
  j["no_rope_layers"] = rope;
  j["attention_chunk_size"] = f.chunk > 0 ? json(f.chunk) : json(nullptr);
  j["use_qk_norm"] = f.qk_norm;
  j["attn_temperature_tuning"] = f.temperature_tuning;
  // Llama4TextConfig types floor_scale as an int.
  const auto floor = static_cast<std::int64_t>(f.floor_scale);
  j["floor_scale"] = static_cast<double>(floor) == f.floor_scale ? json(floor) : json(f.floor_scale);
  j["attn_scale"] = f.attn_scale;
  j["attention_bias"] = s.attention_bias;
  j["router_jitter_noise"] = 0.0;
}

bool model_type_known(const std::string& t) {
  for (const char* k : {"llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "mixtral", "llama4_text"})
    if (t == k) return true;
  return false;
}

}  // namespace

bool ModelSpec::layer_is_moe(std::int64_t layer) const {
  if (!is_moe()) return false;
  for (auto l : moe.mlp_only_layers)
    if (l == layer) return false;
  return (layer + 1) % moe.sparse_step == 0;
}

const char* ModelSpec::moe_module() const { return model_type == "mixtral" ? "block_sparse_moe" : "mlp"; }

namespace {

// head_dim: given, the family's default (Qwen3, Llama 4), or hidden_size / heads; checked
// against the heads and RoPE.
void parse_head_dim(const ConfigReader& r, const std::string& label, ModelSpec& spec) {
  if (r.has("head_dim")) {
    spec.head_dim = r.positive_int("head_dim");
  } else if (spec.model_type == "qwen3" || spec.model_type == "llama4_text") {
    spec.head_dim = 128;  // Qwen3Config's and Llama4TextConfig's default, whatever hidden_size / heads is
  } else {
    ANVIL_CHECK_INPUT(spec.hidden_size % spec.num_attention_heads == 0, label, ": key 'hidden_size' (",
                      spec.hidden_size, ") is not divisible by 'num_attention_heads' (", spec.num_attention_heads,
                      ") and no 'head_dim' is given");
    spec.head_dim = spec.hidden_size / spec.num_attention_heads;
  }
  ANVIL_CHECK_INPUT(spec.num_attention_heads % spec.num_key_value_heads == 0, label,
                    ": key 'num_key_value_heads' (", spec.num_key_value_heads,
                    ") must divide 'num_attention_heads' (", spec.num_attention_heads, ")");
  // RoPE rotates pairs of channels (rotate-half), so a head needs an even width.
  ANVIL_CHECK_INPUT(spec.head_dim % 2 == 0, label, ": key 'head_dim' (", spec.head_dim,
                    r.has("head_dim") ? "" : ", from hidden_size / num_attention_heads",
                    ") must be even for rotary embeddings");
}

// bos_token_id and eos_token_id (one or a list), inside the vocabulary.
void parse_token_ids(const ConfigReader& r, const json& j, const std::string& label, ModelSpec& spec) {
  if (r.has("bos_token_id")) {
    ANVIL_CHECK_INPUT(j["bos_token_id"].is_number_integer(), label, ": key 'bos_token_id' must be an integer");
    spec.bos_token_id = j["bos_token_id"].get<std::int64_t>();
  }
  if (r.has("eos_token_id")) {
    const json& e = j["eos_token_id"];
    if (e.is_number_integer()) {
      spec.eos_token_ids.push_back(e.get<std::int64_t>());
    } else {
      ANVIL_CHECK_INPUT(e.is_array(), label, ": key 'eos_token_id' must be an integer or a list of integers");
      for (const auto& x : e) {
        ANVIL_CHECK_INPUT(x.is_number_integer(), label, ": key 'eos_token_id' must list integers");
        spec.eos_token_ids.push_back(x.get<std::int64_t>());
      }
    }
  }
  for (auto id : spec.eos_token_ids)
    ANVIL_CHECK_INPUT(id >= 0 && id < spec.vocab_size, label, ": eos_token_id ", id, " is outside the vocabulary");
  ANVIL_CHECK_INPUT(spec.bos_token_id == -1 || (spec.bos_token_id >= 0 && spec.bos_token_id < spec.vocab_size),
                    label, ": key 'bos_token_id' (", spec.bos_token_id, ") is outside the vocabulary");
}

}  // namespace

ModelSpec model_spec_from_json(std::string_view json_text, const std::string& label) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    throw_user_error(label, ": not valid JSON: ", e.what());
  }
  ANVIL_CHECK_INPUT(j.is_object(), label, ": top level must be a JSON object");
  // Llama4ForConditionalGeneration: the text model's config is text_config (the vision
  // tower is not trained; its tensors are skipped at load).
  if (j.contains("model_type") && j["model_type"] == "llama4") {
    ANVIL_CHECK_INPUT(j.contains("text_config") && j["text_config"].is_object(), label,
                      ": a llama4 config without an object 'text_config'");
    json text = j["text_config"];
    text["model_type"] = "llama4_text";
    j = std::move(text);
  }
  const ConfigReader r{j, label};
  ModelSpec spec;
  if (r.has("model_type")) {
    ANVIL_CHECK_INPUT(j["model_type"].is_string(), label, ": key 'model_type' must be a string");
    spec.model_type = j["model_type"].get<std::string>();
  }
  ANVIL_CHECK_INPUT(model_type_known(spec.model_type), label, ": key 'model_type' is '", spec.model_type,
                    "'; anvil supports llama, mistral, qwen2, qwen3, qwen3_moe, mixtral and llama4_text");
  spec.hidden_size = r.positive_int("hidden_size");
  spec.intermediate_size = r.positive_int("intermediate_size");
  spec.num_hidden_layers = r.positive_int("num_hidden_layers");
  spec.num_attention_heads = r.positive_int("num_attention_heads");
  spec.num_key_value_heads = r.optional_positive_int("num_key_value_heads", spec.num_attention_heads);
  spec.vocab_size = r.positive_int("vocab_size");
  spec.max_position_embeddings = r.optional_positive_int("max_position_embeddings", 2048);
  parse_head_dim(r, label, spec);
  if (r.has("hidden_act")) {
    // The Llama MLP is SwiGLU; another activation would train a different model silently.
    const json& act = j["hidden_act"];
    ANVIL_CHECK_INPUT(act.is_string() && (act == "silu" || act == "swish"), label, ": key 'hidden_act' is ",
                      act.dump(), "; anvil implements the Llama MLP with silu (SwiGLU) only");
  }
  spec.rms_norm_eps = r.positive_number("rms_norm_eps", spec.model_type == "llama4_text" ? 1e-5 : 1e-6);
  spec.initializer_range = r.positive_number("initializer_range", 0.02);
  parse_rope(r, spec);
  spec.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  // Only Llama reads attention_bias / mlp_bias. transformers hard-codes the others
  // whatever config.json says: Qwen2 has q/k/v biases (none on o_proj or the MLP),
  // Mistral has none.
  // Qwen3 and Qwen3-MoE read attention_bias (all four projections) like Llama.
  const bool llama = spec.model_type == "llama";
  const bool qwen3 = spec.model_type == "qwen3" || spec.model_type == "qwen3_moe";
  const bool attention_bias = r.boolean("attention_bias", false);
  const bool mlp_bias = r.boolean("mlp_bias", false);
  spec.attention_bias = llama || qwen3 ? attention_bias : spec.model_type == "qwen2";
  spec.mlp_bias = llama && mlp_bias;
  spec.qk_norm = qwen3;
  if (spec.model_type == "qwen3_moe" || spec.model_type == "mixtral") parse_moe(r, spec);
  if (spec.model_type == "llama4_text") {
    spec.attention_bias = attention_bias;
    parse_llama4(r, spec);
  }
  parse_token_ids(r, j, label, spec);
  // transformers >= 4.56 writes "dtype"; older versions "torch_dtype".
  for (const char* key : {"torch_dtype", "dtype"}) {
    if (!r.has(key)) continue;
    ANVIL_CHECK_INPUT(j[key].is_string(), label, ": key '", key, "' must be a string such as \"bfloat16\"");
    spec.torch_dtype = j[key].get<std::string>();
    break;
  }
  parse_sliding_window(r, spec);
  return spec;
}

ModelSpec model_spec_from_file(const std::string& config_json_path) {
  return model_spec_from_json(io::read_text_file(config_json_path), config_json_path);
}

ModelSpec model_spec_from_dir(const std::string& model_dir) {
  return model_spec_from_file(model_dir + "/config.json");
}

std::string model_spec_to_json(const ModelSpec& s) {
  // A llama spec loads as LlamaForCausalLM. Mistral and Qwen2 keep their own class: a
  // Llama config cannot say "q/k/v biases but none on o_proj" (Qwen2) or carry a window.
  const char* architecture = s.model_type == "qwen2"       ? "Qwen2ForCausalLM"
                             : s.model_type == "mistral"   ? "MistralForCausalLM"
                             : s.model_type == "qwen3"     ? "Qwen3ForCausalLM"
                             : s.model_type == "qwen3_moe" ? "Qwen3MoeForCausalLM"
                             : s.model_type == "mixtral"   ? "MixtralForCausalLM"
                             : s.model_type == "llama4_text" ? "Llama4ForCausalLM"
                                                           : "LlamaForCausalLM";
  json j;
  j["architectures"] = {architecture};
  j["model_type"] = s.model_type;
  j["hidden_size"] = s.hidden_size;
  j["intermediate_size"] = s.intermediate_size;
  j["num_hidden_layers"] = s.num_hidden_layers;
  j["num_attention_heads"] = s.num_attention_heads;
  j["num_key_value_heads"] = s.num_key_value_heads;
  j["head_dim"] = s.head_dim;
  j["vocab_size"] = s.vocab_size;
  j["max_position_embeddings"] = s.max_position_embeddings;
  j["rms_norm_eps"] = s.rms_norm_eps;
  j["rope_theta"] = s.rope.theta;
  switch (s.rope.scaling) {
    case RopeScalingType::rope_none: j["rope_scaling"] = nullptr; break;
    case RopeScalingType::rope_linear: j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", s.rope.factor}}; break;
    case RopeScalingType::rope_llama3:
      j["rope_scaling"] = {{"rope_type", "llama3"},
                           {"factor", s.rope.factor},
                           {"low_freq_factor", s.rope.low_freq_factor},
                           {"high_freq_factor", s.rope.high_freq_factor},
                           {"original_max_position_embeddings", s.rope.original_max_position}};
      break;
  }
  j["tie_word_embeddings"] = s.tie_word_embeddings;
  const bool qwen3 = s.model_type == "qwen3" || s.model_type == "qwen3_moe";
  if (s.model_type == "llama" || qwen3) j["attention_bias"] = s.attention_bias;  // fixed by the others' classes
  if (s.model_type == "llama") j["mlp_bias"] = s.mlp_bias;
  const json window = s.sliding_window > 0 ? json(s.sliding_window) : json(nullptr);
  if (s.model_type == "mistral" || s.model_type == "mixtral") j["sliding_window"] = window;
  if (s.model_type == "qwen2" || qwen3) {
    j["use_sliding_window"] = s.sliding_window > 0;
    j["sliding_window"] = window;
    // the window on every layer, as anvil reads it (Qwen3-MoE's rule in transformers)
    if (s.sliding_window > 0 && s.model_type != "qwen3_moe") j["max_window_layers"] = 0;
  }
  if (s.model_type == "mixtral") {
    j["num_local_experts"] = s.moe.num_experts;
    j["router_jitter_noise"] = 0.0;
  }
  if (s.model_type == "qwen3_moe") {
    j["num_experts"] = s.moe.num_experts;
    j["moe_intermediate_size"] = s.moe.intermediate_size;
    j["norm_topk_prob"] = s.moe.norm_topk_prob;
    j["decoder_sparse_step"] = s.moe.sparse_step;
    j["mlp_only_layers"] = s.moe.mlp_only_layers;
  }
  if (s.is_moe()) {
    j["num_experts_per_tok"] = s.moe.top_k;
    j["output_router_logits"] = s.moe.aux_loss;
    j["router_aux_loss_coef"] = s.moe.aux_loss_coef;
  }
  if (s.is_llama4()) llama4_to_json(s, j);
  j["hidden_act"] = "silu";
  j["initializer_range"] = s.initializer_range;
  j["attention_dropout"] = 0.0;
  j["pretraining_tp"] = 1;
  j["use_cache"] = true;
  if (s.bos_token_id >= 0) j["bos_token_id"] = s.bos_token_id;
  if (s.eos_token_ids.size() == 1) j["eos_token_id"] = s.eos_token_ids[0];
  else if (!s.eos_token_ids.empty()) j["eos_token_id"] = s.eos_token_ids;
  j["torch_dtype"] = s.torch_dtype;
  return j.dump(2) + "\n";
}

void model_spec_check_supported(const ModelSpec& spec, const std::string& label) {
  ANVIL_CHECK_INPUT(!spec.attention_bias, label, ": attention biases (",
                    spec.model_type == "qwen2" ? "model_type qwen2 has q/k/v biases" : "key 'attention_bias'",
                    ") are not supported by anvil's training path yet");
  ANVIL_CHECK_INPUT(!spec.mlp_bias, label, ": key 'mlp_bias': MLP biases are not supported by anvil yet");
  ANVIL_CHECK_INPUT(spec.sliding_window <= 0 || spec.sliding_window >= spec.max_position_embeddings, label,
                    ": key 'sliding_window' (", spec.sliding_window,
                    ") is smaller than max_position_embeddings; sliding-window attention is not supported");
}

}  // namespace anvil::model
