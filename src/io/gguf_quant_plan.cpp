// llama.cpp's per-tensor type choice (llama-quant.cpp: tensor_allows_quantization,
// llama_tensor_get_type, tensor_type_fallback), restricted to the file types of
// GgufFileType and to llama.cpp's default options.
//
// For these file types the rules are:
//   not quantized   1-D tensors (trailing dims of 1 do not count), names not ending in
//                   "weight", "*_norm.weight", the MoE router "ffn_gate_inp.weight" (and a
//                   few tensors of other architectures): they stay F32
//   f32 f16 bf16    everything else takes that type
//   quantized       output.weight, and token_embd.weight when there is no output.weight
//                   (tied embeddings): Q6_K, or Q8_0 for q8_0 and when the row is not a
//                   multiple of the file type's block
//                   attn_v (counted i of n in file order): q4_k_m / q5_k_m Q6_K where
//                   use_more_bits(i, n); q4_k_s Q5_K for the first 4; 70B models Q5_K
//                   instead of Q4_K; 8 experts Q8_0
//                   attn_k: 8 experts Q8_0
//                   attn_output: 8 experts and q4_k_s / q4_k_m: Q5_K
//                   ffn_down of layer i: q4_k_m / q5_k_m Q6_K where use_more_bits(i, n_layer);
//                   q4_k_s Q5_K for i < n_layer / 8
//                   then a k-quant whose row is not a multiple of 256 falls back to the
//                   32-element type of about the same size (Q4_K -> Q5_0, Q5_K -> Q5_1,
//                   Q6_K -> Q8_0), and a row not a multiple of 32 to F16.
// use_more_bits(i, n): the first and last eighth of the layers, and every third in between
// (the layers where quantization error costs llama.cpp's measurements the most perplexity).
#include <algorithm>
#include <cstdio>
#include <numeric>

#include "core/error.h"
#include "io/gguf.h"
#include "io/gguf_quant.h"

