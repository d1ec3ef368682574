// The merged model as an mlx-lm model directory. mlx_lm.load reads config.json, the weights
// of every model*.safetensors and the tokenizer files, so the layout is the hf export's; what
// differs is what mlx-lm expects inside:
//   - with --bits, the modules mlx_lm.convert -q quantizes are written as MLX's affine
//     quantization (mlx_quant.h): `weight` (packed uint32), `scales`, `biases` (the model
//     dtype), and config.json gets the "quantization" block (and its copy
//     "quantization_config", as mlx_lm's save_config writes it);
//   - a tied lm_head.weight is left out: mlx-lm's models drop it and use the embedding
//     (a quantized one's scales would be left over and refused by the loader).
//   - a mixture-of-experts model's routed experts are stacked per layer and projection, as
//     mlx-lm's sanitize stacks them on load (mlx_expert_stack): quantized experts can only be
//     read that way, since Qwen3-MoE's sanitize stacks weights but not scales and biases;
//   - Llama 4 text is mlx-lm's multimodal llama4 model (mlx_llama4_config): weights under
//     language_model., the fused experts split and stacked as feed_forward.experts.*.
// convert quantizes every module that has to_quantized (Linear, Embedding) whose weight's
// last dim divides by the group size; in the llama family those are exactly the 2-D
// `.weight` tensors (norms are 1-D). A layer skipped for its size records nothing in the
// config: mlx_lm.load quantizes only the layers whose `scales` it finds.
#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "export/export.h"
#include "export/export_config.h"
#include "export/export_hf.h"
#include "export/merged_source.h"
#include "export/mlx_quant.h"
#include "export/shard_writer.h"
#include "model/lora.h"
#include "model/model_spec.h"

