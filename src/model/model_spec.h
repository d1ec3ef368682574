// ModelSpec: the shape of a Llama-family model, read from a Hugging Face config.json.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"

namespace anvil::io {
class SafetensorsModel;
}

namespace anvil::model {

enum class RopeScalingType { rope_none, rope_linear, rope_llama3 };

struct RopeSpec {
  double theta = 10000.0;
  RopeScalingType scaling = RopeScalingType::rope_none;
  double factor = 1.0;                      // linear and llama3
  double low_freq_factor = 1.0;             // llama3
  double high_freq_factor = 4.0;            // llama3
  std::int64_t original_max_position = 8192;  // llama3: original_max_position_embeddings
};

// Mixture-of-experts MLPs (Qwen3-MoE, Mixtral): a router picks top_k of num_experts SwiGLU
// experts per token, softmax over all experts first, the top-k weights renormalised to sum
// to 1 when norm_topk_prob. num_experts 0: a dense model.
struct MoeSpec {
  std::int64_t num_experts = 0;
  std::int64_t top_k = 0;              // num_experts_per_tok
  std::int64_t intermediate_size = 0;  // one expert's (Qwen3-MoE: moe_intermediate_size)
  bool norm_topk_prob = true;
  // Qwen3-MoE: layer l is sparse when l is not in mlp_only_layers and (l + 1) % sparse_step
  // == 0; the others have the dense MLP of ModelSpec::intermediate_size.
  std::int64_t sparse_step = 1;
  std::vector<std::int64_t> mlp_only_layers;
  // transformers adds aux_loss_coef · the load-balancing loss to the loss only when
  // output_router_logits is set in config.json.
  bool aux_loss = false;
  double aux_loss_coef = 0.0;
  // The routed experts one rank holds under expert parallelism (tp_local_spec of an ep
  // shard): [expert_first, expert_first + experts_held()). The model's own spec holds all.
  std::int64_t expert_first = 0;
  std::int64_t expert_count = -1;  // -1: every one of num_experts
  std::int64_t experts_held() const { return expert_count < 0 ? num_experts : expert_count; }
};

// Llama 4 text (model_type llama4_text): iRoPE attention and a sigmoid-routed MoE with a
// shared expert. RoPE layers rotate adjacent channel pairs, attend within chunks of
// `chunk` positions and (use_qk_norm) L2-normalise each head of q and k after the rotation;
// NoPE layers attend causally over the whole document and (temperature_tuning) scale q by
// 1 + attn_scale · log1p(floor((pos + 1) / floor_scale)). A sparse layer's router picks the
// top_k experts by logit and scales each expert's *input* by sigmoid(logit); the shared
// expert (a dense SwiGLU of the experts' width, Proj gate/up/down) is always added.
struct Llama4Spec {
  bool on = false;
  std::vector<bool> rope_layers;  // per layer: config.json's no_rope_layers (1: uses RoPE)
  std::int64_t chunk = 0;         // attention_chunk_size on RoPE layers; 0: full causal
  bool qk_norm = false;           // use_qk_norm (weightless, RoPE layers only)
  bool temperature_tuning = false;
  double floor_scale = 8192.0;
  double attn_scale = 0.1;
};

struct ModelSpec {
  std::string model_type = "llama";  // "llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "mixtral", "llama4_text"
  std::int64_t hidden_size = 0;
  std::int64_t intermediate_size = 0;
  std::int64_t num_hidden_layers = 0;
  std::int64_t num_attention_heads = 0;
  std::int64_t num_key_value_heads = 0;
  std::int64_t head_dim = 0;  // hidden_size / num_attention_heads unless config.json says
  std::int64_t vocab_size = 0;
  std::int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-5;
  double initializer_range = 0.02;  // std of the random init (anvil init-model, HF init)
  RopeSpec rope;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v/o biases (Qwen2 has q/k/v biases implicitly)
  bool mlp_bias = false;
  std::int64_t sliding_window = 0;  // Mistral/Qwen2: 0 or >= max positions means full attention
  std::int64_t bos_token_id = -1;  // -1: not given
  std::vector<std::int64_t> eos_token_ids;
  std::string torch_dtype = "float32";
  // Qwen3 and Qwen3-MoE: an RMSNorm (weights q_norm, k_norm of head_dim) over each head of q
  // and k, before RoPE.
  bool qk_norm = false;
  MoeSpec moe;
  Llama4Spec llama4;  // Llama 4's dense layers use intermediate_size (intermediate_size_mlp)