namespace anvil::io {

namespace {

enum class TensorCategory { output, token_embd, attn_v, attn_k, attn_q, attn_output, ffn_up, ffn_gate, ffn_down, other };

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// llama.cpp tests these in this order; attn_qkv and attn_kv_b count as attn_v.
TensorCategory tensor_category(const std::string& name) {
  if (name == "output.weight") return TensorCategory::output;
  if (name == "token_embd.weight" || name == "per_layer_token_embd.weight") return TensorCategory::token_embd;
  if (contains(name, "attn_qkv.weight") || contains(name, "attn_kv_b.weight") || contains(name, "attn_v.weight"))
    return TensorCategory::attn_v;
  if (contains(name, "attn_k.weight")) return TensorCategory::attn_k;
  if (contains(name, "attn_q.weight")) return TensorCategory::attn_q;
  if (contains(name, "attn_output.weight")) return TensorCategory::attn_output;
  if (contains(name, "ffn_up")) return TensorCategory::ffn_up;
  if (contains(name, "ffn_gate")) return TensorCategory::ffn_gate;
  if (contains(name, "ffn_down")) return TensorCategory::ffn_down;
  return TensorCategory::other;
}

// ggml_n_dims: trailing dimensions of size 1 do not count.
int n_dims(const std::vector<std::int64_t>& dims) {
  int n = static_cast<int>(dims.size());
  while (n > 1 && dims[n - 1] == 1) --n;
  return n;
}

bool tensor_allows_quantization(const GgufPlanTensor& t) {
  if (n_dims(t.dims) < 2) return false;
  const std::string& name = t.name;
  if (!ends_with(name, "weight")) return false;
  // Norms, the MoE router, and small tensors of other architectures stay as they are.
  for (const char* keep : {"_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
                           "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "attn_rel_b.weight",
                           ".position_embd", ".rel_pos", ".patch_embd", ".patch_merger"})
    if (contains(name, keep)) return false;
  return name != "position_embd.weight" && name != "token_types.weight";
}

GgmlType default_type(GgufFileType ft) {
  switch (ft) {
    case GgufFileType::gguf_file_all_f32: return GgmlType::ggml_f32;
    case GgufFileType::gguf_file_f16: return GgmlType::ggml_f16;
    case GgufFileType::gguf_file_bf16: return GgmlType::ggml_bf16;
    case GgufFileType::gguf_file_q8_0: return GgmlType::ggml_q8_0;
    case GgufFileType::gguf_file_q4_0: return GgmlType::ggml_q4_0;
    case GgufFileType::gguf_file_q4_1: return GgmlType::ggml_q4_1;
    case GgufFileType::gguf_file_q5_0: return GgmlType::ggml_q5_0;
    case GgufFileType::gguf_file_q5_1: return GgmlType::ggml_q5_1;
    case GgufFileType::gguf_file_q4_k_s:
    case GgufFileType::gguf_file_q4_k_m: return GgmlType::ggml_q4_k;
    case GgufFileType::gguf_file_q5_k_s:
    case GgufFileType::gguf_file_q5_k_m: return GgmlType::ggml_q5_k;
    case GgufFileType::gguf_file_q6_k: return GgmlType::ggml_q6_k;
  }
  ANVIL_CHECK(false, "GGUF file type ", static_cast<std::uint32_t>(ft));
  return GgmlType::ggml_f32;
}

bool use_more_bits(int i_layer, int n_layer) {
  return i_layer < n_layer / 8 || i_layer >= 7 * n_layer / 8 || (i_layer - n_layer / 8) % 3 == 2;
}

std::int64_t block_elems(GgmlType t) { return static_cast<std::int64_t>(ggml_block(static_cast<std::uint32_t>(t)).elems); }

// The counters llama.cpp keeps while it walks the tensors (in its order: see gguf_quant_plan).
struct PlanState {
  const GgufPlanModel& model;
  GgufFileType ft;
  bool tied_embeddings = true;
  bool is_70b = false;
  int n_attn_v = 0;
  int i_attn_v = 0;
  int i_ffn_down = 0;
};

// The layer number of a "blk.N." name, -1 for the others.
int layer_of(const std::string& name) {
  int layer = -1;
  if (std::sscanf(name.c_str(), "blk.%d.", &layer) != 1) return -1;
  return layer;
}

// The layer of an ffn_down tensor: its position among them, or (with experts, whose
// tensors llama.cpp does not trust to be in layer order) the number in its name.
int ffn_down_layer(const PlanState& st, const std::string& name) {
  if (st.model.n_expert <= 1) return st.i_ffn_down;
  const int layer = layer_of(name);
  ANVIL_CHECK_INPUT(layer >= 0 && layer < st.model.n_layer,
                    "GGUF tensor '", name, "': no layer number in [0, ", st.model.n_layer, ") after 'blk.'");
  return layer;
}

// llama_tensor_get_type_impl for the file types of GgufFileType.
GgmlType mixture_type(PlanState& st, const GgufPlanTensor& t, GgmlType type) {
  using F = GgufFileType;
  const TensorCategory cat = tensor_category(t.name);
  const int n_layer = static_cast<int>(st.model.n_layer);
  const bool eight_experts = st.model.n_expert == 8;
  if (cat == TensorCategory::output || (st.tied_embeddings && cat == TensorCategory::token_embd)) {
    // The output projection (or the embedding table that doubles as it) gets more bits.
    if (t.dims[0] % block_elems(type) != 0) return GgmlType::ggml_q8_0;
    return type == GgmlType::ggml_q8_0 ? type : GgmlType::ggml_q6_k;
  }
  switch (cat) {
    case TensorCategory::attn_v: {
      const int i = st.i_attn_v++;
      if ((st.ft == F::gguf_file_q4_k_m || st.ft == F::gguf_file_q5_k_m) && use_more_bits(i, st.n_attn_v))
        type = GgmlType::ggml_q6_k;
      else if (st.ft == F::gguf_file_q4_k_s && i < 4)
        type = GgmlType::ggml_q5_k;
      if (st.is_70b && type == GgmlType::ggml_q4_k) type = GgmlType::ggml_q5_k;  // attn_v is 8x smaller there
      if (eight_experts) type = GgmlType::ggml_q8_0;
      return type;
    }
    case TensorCategory::attn_k: return eight_experts ? GgmlType::ggml_q8_0 : type;
    case TensorCategory::attn_output:
      if (eight_experts && (st.ft == F::gguf_file_q4_k_s || st.ft == F::gguf_file_q4_k_m)) return GgmlType::ggml_q5_k;
      return type;
    case TensorCategory::ffn_down: {
      const int layer = ffn_down_layer(st, t.name);
      ++st.i_ffn_down;
      if ((st.ft == F::gguf_file_q4_k_m || st.ft == F::gguf_file_q5_k_m) && use_more_bits(layer, n_layer))
        return GgmlType::ggml_q6_k;
      if (st.ft == F::gguf_file_q4_k_s && layer < n_layer / 8) return GgmlType::ggml_q5_k;
      return type;
    }
    default: return type;
  }
}

// tensor_type_fallback: a type whose block does not divide the row.
GgmlType fallback_type(GgmlType type, std::int64_t row_len) {
  if (row_len % block_elems(type) == 0) return type;
  switch (type) {
    case GgmlType::ggml_q4_k: type = GgmlType::ggml_q5_0; break;
    case GgmlType::ggml_q5_k: type = GgmlType::ggml_q5_1; break;
    case GgmlType::ggml_q6_k: type = GgmlType::ggml_q8_0; break;
    default: break;  // already a 32-element type
  }
  return row_len % block_elems(type) == 0 ? type : GgmlType::ggml_f16;
}

}  // namespace

std::vector<std::uint32_t> gguf_quant_plan(GgufFileType ft, const std::vector<GgufPlanTensor>& tensors,
                                           const GgufPlanModel& model) {
  // Architectures whose rules differ from llama's (falcon's ffn_down and attn_output
  // mixes) or whose size classes anvil does not know (llama.cpp's 70B rule).
  for (const char* other : {"falcon", "deci", "olmo", "jais2"})
    ANVIL_CHECK_INPUT(model.arch != other, "GGUF export: architecture '", model.arch,
                      "' has quantization rules anvil does not implement");
  ANVIL_CHECK_INPUT(model.n_layer > 0, "GGUF export: the model has no layers");
  PlanState st{model, ft};
  for (const auto& t : tensors) {
    ANVIL_CHECK(!t.dims.empty() && t.dims[0] > 0, "GGUF tensor '", t.name, "' has no row length");
    if (tensor_category(t.name) == TensorCategory::attn_v) ++st.n_attn_v;
    if (t.name == "output.weight") st.tied_embeddings = false;
  }
  // llama.cpp's 70B class (llama with grouped-query attention, or qwen2, at 80 layers).
  st.is_70b = model.n_layer == 80 && ((model.arch == "llama" && model.n_expert != 8 && model.n_head != model.n_head_kv) ||
                                      model.arch == "qwen2");
  // llama.cpp visits (and writes) the tensors sorted by layer number, the ones outside
  // the blocks first, then by name; the attn_v and ffn_down counters follow that order.
  std::vector<std::size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const int la = layer_of(tensors[a].name), lb = layer_of(tensors[b].name);
    return la != lb ? la < lb : tensors[a].name < tensors[b].name;
  });
  const GgmlType base = default_type(ft);
  const bool quantized = block_elems(base) > 1;
  std::vector<std::uint32_t> types(tensors.size(), static_cast<std::uint32_t>(GgmlType::ggml_f32));
  for (const std::size_t i : order) {
    const GgufPlanTensor& t = tensors[i];
    if (!tensor_allows_quantization(t)) continue;
    GgmlType type = base;
    if (quantized) type = fallback_type(mixture_type(st, t, base), t.dims[0]);
    types[i] = static_cast<std::uint32_t>(type);
  }
  return types;
}

}  // namespace anvil::io