namespace anvil::exporting {

namespace {

bool mlx_quantizes(const MergedSource::Tensor& t, int group_size) {
  return t.shape.rank() == 2 && t.name.ends_with(".weight") && t.cols % group_size == 0;
}

// x rounded to `dtype` in place: mlx_lm.convert casts the weights to the model dtype before
// it quantizes them.
void f32_round_to(float* x, std::int64_t n, DType dtype, std::vector<std::uint8_t>& scratch) {
  if (dtype == DType::dtype_f32) return;
  scratch.resize(static_cast<std::size_t>(n) * 2);
  f32_store_as(x, n, dtype, scratch.data());
  for (std::int64_t k = 0; k < n; ++k) {
    std::uint16_t h;
    std::memcpy(&h, scratch.data() + 2 * k, 2);
    x[k] = dtype == DType::dtype_bf16 ? bf16_to_f32(h) : f16_to_f32(h);
  }
}

// One weight of the mlx-lm directory: a merged tensor, or (a sparse layer's routed experts)
// the E merged tensors of one projection stacked along a first axis, as mlx-lm's SwitchGLU
// holds them: "model.layers.L.mlp.switch_mlp.gate_proj.weight" (E, F, C). Quantized, it is
// planned as three tensors at [first, first + 3): weight, scales, biases.
struct MlxTensor {
  std::string name;
  std::vector<std::size_t> sources;  // merged tensors, one per expert when stacked
  Shape shape;                       // (rows, cols), or (E, rows, cols)
  bool quantized = false;
  MlxQuant quant;
  std::size_t first = 0;
};

// "model.layers.3.mlp.experts.5.gate_proj.weight" → {"model.layers.3.mlp.switch_mlp.gate_proj.weight", 5};
// Mixtral's "block_sparse_moe.experts.5.w1" is switch_mlp.gate_proj (w3 up, w2 down), as
// mlx-lm's sanitize renames them.
std::optional<std::pair<std::string, std::int64_t>> mlx_expert_stack(const model::ModelSpec& spec,
                                                                     const std::string& name) {
  const auto w = model::expert_weight_from_name(spec, name);
  if (!w) return std::nullopt;
  const char* proj = w->proj == model::Proj::proj_expert_gate ? "gate_proj"
                     : w->proj == model::Proj::proj_expert_up ? "up_proj"
                                                              : "down_proj";
  if (spec.is_llama4())  // mlx-lm's llama4 names its SwitchGLU `experts`
    return std::pair{str_cat("language_model.model.layers.", w->layer, ".feed_forward.experts.", proj, ".weight"),
                     w->expert};
  return std::pair{str_cat("model.layers.", w->layer, ".", spec.moe_module(), ".switch_mlp.", proj, ".weight"),
                   w->expert};
}

// mlx-lm runs Llama 4 text as its multimodal llama4 model: the weights under
// language_model., config.json's fields in text_config. What that model fixes and the
// checkpoint could differ in is refused: one expert per token, RoPE on every layer but each
// fourth (its chunked layers), an lm_head of its own. (It L2-normalises q and k with eps 1e-6
// where transformers uses rms_norm_eps: a difference of about eps / mean(q²) in each.)
nlohmann::ordered_json mlx_llama4_config(const model::ModelSpec& spec, const nlohmann::ordered_json& base) {
  ANVIL_CHECK_INPUT(spec.moe.top_k == 1, "export: mlx-lm's llama4 routes each token to one expert, but ",
                    "num_experts_per_tok is ", spec.moe.top_k, "; export --format hf or gguf instead");
  for (std::int64_t l = 0; l < spec.num_hidden_layers; ++l)
    ANVIL_CHECK_INPUT(spec.layer_uses_rope(l) == ((l + 1) % 4 != 0), "export: mlx-lm's llama4 uses RoPE on every ",
                      "layer but each fourth, but no_rope_layers[", l, "] is ", spec.layer_uses_rope(l) ? 1 : 0,
                      "; export --format hf instead");
  ANVIL_CHECK_INPUT(!spec.tie_word_embeddings, "export: mlx-lm's llama4 has an lm_head of its own, but the model ",
                    "ties it to the embedding; export --format hf or gguf instead");
  nlohmann::ordered_json text = nlohmann::ordered_json::parse(model::model_spec_to_json(spec));
  nlohmann::ordered_json cfg = {{"architectures", {"Llama4ForConditionalGeneration"}}, {"model_type", "llama4"}};
  for (const char* key : {"torch_dtype", "bos_token_id", "eos_token_id", "pad_token_id"})
    if (base.contains(key)) text[key] = cfg[key] = base[key];
  cfg["text_config"] = std::move(text);
  return cfg;
}

// The tensor's name in the mlx-lm directory.
std::string mlx_name(const model::ModelSpec& spec, const std::string& name) {
  return spec.is_llama4() ? "language_model." + name : name;
}

struct QuantScratch {
  std::vector<float> f32, scales, biases;
  std::vector<std::uint32_t> packed;
  std::vector<std::uint8_t> rounded, scales_out, biases_out;
};

// The weight streams in row blocks, expert after expert; scales and biases (1/group_size of
// it) are held until it is done. A rank owning any part computes all, and appends the parts
// it owns.
void quantized_write(ShardedWriter& out, MergedSource& source, const MlxTensor& w, DType dtype, QuantScratch& s) {
  const MlxQuant q = w.quant;
  const std::int64_t cols = w.shape[w.shape.rank() - 1], rows = w.shape.numel() / cols;
  const std::int64_t groups = cols / q.group_size, words = mlx_quant_words(cols, q.bits);
  const std::size_t side_bytes = static_cast<std::size_t>(rows * groups) * dtype_size(dtype);
  s.scales_out.resize(side_bytes);
  s.biases_out.resize(side_bytes);
  std::int64_t done = 0;  // rows of the stack written
  for (const std::size_t i : w.sources) {
    const MergedSource::Tensor& t = source.tensors()[i];
    const std::int64_t rows_per_block = source.block_rows(i);
    const std::int64_t block = std::min(rows_per_block, t.rows);
    s.f32.resize(static_cast<std::size_t>(block * t.cols));
    s.packed.resize(static_cast<std::size_t>(block * words));
    s.scales.resize(static_cast<std::size_t>(block * groups));
    s.biases.resize(static_cast<std::size_t>(block * groups));
    for (std::int64_t row = 0; row < t.rows; row += rows_per_block) {
      const std::int64_t m = std::min(rows_per_block, t.rows - row);
      source.read_rows(i, row, m, s.f32.data());  // (m, cols)
      f32_round_to(s.f32.data(), m * t.cols, dtype, s.rounded);
      mlx_quantize_rows(s.f32.data(), m, t.cols, q, s.packed.data(), s.scales.data(), s.biases.data());
      if (out.tensor_owned(w.first)) out.append(s.packed.data(), static_cast<std::size_t>(m * words) * 4);
      const std::size_t at = static_cast<std::size_t>((done + row) * groups) * dtype_size(dtype);
      f32_store_as(s.scales.data(), m * groups, dtype, s.scales_out.data() + at);
      f32_store_as(s.biases.data(), m * groups, dtype, s.biases_out.data() + at);
    }
    done += t.rows;
    source.release(i);
  }
  if (out.tensor_owned(w.first + 1)) out.append(s.scales_out.data(), side_bytes);
  if (out.tensor_owned(w.first + 2)) out.append(s.biases_out.data(), side_bytes);
}

// The directory's weights in the base's order (a stack at its first expert's place), each
// with how mlx_lm.convert would quantize it: the default (bits, group_size) for every 2-D or
// stacked weight whose rows divide by the group size, and a model's own quant_predicate on
// top (Qwen3-MoE: its routers, mlp.gate, at 8 bits in groups of 64, recorded per layer in
// `per_layer`).
std::vector<MlxTensor> mlx_tensors(const MergedSource& source, const model::ModelSpec& spec, bool tied, bool quantize,
                                   MlxQuant q, nlohmann::ordered_json& per_layer) {
  std::vector<MlxTensor> out;
  std::map<std::string, std::size_t> stacks;
  for (std::size_t k = 0; k < source.tensors().size(); ++k) {
    const MergedSource::Tensor& t = source.tensors()[k];
    if (t.outside || (tied && t.name == "lm_head.weight")) continue;  // the text model only
    if (const auto stack = mlx_expert_stack(spec, t.name)) {
      const auto [at, fresh] = stacks.emplace(stack->first, out.size());
      const auto experts = spec.moe.num_experts;
      if (fresh) out.push_back({stack->first, std::vector<std::size_t>(experts, SIZE_MAX),
                                Shape{experts, t.rows, t.cols}, quantize && t.cols % q.group_size == 0, q});
      MlxTensor& w = out[at->second];
      ANVIL_CHECK_INPUT(stack->second >= 0 && stack->second < experts && w.sources[stack->second] == SIZE_MAX &&
                            w.shape[1] == t.rows && w.shape[2] == t.cols,
                        "export: ", t.name, " does not fit ", w.name, " (", experts, " experts of ", w.shape[1], " x ",
                        w.shape[2], ")");
      w.sources[stack->second] = k;
      continue;
    }
    MlxTensor w{mlx_name(spec, t.name), {k}, t.shape, quantize && mlx_quantizes(t, q.group_size), q};
    const std::string module = t.name.substr(0, t.name.size() - std::string(".weight").size());
    if (w.quantized && spec.model_type == "qwen3_moe" && module.ends_with(".mlp.gate")) {
      w.quant = MlxQuant{8, 64};
      ANVIL_CHECK_INPUT(t.cols % 64 == 0, "export: ", t.name, " has ", t.cols, " columns; mlx-lm quantizes Qwen3-MoE's ",
                        "routers in groups of 64");
      per_layer[module] = {{"group_size", 64}, {"bits", 8}};
    }
    out.push_back(std::move(w));
  }
  for (const MlxTensor& w : out)
    for (const std::size_t k : w.sources)
      ANVIL_CHECK_INPUT(k != SIZE_MAX, "export: the base has not every expert of ", w.name);
  return out;
}

}  // namespace

ExportSummary export_mlx_merged(const ExportAdapter& adapter, const std::string& dir, const ExportOptions& options,
                                ShardRanks ranks) {
  const DType dtype = export_dtype_resolve(options, adapter.base_dir);
  const bool quantize = options.mlx_bits != 0;
  const MlxQuant q{options.mlx_bits, options.mlx_group_size};
  if (quantize)
    ANVIL_CHECK_INPUT(mlx_quant_supported(q.bits, q.group_size), "export: --bits must be 4 or 8 and --group-size ",
                      "32, 64 or 128, got ", q.bits, " and ", q.group_size);
  nlohmann::ordered_json cfg = export_config_read(adapter.base_dir, dtype);
  const auto tie = cfg.find("tie_word_embeddings");
  const bool tied = tie != cfg.end() && tie->is_boolean() && tie->get<bool>();

  if (adapter.spec.is_llama4()) cfg = mlx_llama4_config(adapter.spec, cfg);

  MergedSource source(adapter, MergedSource::FusedExperts::split);
  // Every rank plans all tensors, so that the shards come out as one process would write them.
  nlohmann::ordered_json per_layer = nlohmann::ordered_json::object();
  std::vector<MlxTensor> weights = mlx_tensors(source, adapter.spec, tied, quantize, q, per_layer);
  std::vector<ShardTensor> planned;
  for (MlxTensor& w : weights) {
    w.first = planned.size();
    if (!w.quantized) {
      planned.push_back({w.name, dtype, w.shape});
      continue;
    }
    const std::string module = w.name.substr(0, w.name.size() - std::string(".weight").size());
    Shape words = w.shape, side = w.shape;  // the last dim packed, or one per group
    const int last = w.shape.rank() - 1;
    words[last] = mlx_quant_words(w.shape[last], w.quant.bits);
    side[last] = w.shape[last] / w.quant.group_size;
    planned.push_back({w.name, DType::dtype_u32, words});
    planned.push_back({module + ".scales", dtype, side});
    planned.push_back({module + ".biases", dtype, side});
  }
  ShardedWriter out(dir, planned, options.max_shard_bytes, ranks);
  std::vector<float> f32;
  std::vector<std::uint8_t> cast;
  QuantScratch scratch;
  ExportSummary summary;
  for (const MlxTensor& w : weights) {
    const std::size_t parts = w.quantized ? 3 : 1;
    bool any = false;
    for (std::size_t p = 0; p < parts; ++p) {
      if (!out.tensor_owned(w.first + p)) continue;
      any = true;
      ++summary.tensors;
    }
    if (!any) continue;
    // Counted once over the ranks: by the owner of the first part.
    if (out.tensor_owned(w.first))
      for (const std::size_t k : w.sources) summary.merged += static_cast<std::size_t>(source.tensors()[k].adapters);
    if (w.quantized)
      quantized_write(out, source, w, dtype, scratch);
    else
      for (const std::size_t k : w.sources) merged_tensor_write(out, source, k, dtype, f32, cast);
  }
  if (quantize) {
    // mlx_lm.convert's block, with the per-layer settings a model's quant_predicate made; its
    // save_config repeats it as quantization_config.
    nlohmann::ordered_json block = {{"group_size", q.group_size}, {"bits", q.bits}, {"mode", "affine"}};
    for (auto& [module, params] : per_layer.items()) block[module] = params;
    cfg["quantization"] = block;
    cfg["quantization_config"] = block;
  }
  return merged_dir_finish(out, source, summary, cfg, adapter.base_dir, dir, dtype, ranks);
}

}  // namespace anvil::exporting
