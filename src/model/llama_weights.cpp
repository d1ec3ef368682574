#include "model/llama_weights.h"

#include <cstring>
#include <optional>
#include <vector>

#include "core/arena.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "quant/quant_load.h"

namespace anvil::model {

namespace {

struct Owner {
  io::SafetensorsModel file;
  Arena copies;
  quant::QuantStore quantized;
};

bool aligned_for(const void* p, DType t) {
  return reinterpret_cast<std::uintptr_t>(p) % dtype_size(t) == 0;
}

float load_f32(const std::uint8_t* src, DType from, std::int64_t i) {
  std::uint16_t h;
  switch (from) {
    case DType::dtype_bf16: std::memcpy(&h, src + 2 * i, 2); return bf16_to_f32(h);
    case DType::dtype_f16: std::memcpy(&h, src + 2 * i, 2); return f16_to_f32(h);
    default: return static_cast<float>(dtype_load_as_f64(src, from, static_cast<std::size_t>(i)));
  }
}

// n elements from `src` (file bytes, possibly misaligned) into `dst` (arena, aligned).
// The common pairs get their own loops: a 70B model is 7e10 elements, too many for a
// switch per element.
void span_convert(const std::uint8_t* src, DType from, void* dst, DType to, std::int64_t n) {
  if (from == to) {
    std::memcpy(dst, src, static_cast<std::size_t>(n) * dtype_size(to));
    return;
  }
  if (to == DType::dtype_f32) {
    auto* out = static_cast<float*>(dst);
    if (from == DType::dtype_bf16) {
      for (std::int64_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        out[i] = bf16_to_f32(h);
      }
    } else {
      for (std::int64_t i = 0; i < n; ++i) out[i] = load_f32(src, from, i);
    }
    return;
  }
  ANVIL_CHECK(to == DType::dtype_bf16, "unsupported weight storage ", dtype_name(to));
  auto* out = static_cast<std::uint16_t*>(dst);
  if (from == DType::dtype_f32) {
    for (std::int64_t i = 0; i < n; ++i) {
      float f;
      std::memcpy(&f, src + 4 * i, 4);
      out[i] = f32_to_bf16(f);
    }
  } else {
    for (std::int64_t i = 0; i < n; ++i) out[i] = f32_to_bf16(load_f32(src, from, i));
  }
}

// The view of `slice` of tensor `name` (all of it when nullopt) in dtype `want`. A 1-D
// tensor of n elements counts as (n, 1). A block of whole rows in `want`, aligned, is a
// view into the mapping; anything else is copied into the arena (in plan mode only
// counted), reading only the slice's bytes.
// The rows and columns of a (rows, cols) tensor that `slice` takes (all: nullopt); a 1-D
// tensor of n elements counts as (n, 1).
struct SliceBox {
  std::int64_t row_first, n_rows, col_first, n_cols;
  bool by_rows;
};

SliceBox slice_box(const std::string& name, const Shape& shape, std::optional<WeightSlice> slice) {
  const std::int64_t rows = shape[0];
  const std::int64_t cols = shape.rank() == 2 ? shape[1] : 1;
  WeightSlice s = slice.value_or(WeightSlice{SplitAxis::split_rows, 0, rows});
  if (s.axis == SplitAxis::split_cols && s.count == cols) s = {SplitAxis::split_rows, 0, rows};  // tp 1: whole
  const bool by_rows = s.axis == SplitAxis::split_rows;
  ANVIL_CHECK(by_rows || shape.rank() == 2, name, ": a column slice of a 1-D tensor");
  ANVIL_CHECK(s.start >= 0 && s.count > 0 && s.start + s.count <= (by_rows ? rows : cols), name,
              ": slice [", s.start, ", +", s.count, ") outside ", shape.str());
  return by_rows ? SliceBox{s.start, s.count, 0, cols, true} : SliceBox{0, rows, s.start, s.count, false};
}

TensorView weight_view(const io::SafetensorsModel& file, Arena& copies, const std::string& name,
                       DType want, std::optional<WeightSlice> slice, std::int64_t* copied) {
  const auto* e = file.find(name);
  ANVIL_CHECK(e != nullptr, "weight ", name, " vanished after the check");
  const TensorView src = e->file->view(*e->info);
  ANVIL_CHECK_INPUT(src.dtype != DType::dtype_fp8_e4m3 && !quant::bnb4_packed(file, name), e->file->path(),
                    ": tensor '", name, "' is quantized on disk: load it with the model.quant of its checkpoint "
                    "(fp8 / nf4) and keep it out of model.quant_skip");
  const std::int64_t cols = src.shape.rank() == 2 ? src.shape[1] : 1;
  const auto [row_first, n_rows, col_first, n_cols, by_rows] = slice_box(name, src.shape, slice);
  Shape local = src.shape;
  local[by_rows ? 0 : 1] = by_rows ? n_rows : n_cols;

  const std::size_t in_size = dtype_size(src.dtype);
  const auto* first = static_cast<const std::uint8_t*>(src.data) +
                      static_cast<std::size_t>(row_first * cols + col_first) * in_size;
  if (by_rows && src.dtype == want && aligned_for(first, want))
    return TensorView{const_cast<std::uint8_t*>(first), want, local};

  TensorView dst{nullptr, want, local};
  auto* out = copies.take<std::uint8_t>(static_cast<std::int64_t>(dst.nbytes()));
  if (out) {
    if (by_rows) {
      span_convert(first, src.dtype, out, want, n_rows * n_cols);
    } else {
      const std::size_t out_row = static_cast<std::size_t>(n_cols) * dtype_size(want);
      for (std::int64_t r = 0; r < n_rows; ++r)
        span_convert(first + static_cast<std::size_t>(r * cols) * in_size, src.dtype,
                     out + static_cast<std::size_t>(r) * out_row, want, n_cols);
    }
    io::mapping_pages_release(src.data, src.nbytes());  // its other ranks' parts
  }
  dst.data = out;
  *copied += static_cast<std::int64_t>(dst.nbytes());
  return dst;
}

TensorView weight_view(Owner& o, const std::string& name, DType want, std::optional<WeightSlice> slice,
                       std::int64_t* copied) {
  return weight_view(o.file, o.copies, name, want, slice, copied);
}

// A linear layer's weight, quantized when `quant` applies to it: its f32 slice is read
// into an arena of its own, quantized into o.quantized and let go, so one tensor's slice
// is the most ever held dense. In plan mode (o.copies not allocated) it takes nothing.
TensorView linear_weight(Owner& o, const std::string& name, DType storage, std::optional<WeightSlice> slice,
                         std::int64_t* copied, const quant::QuantPolicy& quant) {
  if (!quant.applies(name)) return weight_view(o, name, storage, slice, copied);
  if (!o.copies.allocated()) return {};
  const auto* e = o.file.find(name);
  if (quant::bnb4_packed(o.file, name)) {  // bitsandbytes 4-bit on disk
    ANVIL_CHECK_INPUT(quant.kind == quant::QuantKind::quant_nf4, e->file->path(), ": tensor '", name,
                      "' is bitsandbytes NF4 on disk, but model.quant is ", quant::quant_kind_name(quant.kind),
                      " (set nf4)");
    const SliceBox b = slice_box(name, quant::bnb4_shape(o.file, name), slice);
    return quant::nf4_load_slice(o.file, name, b.row_first, b.n_rows, b.col_first, b.n_cols, o.quantized);
  }
  if (e && e->info->dtype == DType::dtype_fp8_e4m3) {  // quantized on disk
    ANVIL_CHECK_INPUT(quant.kind == quant::QuantKind::quant_fp8, e->file->path(), ": tensor '", name,
                      "' is FP8 on disk, but model.quant is ", quant::quant_kind_name(quant.kind), " (set fp8)");
    const SliceBox b = slice_box(name, e->info->shape, slice);
    return quant::fp8_load_slice(o.file, name, b.row_first, b.n_rows, b.col_first, b.n_cols, o.quantized);
  }
  Arena one;
  std::int64_t dense_bytes = 0;
  weight_view(o.file, one, name, DType::dtype_f32, slice, &dense_bytes);
  one.allocate();
  const TensorView dense = weight_view(o.file, one, name, DType::dtype_f32, slice, &dense_bytes);
  const TensorView q = o.quantized.add(dense, quant.kind);
  if (one.used() == 0) io::mapping_pages_release(dense.data, dense.nbytes());  // a view into the file
  return q;
}

// A sparse layer's router (whole, f32: its logits pick the experts) and this rank's slice
// of every expert it holds (under ep its block only: the others' weights are never read).
void carve_experts(Owner& o, const ModelSpec& spec, DType storage, const TpShard& shard,
                   const quant::QuantPolicy& quant, std::int64_t l, LayerWeights& lw, std::int64_t* copied) {
  lw.router = weight_view(o, str_cat("model.layers.", l, ".", spec.moe_module(), ".gate.weight"), DType::dtype_f32,
                          std::nullopt, copied);
  for (std::int64_t e = shard.expert_first; e < shard.expert_first + shard.experts; ++e) {
    std::array<TensorView, 3> ex;
    for (int k = 0; k < 3; ++k) {
      const Proj proj = static_cast<Proj>(static_cast<int>(Proj::proj_expert_gate) + k);
      ex[static_cast<std::size_t>(k)] = linear_weight(o, proj_module_path(spec, l, proj, e) + ".weight", storage,
                                                      tp_proj_slice(spec, shard, proj), copied, quant);
    }
    lw.experts.push_back(ex);
  }
}

// (rows, cols) = src^T of the (cols, rows) block at element `first` of a row-major tensor
// whose rows are `stride` long, converted to `to` (a fused Llama 4 expert into nn.Linear form).
void transpose_convert(const TensorView& src, std::int64_t first, std::int64_t stride, std::int64_t rows,
                       std::int64_t cols, void* dst, DType to) {
  const auto* base = static_cast<const std::uint8_t*>(src.data);
  const std::size_t in = dtype_size(src.dtype);
  std::vector<float> row(static_cast<std::size_t>(cols));  // one output row in f32
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c)
      row[static_cast<std::size_t>(c)] =
          load_f32(base + static_cast<std::size_t>(first + c * stride + r) * in, src.dtype, 0);
    span_convert(reinterpret_cast<const std::uint8_t*>(row.data()), DType::dtype_f32,
                 static_cast<std::uint8_t*>(dst) + static_cast<std::size_t>(r * cols) * dtype_size(to), to, cols);
  }
}

