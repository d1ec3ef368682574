// The merged model's tensors, read in row blocks (export/merged_source.h).
#include "export/merged_source.h"

#include <cstring>
#include <vector>

#include "core/error.h"
#include "io/files.h"
#include "model/model_spec.h"
#include "model/tp_shard.h"
#include "quant/quant_load.h"

namespace anvil::exporting {

namespace {

// The linear weights a quantized run held quantized, each with whether it is split by
// columns over TP (row-parallel) rather than by rows.
std::map<std::string, bool, std::less<>> quantized_weights(const ExportAdapter& a) {
  std::map<std::string, bool, std::less<>> out;
  if (a.quant.kind == quant::QuantKind::quant_none) return out;
  for (std::int64_t l = 0; l < a.spec.num_hidden_layers; ++l)
    for (int i = 0; i < model::kProjCount; ++i) {
      const auto proj = static_cast<model::Proj>(i);
      const bool expert = model::proj_is_expert(proj), mlp = proj >= model::Proj::proj_gate;
      // the MLPs this layer has (Llama 4's sparse layers also the shared expert's gate/up/down)
      if (mlp && (expert ? !a.spec.layer_is_moe(l) : !a.spec.layer_has_mlp(l))) continue;
      for (std::int64_t e = 0; e < (expert ? a.spec.moe.num_experts : 1); ++e) {
        const std::string name = model::proj_module_path(a.spec, l, proj, expert ? e : -1) + ".weight";
        if (a.quant.applies(name)) out.emplace(name, model::proj_row_parallel(proj));
      }
    }
  if (!a.spec.tie_word_embeddings && a.quant.applies("lm_head.weight")) out.emplace("lm_head.weight", false);
  return out;
}

// Where an expert's projection sits in its fused x·W tensor, one expert's block (gate_up
// (C, 2fe), down (fe, C)): nn.Linear W[o, i] ((rows, cols) = (out, in)) is element
// i · stride + col0 + o of the block; gate in gate_up's first fe columns, up after.
struct FusedPlace {
  std::int64_t rows, cols, stride, col0;
  std::int64_t at(std::int64_t o, std::int64_t i) const { return i * stride + col0 + o; }
};

// The projections a fused tensor holds: down_proj's, or gate_up_proj's gate then up.
std::vector<model::Proj> fused_projs(bool down) {
  if (down) return {model::Proj::proj_expert_down};
  return {model::Proj::proj_expert_gate, model::Proj::proj_expert_up};
}

FusedPlace fused_place(const model::ModelSpec& spec, model::Proj p) {
  const std::int64_t C = spec.hidden_size, Fe = spec.moe.intermediate_size;
  if (p == model::Proj::proj_expert_down) return {C, Fe, C, 0};
  return {Fe, C, 2 * Fe, p == model::Proj::proj_expert_up ? Fe : 0};
}

}  // namespace

void tensor_load_f32(const TensorView& src, std::int64_t begin, std::int64_t n, float* out) {
  const auto* bytes = static_cast<const std::uint8_t*>(src.data);
  switch (src.dtype) {
    case DType::dtype_f32:
      std::memcpy(out, bytes + 4 * begin, static_cast<std::size_t>(n) * 4);
      return;
    case DType::dtype_bf16:
    case DType::dtype_f16:
      for (std::int64_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, bytes + 2 * (begin + i), 2);
        out[i] = src.dtype == DType::dtype_bf16 ? bf16_to_f32(h) : f16_to_f32(h);
      }
      return;
    default:
      for (std::int64_t i = 0; i < n; ++i)
        out[i] = static_cast<float>(dtype_load_as_f64(src.data, src.dtype, static_cast<std::size_t>(begin + i)));
  }
}