  bool is_moe() const { return moe.num_experts > 0; }
  bool is_llama4() const { return llama4.on; }
  bool layer_uses_rope(std::int64_t layer) const {
    return !llama4.on || llama4.rope_layers[static_cast<std::size_t>(layer)];
  }
  // Rows of block `layer`'s gate/up/down: the dense MLP's, or Llama 4's shared expert's.
  std::int64_t mlp_rows(std::int64_t layer) const {
    return llama4.on && layer_is_moe(layer) ? moe.intermediate_size : intermediate_size;
  }
  // Whether block `layer` runs the gate/up/down projections (a dense MLP or a shared expert).
  bool layer_has_mlp(std::int64_t layer) const { return llama4.on || !layer_is_moe(layer); }
  // Whether block `layer` has routed experts instead of the dense MLP.
  bool layer_is_moe(std::int64_t layer) const;
  // The HF module that holds a sparse layer's router and experts: "mlp" (Qwen3-MoE) or
  // "block_sparse_moe" (Mixtral), and an expert's three projections' names there.
  const char* moe_module() const;
};

// Parses config.json text; `label` (the file path) names the source in errors. Every
// problem is a user error naming the key: missing keys, wrong types, inconsistent sizes.
// model_type: llama (also when absent), mistral, qwen2, qwen3, qwen3_moe or mixtral; biases,
// head_dim defaults and sliding windows follow what transformers does for each type.
// Anything but a silu MLP is rejected.
ModelSpec model_spec_from_json(std::string_view json_text, const std::string& label);
ModelSpec model_spec_from_file(const std::string& config_json_path);
// DIR/config.json
ModelSpec model_spec_from_dir(const std::string& model_dir);
// An HF config.json that transformers loads as this spec: LlamaForCausalLM for llama
// (MistralForCausalLM / Qwen2ForCausalLM keep those types' fixed biases and windows).
std::string model_spec_to_json(const ModelSpec& spec);

// Throws a user error when the spec uses something anvil cannot train yet (for example
// attention or MLP biases), naming the key.
void model_spec_check_supported(const ModelSpec& spec, const std::string& label);

struct WeightInfo {
  std::string name;  // Hugging Face name, e.g. "model.layers.0.self_attn.q_proj.weight"
  Shape shape;       // (out_features, in_features) for linear layers
};
// Every tensor of the model in HF naming and order (embedding, layers, final norm, head).
std::vector<WeightInfo> model_weight_list(const ModelSpec& spec);
std::int64_t model_parameter_count(const ModelSpec& spec);

// Checks that `weights` holds exactly the tensors of `spec` with the right shapes and a
// floating-point dtype. One user error lists the problems (the first few): each names the
// tensor and the expected and found shape, or says it is missing or unexpected.
// With tied embeddings a present lm_head.weight is tolerated and ignored (HF tied models
// normally omit it, but some exporters write the copy and transformers re-ties it).
// A Llama4ForConditionalGeneration checkpoint's vision_model.* and multi_modal_projector.*
// tensors (weights.outside() of model_weights_open) are allowed beside the text model.
void model_check_weights(const ModelSpec& spec, const io::SafetensorsModel& weights);

// The model directory's weights as anvil's text model sees them: a multimodal Llama 4
// checkpoint (language_model.* beside the vision tower) narrowed to its language model
// (SafetensorsModel::keep_under), any other directory as it is.
io::SafetensorsModel model_weights_open(const std::string& dir);

// Named shapes for tests, benchmarks and plans: tiny, tiny-tied, smollm2-135m, llama3-8b,
// llama3-70b, llama3-405b, and the mixture-of-experts qwen3-30b-a3b and mixtral-8x7b.
std::optional<ModelSpec> model_preset(std::string_view name);
std::vector<std::string> model_preset_names();

}  // namespace anvil::model