// Llama 4's sparse layer: the router and each expert's gate (fe, C), up (fe, C) and down
// (C, fe) copied out of the fused gate_up_proj (E, C, 2fe) and down_proj (E, fe, C), which
// hold x·W (transposed) with gate in the first fe columns. This rank's experts only (under
// ep its block), and of each its TP slice (fe/tp gate and up rows, fe/tp down columns, as
// tp_proj_slice splits an expert); with `quant`, each expert's projection is quantized from
// its transposed f32 slice (one projection dense at a time) under its own name
// (proj_module_path), which is what model.quant_skip matches, as for Qwen3-MoE.
void carve_llama4_experts(Owner& o, const ModelSpec& spec, DType storage, const TpShard& shard,
                          const quant::QuantPolicy& quant, std::int64_t l, LayerWeights& lw, std::int64_t* copied) {
  const std::string ff = str_cat("model.layers.", l, ".feed_forward.");
  lw.router = weight_view(o, ff + "router.weight", DType::dtype_f32, std::nullopt, copied);
  const std::int64_t C = spec.hidden_size, Fe = spec.moe.intermediate_size;
  const std::int64_t fe = shard.expert_ffn, f0 = shard.rank * fe;  // this rank's rows of each expert
  auto fused = [&](const std::string& name) {
    const auto* t = o.file.find(name);
    ANVIL_CHECK_INPUT(!quant::bnb4_packed(o.file, name), t->file->path(), ": tensor '", name, "' is bitsandbytes ",
                      "4-bit on disk; anvil reads Llama 4's fused experts in f32 / bf16 / f16 or fbgemm_fp8's F8_E4M3 ",
                      "(quantize them at load with model.quant)");
    ANVIL_CHECK_INPUT(t->info->dtype != DType::dtype_fp8_e4m3 || quant.kind == quant::QuantKind::quant_fp8,
                      t->file->path(), ": tensor '", name, "' is FP8 on disk, but model.quant is ",
                      quant::quant_kind_name(quant.kind), " (set fp8)");
    return t->file->view(*t->info);
  };
  const TensorView gate_up = fused(ff + "experts.gate_up_proj");  // (E, C, 2fe)
  const TensorView down = fused(ff + "experts.down_proj");        // (E, fe, C)
  std::vector<float> dense;  // one quantized projection's f32 copy, (out, in)
  for (std::int64_t e = shard.expert_first; e < shard.expert_first + shard.experts; ++e) {
    std::array<TensorView, 3> ex;
    const std::array<Shape, 3> shapes = {Shape{fe, C}, Shape{fe, C}, Shape{C, fe}};
    for (int k = 0; k < 3; ++k) {
      const Shape& shape = shapes[static_cast<std::size_t>(k)];
      auto copy_to = [&](void* dst, DType to) {
        if (k < 2) transpose_convert(gate_up, e * C * 2 * Fe + k * Fe + f0, 2 * Fe, fe, C, dst, to);
        else transpose_convert(down, e * Fe * C + f0 * C, C, C, fe, dst, to);
      };
      TensorView& v = ex[static_cast<std::size_t>(k)];
      const Proj proj = static_cast<Proj>(static_cast<int>(Proj::proj_expert_gate) + k);
      if ((k < 2 ? gate_up : down).dtype == DType::dtype_fp8_e4m3) {  // fbgemm_fp8 on disk: its codes and scales
        if (!o.copies.allocated()) continue;  // plan mode
        const std::string name = ff + (k < 2 ? "experts.gate_up_proj" : "experts.down_proj");
        // this rank's gate/up rows (outputs f0 .. of gate's or up's), or down's columns (inputs)
        v = k < 2 ? quant::fp8_load_fused_expert(o.file, name, e, k * Fe + f0, fe, 0, C, o.quantized)
                  : quant::fp8_load_fused_expert(o.file, name, e, 0, C, f0, fe, o.quantized);
        continue;
      }
      if (quant.applies(proj_module_path(spec, l, proj, e) + ".weight")) {
        if (!o.copies.allocated()) continue;  // plan mode: nothing in the arena
        dense.resize(static_cast<std::size_t>(shape.numel()));
        copy_to(dense.data(), DType::dtype_f32);
        v = o.quantized.add(TensorView{dense.data(), DType::dtype_f32, shape}, quant.kind);
        continue;
      }
      v = TensorView{nullptr, storage, shape};
      v.data = o.copies.take<std::uint8_t>(static_cast<std::int64_t>(v.nbytes()));
      *copied += static_cast<std::int64_t>(v.nbytes());
      if (v.data) copy_to(v.data, storage);  // else plan mode
    }
    lw.experts.push_back(ex);
  }
}