MergedSource::MergedSource(const ExportAdapter& adapter, FusedExperts experts)
    : adapter_(adapter),
      weights_(model::model_weights_open(adapter.base_dir)),
      layout_(adapter.spec, adapter.lora),
      quantized_(quantized_weights(adapter)),
      be_(backend::make_cpu_backend()) {
  ANVIL_CHECK(adapter.params != nullptr, "export: no adapter parameters");
  model::model_check_weights(adapter.spec, weights_);
  std::map<std::string, const model::LoraSlot*, std::less<>> slot_by_weight;
  for (const auto& s : layout_.slots()) slot_by_weight.emplace(s.module + ".weight", &s);
  const std::string& prefix = weights_.prefix();
  for (const auto& file : weights_.files())
    for (const auto& t : file.tensors()) {
      if (quant::quant_side_tensor(t.name)) continue;
      Tensor m;
      m.stored_name = t.name;
      m.outside = !t.name.starts_with(prefix);
      m.name = m.outside ? t.name : t.name.substr(prefix.size());
      m.shape = quant::bnb4_packed(weights_, m.name) ? quant::bnb4_shape(weights_, m.name) : t.shape;
      const std::int64_t numel = m.shape.numel();
      m.rows = m.shape.rank() >= 2 ? m.shape[0] : 1;
      m.cols = m.rows == 0 ? 0 : numel / m.rows;
      const auto it = m.outside ? slot_by_weight.end() : slot_by_weight.find(m.name);
      if (it != slot_by_weight.end()) m.slot = it->second;
      for (std::int64_t l = 0; !m.outside && adapter.spec.is_llama4() && l < adapter.spec.num_hidden_layers; ++l) {
        const std::string experts = str_cat("model.layers.", l, ".feed_forward.experts.");
        if (m.name == experts + "gate_up_proj" || m.name == experts + "down_proj") {
          m.fused_layer = l;
          m.fused_down = m.name == experts + "down_proj";
        }
      }
      if (m.fused_layer >= 0 && experts == FusedExperts::split) {
        split_push(m.fused_layer, m.fused_down, m.name, file.view(t));
        continue;
      }
      m.adapters = m.slot != nullptr ? 1 : 0;
      for (const auto& s : layout_.slots()) {
        const bool down = s.proj == model::Proj::proj_expert_down;
        if (m.fused_layer == s.layer && model::proj_is_expert(s.proj) && down == m.fused_down) ++m.adapters;
      }
      tensors_.push_back(std::move(m));
      views_.push_back(file.view(t));
    }
}

void MergedSource::split_push(std::int64_t layer, bool down, const std::string& name, const TensorView& fused) {
  fused_views_.push_back(fused);
  fused_names_.push_back(name);
  for (const model::Proj proj : fused_projs(down))
    for (std::int64_t e = 0; e < adapter_.spec.moe.num_experts; ++e) {
      const FusedPlace f = fused_place(adapter_.spec, proj);
      Tensor m;
      m.name = model::proj_module_path(adapter_.spec, layer, proj, e) + ".weight";
      m.stored_name = weights_.prefix() + m.name;
      m.shape = Shape{f.rows, f.cols};
      m.rows = m.shape[0];
      m.cols = m.shape[1];
      m.slot = layout_.find(layer, proj, e);
      m.adapters = m.slot != nullptr ? 1 : 0;
      m.split_from = fused_views_.size() - 1;
      m.split_expert = e;
      m.split_proj = proj;
      tensors_.push_back(std::move(m));
      views_.push_back(fused);
    }
}

void MergedSource::split_load(std::size_t i, float* out) {
  const Tensor& t = tensors_[i];
  const TensorView& fused = fused_views_[t.split_from];
  const FusedPlace f = fused_place(adapter_.spec, t.split_proj);
  const std::int64_t block = t.split_expert * f.cols * f.stride;  // the expert's (in, stride) block
  std::vector<float> row(static_cast<std::size_t>(t.rows));
  for (std::int64_t k = 0; k < f.cols; ++k) {  // input k's stored row: column k of the result
    tensor_load_f32(fused, block + f.at(0, k), t.rows, row.data());
    for (std::int64_t r = 0; r < t.rows; ++r) out[r * t.cols + k] = row[static_cast<std::size_t>(r)];
  }
  if (fused.dtype != DType::dtype_fp8_e4m3) return;
  // fbgemm_fp8 on disk: one scale per output row
  const std::vector<float> scale =
      quant::fp8_fused_scales(weights_, fused_names_[t.split_from], t.split_expert, f.col0, t.rows);
  for (std::int64_t r = 0; r < t.rows; ++r)
    for (std::int64_t k = 0; k < t.cols; ++k) out[r * t.cols + k] *= scale[static_cast<std::size_t>(r)];
}

