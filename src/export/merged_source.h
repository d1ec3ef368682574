// The merged model an export writes, tensor by tensor: each base tensor as training saw it
// (a quantized run's linear weights dequantized the way its ranks held them), with the
// adapter folded into the projections it targets, W' = W + scale · B·A in fp32. Every
// format (hf, gguf, mlx) reads it here, in row blocks, so memory stays a few MiB whatever
// the model size; only a quantized base tensor is held whole, dequantized.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/tensor.h"
#include "export/export.h"
#include "io/safetensors.h"
#include "model/lora.h"

namespace anvil::exporting {

class MergedSource {
 public:
  struct Tensor {
    std::string name;  // the base's (HF) name, as the text model has it
    std::string stored_name;  // as the base file has it (a multimodal checkpoint's language_model.*)
    // A multimodal checkpoint's vision tower (outside the text model): the hf export copies
    // it as it is; the gguf and mlx exports, which write the text model, leave it out.
    bool outside = false;
    Shape shape;       // as the merged model has it (a packed NF4 weight: its dense shape)
    std::int64_t rows = 1, cols = 1;  // shape as a matrix: (shape[0], the rest); 1-D: (1, n)
    const model::LoraSlot* slot = nullptr;  // the adapter folded in, or none
    // Llama 4's fused experts of this layer (experts.gate_up_proj (E, C, 2fe) or
    // experts.down_proj (E, fe, C), one row per expert): each expert's adapters folded in.
    std::int64_t fused_layer = -1;
    bool fused_down = false;
    std::int64_t adapters = 0;  // adapters folded in: 1 with a slot, each expert's with fused
    // Split from a fused tensor (FusedExperts::split): expert `split_expert`'s `split_proj`
    // in nn.Linear form, under anvil's per-expert name; the fused tensor is `split_from`.
    std::size_t split_from = SIZE_MAX;
    std::int64_t split_expert = -1;
    model::Proj split_proj = model::Proj::proj_expert_gate;
  };

  // How Llama 4's fused experts appear: as stored (the hf export writes them so), or split
  // into one (out, in) tensor per expert and projection, named as anvil names them
  // (model.layers.L.feed_forward.experts.E.gate_proj.weight), which the gguf and mlx
  // exports stack their own way. Every gate comes before every up of a layer.
  enum class FusedExperts { fused, split };

  // Rows per read_rows call that keep about kBlockElems f32 in flight (at least one row):
  // every format streams its tensors in blocks of this size.
  static constexpr std::int64_t kBlockElems = 1 << 20;
  std::int64_t block_rows(std::size_t i) const {
    return std::max<std::int64_t>(1, kBlockElems / std::max<std::int64_t>(1, tensors_[i].cols));
  }

  // Opens the base and checks it against adapter.spec tensor by tensor. `adapter` must
  // outlive this object.
  explicit MergedSource(const ExportAdapter& adapter, FusedExperts experts = FusedExperts::fused);

  // In the base's own order (file by file, each in data order), without the side tensors
  // of a quantized base (absmax, scales), which the dense merged model does not have.
  const std::vector<Tensor>& tensors() const { return tensors_; }
  std::size_t merged_count() const { return layout_.slots().size(); }

  // The tensor as stored when it has no adapter and needs no dequantizing (its bytes can
  // be copied as they are); nullptr otherwise.
  const TensorView* stored(std::size_t i);
  // Whether read_rows and release may run for different tensors on several threads at once:
  // no tensor passes through the one dequantized copy (a quantized base, split experts).
  bool concurrent_reads() const { return quantized_.empty() && fused_views_.empty(); }
  // Rows [row0, row0 + n) of tensor i as (n, cols) f32 into `out`.
  void read_rows(std::size_t i, std::int64_t row0, std::int64_t n, float* out);
  // Tells the page cache that the rows read so far of tensor i will not be read again.
  void release(std::size_t i);

 private:
  // The base tensor i as f32 rows come from: the mapping, or `dequantized_`.
  const TensorView& base(std::size_t i);
  // Appends the split tensors of a fused experts tensor of `layer` (down_proj or gate_up_proj).
  void split_push(std::int64_t layer, bool down, const std::string& name, const TensorView& fused);
  // The split tensor i in f32 (rows, cols), transposed out of its fused tensor.
  void split_load(std::size_t i, float* out);
  // Replaces each expert's projections in rows [row0, row0 + n) of fused tensor t by the
  // values a quantized run held (each quantized in nn.Linear form, as the loader does).
  void dequantize_fused_experts(const Tensor& t, std::int64_t row0, std::int64_t n, float* out);
  // Multiplies rows [row0, row0 + n) of an FP8-on-disk fused tensor t (its codes' values) by
  // each output's scale (quant::fp8_fused_scales).
  void fp8_fused_scale(const Tensor& t, std::int64_t row0, std::int64_t n, float* out);
  // Adds each expert's scale · B·A, transposed into the fused x·W layout, to rows
  // [row0, row0 + n) (experts) of fused tensor t.
  void fold_fused_experts(const Tensor& t, std::int64_t row0, std::int64_t n, float* out);

  const ExportAdapter& adapter_;
  io::SafetensorsModel weights_;
  model::LoraLayout layout_;
  std::vector<Tensor> tensors_;
  std::vector<TensorView> views_;                       // by tensor, in the mapping
  std::vector<TensorView> fused_views_;                 // the fused tensors split_from names
  std::vector<std::string> fused_names_;                // and their names
  std::map<std::string, bool, std::less<>> quantized_;  // name → split by columns over TP
  std::unique_ptr<backend::Backend> be_;
  std::size_t dequantized_index_ = SIZE_MAX;  // which tensor dequantized_ holds
  std::vector<float> dequantized_;
  TensorView dequantized_view_;
};

// Reads elements [begin, begin + n) of a float tensor as fp32 (the view may be misaligned
// for its type, as safetensors.h allows).
void tensor_load_f32(const TensorView& src, std::int64_t begin, std::int64_t n, float* out);

}  // namespace anvil::exporting
