#include "model/llama_weights.h"

#include <cstring>

#include "core/arena.h"
#include "core/error.h"
#include "io/safetensors.h"

namespace anvil::model {

namespace {

struct Owner {
  io::SafetensorsModel file;
  Arena copies;
};

bool aligned_for(const void* p, DType t) {
  return reinterpret_cast<std::uintptr_t>(p) % dtype_size(t) == 0;
}

// The view of `name` in dtype `want`: the mapped bytes when they already are `want` and
// aligned, else a converted copy from the arena (in plan mode only counted).
TensorView weight_view(Owner& o, const std::string& name, DType want, std::int64_t* copied) {
  const auto* e = o.file.find(name);
  ANVIL_CHECK(e != nullptr, "weight ", name, " vanished after the check");
  const TensorView src = e->file->view(*e->info);
  if (src.dtype == want && aligned_for(src.data, want)) return src;
  TensorView dst{nullptr, want, src.shape};
  const std::int64_t n = src.numel();
  if (want == DType::dtype_bf16) {
    auto* out = o.copies.take<std::uint16_t>(n);
    if (out) {
      for (std::int64_t i = 0; i < n; ++i) {
        std::uint16_t h;
        if (src.dtype == DType::dtype_bf16) {
          std::memcpy(&h, static_cast<const std::uint8_t*>(src.data) + 2 * i, 2);
        } else {
          h = f32_to_bf16(static_cast<float>(dtype_load_as_f64(src.data, src.dtype, static_cast<std::size_t>(i))));
        }
        out[i] = h;
      }
    }
    dst.data = out;
  } else {
    ANVIL_CHECK(want == DType::dtype_f32, "unsupported weight storage ", dtype_name(want));
    auto* out = o.copies.take<float>(n);
    if (out)
      for (std::int64_t i = 0; i < n; ++i)
        out[i] = static_cast<float>(dtype_load_as_f64(src.data, src.dtype, static_cast<std::size_t>(i)));
    dst.data = out;
  }
  *copied += static_cast<std::int64_t>(dst.nbytes());
  return dst;
}

void carve(Owner& o, const ModelSpec& spec, DType storage, BaseWeights& w) {
  w = BaseWeights{};
  w.storage = storage;
  std::int64_t* copied = &w.converted_bytes;
  const DType f32 = DType::dtype_f32;
  w.embed = weight_view(o, "model.embed_tokens.weight", storage, copied);
  for (std::int64_t l = 0; l < spec.num_hidden_layers; ++l) {
    const std::string p = str_cat("model.layers.", l, ".");
    LayerWeights lw;
    lw.attn_norm = weight_view(o, p + "input_layernorm.weight", f32, copied);
    lw.mlp_norm = weight_view(o, p + "post_attention_layernorm.weight", f32, copied);
    for (int i = 0; i < kProjCount; ++i) {
      const Proj proj = static_cast<Proj>(i);
      const std::string base = p + proj_module(proj) + "." + proj_name(proj);
      lw.proj[i] = weight_view(o, base + ".weight", storage, copied);
      if (o.file.find(base + ".bias")) lw.bias[i] = weight_view(o, base + ".bias", f32, copied);
    }
    w.layers.push_back(lw);
  }
  w.final_norm = weight_view(o, "model.norm.weight", f32, copied);
  w.lm_head = spec.tie_word_embeddings ? w.embed : weight_view(o, "lm_head.weight", storage, copied);
}

}  // namespace

BaseWeights base_weights_load(const ModelSpec& spec, const std::string& model_dir, DType storage) {
  ANVIL_CHECK(storage == DType::dtype_f32 || storage == DType::dtype_bf16,
              "base weights are stored in f32 or bf16");
  auto owner = std::make_shared<Owner>(Owner{io::SafetensorsModel::open(model_dir), Arena{}});
  model_check_weights(spec, owner->file);
  BaseWeights w;
  carve(*owner, spec, storage, w);  // plan: count the copies
  owner->copies.allocate();
  carve(*owner, spec, storage, w);
  w.owner = owner;
  return w;
}

}  // namespace anvil::model