void carve(Owner& o, const ModelSpec& spec, DType storage, const TpShard& shard, const quant::QuantPolicy& quant,
           BaseWeights& w) {
  w = BaseWeights{};
  w.storage = storage;
  w.shard = shard;
  std::int64_t* copied = &w.converted_bytes;
  const DType f32 = DType::dtype_f32;
  const WeightSlice vocab = tp_vocab_slice(shard);
  w.embed = weight_view(o, "model.embed_tokens.weight", storage, vocab, copied);
  for (std::int64_t l = 0; l < spec.num_hidden_layers; ++l) {
    const std::string p = str_cat("model.layers.", l, ".");
    LayerWeights lw;
    lw.attn_norm = weight_view(o, p + "input_layernorm.weight", f32, std::nullopt, copied);
    lw.mlp_norm = weight_view(o, p + "post_attention_layernorm.weight", f32, std::nullopt, copied);
    if (spec.qk_norm) {
      lw.q_norm = weight_view(o, p + "self_attn.q_norm.weight", f32, std::nullopt, copied);
      lw.k_norm = weight_view(o, p + "self_attn.k_norm.weight", f32, std::nullopt, copied);
    }
    const bool sparse = spec.layer_is_moe(l);
    if (sparse && spec.is_llama4()) carve_llama4_experts(o, spec, storage, shard, quant, l, lw, copied);
    else if (sparse) carve_experts(o, spec, storage, shard, quant, l, lw, copied);
    for (int i = 0; i < kProjCount; ++i) {
      const Proj proj = static_cast<Proj>(i);
      if (proj_is_expert(proj) || (proj >= Proj::proj_gate && !spec.layer_has_mlp(l))) continue;
      const std::string base = proj_module_path(spec, l, proj);
      const WeightSlice slice = tp_proj_slice_at(spec, shard, l, proj);
      lw.proj[i] = linear_weight(o, base + ".weight", storage, slice, copied, quant);
      // A bias belongs to the output rows: a column-parallel layer's is split with them,
      // a row-parallel layer's is whole (added once, to the reduced sum).
      if (o.file.find(base + ".bias"))
        lw.bias[i] = weight_view(o, base + ".bias", f32,
                                 proj_row_parallel(proj) ? std::nullopt : std::optional(slice), copied);
    }
    w.layers.push_back(lw);
  }
  w.final_norm = weight_view(o, "model.norm.weight", f32, std::nullopt, copied);
  w.lm_head = spec.tie_word_embeddings ? w.embed : linear_weight(o, "lm_head.weight", storage, vocab, copied, quant);
  w.quant = quant.kind;
  w.quantized_bytes = o.quantized.bytes();
}

}  // namespace

BaseWeights base_weights_load(const ModelSpec& spec, const std::string& model_dir, DType storage,
                              const TpShard& shard, const quant::QuantPolicy& quant) {
  ANVIL_CHECK(storage == DType::dtype_f32 || storage == DType::dtype_bf16,
              "base weights are stored in f32 or bf16");
  ANVIL_CHECK(shard.size >= 1 && shard.heads * shard.size == spec.num_attention_heads &&
                  shard.vocab * shard.size == spec.vocab_size,
              "tp shard (rank ", shard.rank, " of ", shard.size, ") was made for another model");
  auto owner = std::make_shared<Owner>(Owner{model_weights_open(model_dir), Arena{}, {}});
  model_check_weights(spec, owner->file);
  BaseWeights w;
  carve(*owner, spec, storage, shard, quant, w);  // plan: count the copies
  owner->copies.allocate();
  carve(*owner, spec, storage, shard, quant, w);
  w.owner = owner;
  return w;
}

}  // namespace anvil::model
