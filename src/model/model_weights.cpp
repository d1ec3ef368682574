// The tensors of a Llama-family model (HF names and shapes) and the check of a weights
// directory against a spec.
#include <filesystem>
#include <set>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/lora.h"
#include "model/model_spec.h"
#include "quant/quant_load.h"

namespace anvil::model {

std::vector<WeightInfo> model_weight_list(const ModelSpec& s) {
  const std::int64_t H = s.hidden_size, I = s.intermediate_size, V = s.vocab_size;
  const std::int64_t q_out = s.num_attention_heads * s.head_dim;
  const std::int64_t kv_out = s.num_key_value_heads * s.head_dim;
  std::vector<WeightInfo> w;
  w.push_back({"model.embed_tokens.weight", Shape{V, H}});
  for (std::int64_t l = 0; l < s.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    w.push_back({p + "input_layernorm.weight", Shape{H}});
    w.push_back({p + "self_attn.q_proj.weight", Shape{q_out, H}});
    if (s.attention_bias) w.push_back({p + "self_attn.q_proj.bias", Shape{q_out}});
    w.push_back({p + "self_attn.k_proj.weight", Shape{kv_out, H}});
    if (s.attention_bias) w.push_back({p + "self_attn.k_proj.bias", Shape{kv_out}});
    w.push_back({p + "self_attn.v_proj.weight", Shape{kv_out, H}});
    if (s.attention_bias) w.push_back({p + "self_attn.v_proj.bias", Shape{kv_out}});
    w.push_back({p + "self_attn.o_proj.weight", Shape{H, q_out}});
    // Qwen2 has q/k/v biases but none on o_proj; Llama's attention_bias covers all four.
    if (s.attention_bias && s.model_type != "qwen2") w.push_back({p + "self_attn.o_proj.bias", Shape{H}});
    if (s.qk_norm) {
      w.push_back({p + "self_attn.q_norm.weight", Shape{s.head_dim}});
      w.push_back({p + "self_attn.k_norm.weight", Shape{s.head_dim}});
    }
    w.push_back({p + "post_attention_layernorm.weight", Shape{H}});
    if (s.is_llama4()) {
      // feed_forward: a dense MLP, or the router, the experts fused into two 3-D tensors
      // (E, in, out), x·W layout, gate and up side by side, and the shared expert.
      const std::string ff = p + "feed_forward.";
      const std::int64_t E = s.moe.num_experts, Fe = s.moe.intermediate_size, F = s.mlp_rows(l);
      if (s.layer_is_moe(l)) {
        w.push_back({ff + "router.weight", Shape{E, H}});
        w.push_back({ff + "experts.gate_up_proj", Shape{E, H, 2 * Fe}});
        w.push_back({ff + "experts.down_proj", Shape{E, Fe, H}});
      }
      w.push_back({proj_module_path(s, l, Proj::proj_gate) + ".weight", Shape{F, H}});
      w.push_back({proj_module_path(s, l, Proj::proj_up) + ".weight", Shape{F, H}});
      w.push_back({proj_module_path(s, l, Proj::proj_down) + ".weight", Shape{H, F}});
      continue;
    }
    if (s.layer_is_moe(l)) {
      // The router, then each expert's gate, up and down (HF's per-expert names on disk).
      w.push_back({str_cat(p, s.moe_module(), ".gate.weight"), Shape{s.moe.num_experts, H}});
      for (std::int64_t e = 0; e < s.moe.num_experts; ++e)
        for (const Proj proj : {Proj::proj_expert_gate, Proj::proj_expert_up, Proj::proj_expert_down}) {
          const auto [out, in] = proj_shape(s, proj);
          w.push_back({proj_module_path(s, l, proj, e) + ".weight", Shape{out, in}});
        }
      continue;
    }
    w.push_back({p + "mlp.gate_proj.weight", Shape{I, H}});
    if (s.mlp_bias) w.push_back({p + "mlp.gate_proj.bias", Shape{I}});
    w.push_back({p + "mlp.up_proj.weight", Shape{I, H}});
    if (s.mlp_bias) w.push_back({p + "mlp.up_proj.bias", Shape{I}});
    w.push_back({p + "mlp.down_proj.weight", Shape{H, I}});
    if (s.mlp_bias) w.push_back({p + "mlp.down_proj.bias", Shape{H}});
  }
  w.push_back({"model.norm.weight", Shape{H}});
  if (!s.tie_word_embeddings) w.push_back({"lm_head.weight", Shape{V, H}});
  return w;
}

std::int64_t model_parameter_count(const ModelSpec& spec) {
  std::int64_t n = 0;
  for (const auto& w : model_weight_list(spec)) n += w.shape.numel();
  return n;
}

namespace {
// Errors name the directory for a sharded model, the file for a single one.
std::string weights_label(const io::SafetensorsModel& weights) {
  const auto& files = weights.files();
  if (files.empty()) return "model weights";
  if (files.size() == 1) return files[0].path();
  return std::filesystem::path(files[0].path()).parent_path().string();
}
}  // namespace

void model_check_weights(const ModelSpec& spec, const io::SafetensorsModel& weights) {
  // Every problem is collected, so a config.json that does not belong to these weights
  // shows as a list of mismatches rather than one at a time.
  ANVIL_CHECK(weights.find("language_model.model.embed_tokens.weight") == nullptr, weights_label(weights),
              ": a Llama4ForConditionalGeneration checkpoint opened without model_weights_open");
  std::vector<std::string> problems;
  std::set<std::string> expected;
  for (const auto& w : model_weight_list(spec)) {
    expected.insert(w.name);
    const auto* e = weights.find(w.name);
    if (e == nullptr) {
      problems.push_back(str_cat("tensor '", w.name, "' ", w.shape.str(), " is missing"));
    } else if (quant::bnb4_packed(weights, w.name)) {  // packed 4-bit codes: the shape is in its state
      const Shape logical = quant::bnb4_shape(weights, w.name);
      if (logical != w.shape)
        problems.push_back(str_cat(e->file->path(), ": tensor '", w.name, "' (bitsandbytes 4-bit) has shape ",
                                   logical.str(), ", expected ", w.shape.str()));
    } else if (e->info->shape != w.shape) {
      problems.push_back(str_cat(e->file->path(), ": tensor '", w.name, "' has shape ", e->info->shape.str(),
                                 ", expected ", w.shape.str()));
    } else if (!dtype_is_float(e->info->dtype)) {
      problems.push_back(str_cat(e->file->path(), ": tensor '", w.name, "' has dtype ",
                                 dtype_name(e->info->dtype), ", expected a floating-point type"));
    }
  }
  for (const auto& e : weights.outside())  // beside a multimodal checkpoint's language model
    if (!e.name.starts_with("vision_model.") && !e.name.starts_with("multi_modal_projector."))
      problems.push_back(str_cat(e.file->path(), ": unexpected tensor '", e.name, "' ", e.info->shape.str(),
                                 " (neither ", weights.prefix(), "* nor the vision tower)"));
  for (const auto& e : weights.tensors()) {
    const std::string name(e.name);
    if (expected.count(name)) continue;
    // Decision: a tied model that still ships lm_head.weight (some exporters write the
    // copy) is accepted and the tensor ignored, as transformers does when it re-ties.
    // Old checkpoints also carry the rotary inv_freq buffer, which is recomputed.
    if (spec.tie_word_embeddings && name == "lm_head.weight") continue;
    if (name.find("rotary_emb.inv_freq") != std::string::npos) continue;
    // The scales of a checkpoint quantized on disk; their shapes are checked at load.
    if (expected.count(quant::quant_side_tensor_owner(name))) continue;
    problems.push_back(str_cat(e.file->path(), ": unexpected tensor '", name, "' ", e.info->shape.str()));
  }
  if (problems.empty()) return;
  constexpr std::size_t kShown = 8;
  std::string msg = str_cat(weights_label(weights), ": the weights do not match config.json (",
                            problems.size(), problems.size() == 1 ? " problem):" : " problems):");
  for (std::size_t i = 0; i < problems.size() && i < kShown; ++i) msg += "\n  " + problems[i];
  if (problems.size() > kShown) msg += str_cat("\n  ... and ", problems.size() - kShown, " more");
  throw_user_error(msg);
}

io::SafetensorsModel model_weights_open(const std::string& dir) {
  io::SafetensorsModel weights = io::SafetensorsModel::open(dir);
  if (weights.find("language_model.model.embed_tokens.weight")) weights.keep_under("language_model.");
  return weights;
}

}  // namespace anvil::model