const TensorView* MergedSource::stored(std::size_t i) {
  const bool adapted = tensors_[i].slot != nullptr || tensors_[i].fused_layer >= 0 || tensors_[i].split_from != SIZE_MAX;
  if (adapted || quantized_.count(tensors_[i].name) != 0) return nullptr;
  return &views_[i];
}

const TensorView& MergedSource::base(std::size_t i) {
  const auto q = quantized_.find(tensors_[i].name);
  const bool split = tensors_[i].split_from != SIZE_MAX;
  if (q == quantized_.end() && !split) return views_[i];
  if (dequantized_index_ == i) return dequantized_view_;
  // A base tensor as the quantized run saw it: one quantized on disk (FP8 with its scales,
  // NF4 packed) is its dequantized self; one quantized at load, the values each TP rank's
  // slice took.
  const std::string& name = tensors_[i].name;
  const std::int64_t rows = tensors_[i].rows, cols = tensors_[i].cols;
  dequantized_.resize(static_cast<std::size_t>(rows * cols));
  const TensorView& src = views_[i];
  if (split) {
    // A fused expert's projection: FP8 on disk dequantized, or quantized at load (if it
    // was) as the run's ranks held it.
    split_load(i, dequantized_.data());
    if (q != quantized_.end() && fused_views_[tensors_[i].split_from].dtype != DType::dtype_fp8_e4m3)
      quant::quant_roundtrip_sliced(dequantized_.data(), rows, cols, adapter_.quant.kind, adapter_.quant_tp, q->second);
  } else if (src.dtype == DType::dtype_fp8_e4m3 || quant::bnb4_packed(weights_, name)) {
    quant::QuantStore store;
    const TensorView q8 = src.dtype == DType::dtype_fp8_e4m3 ? quant::fp8_load_slice(weights_, name, 0, rows, 0, cols, store)
                                                             : quant::nf4_load(weights_, name, store);
    quant::quant_dequantize(q8, 0, rows * cols, dequantized_.data());
  } else {
    tensor_load_f32(src, 0, rows * cols, dequantized_.data());
    quant::quant_roundtrip_sliced(dequantized_.data(), rows, cols, adapter_.quant.kind, adapter_.quant_tp, q->second);
  }
  dequantized_index_ = i;
  dequantized_view_ = TensorView{dequantized_.data(), DType::dtype_f32, tensors_[i].shape};
  return dequantized_view_;
}

void MergedSource::read_rows(std::size_t i, std::int64_t row0, std::int64_t n, float* out) {
  const Tensor& t = tensors_[i];
  ANVIL_CHECK(row0 >= 0 && n >= 0 && row0 + n <= t.rows, "export: rows [", row0, ", ", row0 + n, ") of ", t.name,
              " with ", t.rows, " rows");
  const TensorView& src = base(i);
  tensor_load_f32(src, row0 * t.cols, n * t.cols, out);
  if (src.data == views_[i].data) {  // rows are read once, in order: drop them from memory
    const std::size_t row_bytes = static_cast<std::size_t>(t.cols) * dtype_size(src.dtype);
    io::mapping_pages_release(static_cast<const std::uint8_t*>(src.data) + static_cast<std::size_t>(row0) * row_bytes,
                              static_cast<std::size_t>(n) * row_bytes);
  }
  if (t.fused_layer >= 0) {
    if (src.dtype == DType::dtype_fp8_e4m3) fp8_fused_scale(t, row0, n, out);  // FP8 on disk
    else dequantize_fused_experts(t, row0, n, out);                             // quantized at load
    fold_fused_experts(t, row0, n, out);
  }
  if (t.slot == nullptr) return;
  // (n, in) += scale · B[row0 : row0 + n] (n, r) · A (r, in)
  const model::LoraSlot& s = *t.slot;
  const std::int64_t r = adapter_.lora.rank;
  be_->gemm(false, false, n, s.in, r, adapter_.lora.scale(), adapter_.params + s.b_offset + row0 * r, r,
            adapter_.params + s.a_offset, s.in, 1.0f, out, s.in);
}

void MergedSource::dequantize_fused_experts(const Tensor& t, std::int64_t row0, std::int64_t n, float* out) {
  if (adapter_.quant.kind == quant::QuantKind::quant_none) return;
  std::vector<float> w;  // one expert projection in nn.Linear form (out, in)
  for (std::int64_t e = row0; e < row0 + n; ++e) {
    float* fused = out + (e - row0) * t.cols;  // gate_up (C, 2fe) or down (fe, C), x·W layout
    for (const model::Proj proj : fused_projs(t.fused_down)) {
      if (!adapter_.quant.applies(model::proj_module_path(adapter_.spec, t.fused_layer, proj, e) + ".weight")) continue;
      const FusedPlace f = fused_place(adapter_.spec, proj);
      w.resize(static_cast<std::size_t>(f.rows * f.cols));
      for (std::int64_t o = 0; o < f.rows; ++o)
        for (std::int64_t i = 0; i < f.cols; ++i) w[static_cast<std::size_t>(o * f.cols + i)] = fused[f.at(o, i)];
      quant::quant_roundtrip_sliced(w.data(), f.rows, f.cols, adapter_.quant.kind, adapter_.quant_tp,
                                    model::proj_row_parallel(proj));
      for (std::int64_t o = 0; o < f.rows; ++o)
        for (std::int64_t i = 0; i < f.cols; ++i) fused[f.at(o, i)] = w[static_cast<std::size_t>(o * f.cols + i)];
    }
  }
}

void MergedSource::fp8_fused_scale(const Tensor& t, std::int64_t row0, std::int64_t n, float* out) {
  const std::int64_t total = t.shape[2];  // outputs, the last dimension: each has its scale
  for (std::int64_t e = row0; e < row0 + n; ++e) {
    const std::vector<float> scale = quant::fp8_fused_scales(weights_, t.name, e, 0, total);
    float* w = out + (e - row0) * t.cols;
    for (std::int64_t k = 0; k < t.cols; ++k) w[k] *= scale[static_cast<std::size_t>(k % total)];
  }
}

void MergedSource::fold_fused_experts(const Tensor& t, std::int64_t row0, std::int64_t n, float* out) {
  const std::int64_t r = adapter_.lora.rank;
  std::vector<float> delta;  // (out, in) of one expert projection: scale · B·A
  for (std::int64_t e = row0; e < row0 + n; ++e) {
    float* w = out + (e - row0) * t.cols;  // gate_up (C, 2fe) or down (fe, C), x·W layout
    for (const model::Proj proj : fused_projs(t.fused_down)) {
      const model::LoraSlot* s = layout_.find(t.fused_layer, proj, e);
      if (s == nullptr) continue;
      delta.assign(static_cast<std::size_t>(s->out * s->in), 0.0f);
      be_->gemm(false, false, s->out, s->in, r, adapter_.lora.scale(), adapter_.params + s->b_offset, r,
                adapter_.params + s->a_offset, s->in, 0.0f, delta.data(), s->in);
      const FusedPlace f = fused_place(adapter_.spec, proj);
      for (std::int64_t o = 0; o < s->out; ++o)
        for (std::int64_t i = 0; i < s->in; ++i) w[f.at(o, i)] += delta[static_cast<std::size_t>(o * s->in + i)];
    }
  }
}

void MergedSource::release(std::size_t i) {
  const Tensor& t = tensors_[i];
  const TensorView& v = views_[i];
  // A split tensor's fused tensor is read again by its other experts (and gate's by up):
  // dropped after its last expert's last projection.
  const bool last = t.split_from == SIZE_MAX || (t.split_expert + 1 == adapter_.spec.moe.num_experts &&
                                                 t.split_proj != model::Proj::proj_expert_gate);
  if (last) io::mapping_pages_release(v.data, v.nbytes());
  if (dequantized_index_ == i) {
    dequantized_index_ = SIZE_MAX;
    std::vector<float>().swap(dequantized_);
  }
}

}  // namespace anvil::exporting
