// The frozen base weights of a Llama model, as one tensor-parallel rank holds them
// (tp_shard.h): views straight into the mapped safetensors where the rank's part is a
// block of whole rows already in the storage dtype, else into one copy made at load.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/lora.h"
#include "model/model_spec.h"
#include "model/tp_shard.h"
#include "quant/quant_state.h"

namespace anvil::model {

// Shapes are the local ones (tp_local_spec): h = heads, k = KV heads, f = ffn, v = vocab
// rows of this rank, D = head_dim, C = hidden_size.
struct LayerWeights {
  TensorView attn_norm;                         // (C)
  std::array<TensorView, kProjCount> proj;      // by Proj: q (h*D, C), k/v (k*D, C), o (C, h*D),
                                                // gate/up (f, C), down (C, f)
  std::array<TensorView, kProjCount> bias;      // q/k/v biases (Qwen2), sliced like their rows
                                                // (o/down biases whole); empty views otherwise
  TensorView mlp_norm;                          // (C)
  TensorView q_norm, k_norm;                    // (D) Qwen3's per-head norms; empty otherwise
  // A sparse (mixture-of-experts) layer instead of the dense MLP: the router (E, C),
  // replicated, and each expert's gate (fe, C), up (fe, C) and down (C, fe), fe its local rows.
  TensorView router;
  std::vector<std::array<TensorView, 3>> experts;
};

struct BaseWeights {
  TensorView embed;       // (v, C): vocabulary rows [shard.vocab_first, + v)
  std::vector<LayerWeights> layers;
  TensorView final_norm;  // (C)
  TensorView lm_head;     // (v, C): the embedding itself when tied
  DType storage = DType::dtype_f32;
  TpShard shard;          // the part of the model these views hold
  std::int64_t converted_bytes = 0;  // bytes copied at load: other file dtype, or column slices
  quant::QuantKind quant = quant::QuantKind::quant_none;
  std::int64_t quantized_bytes = 0;  // codes and scales of the quantized linear weights

  // Keeps the mapping and the copies alive.
  std::shared_ptr<void> owner;
};

// Opens DIR's safetensors, checks them against `spec` and returns `shard`'s part of every
// weight in `storage` (f32 or bf16). Norm weights and biases are always f32. A rank reads
// only its own part of each tensor (a column slice row by row) and lets go of the mapped
// pages of every tensor it copied, so its memory is its slice, not the model (a copied
// tensor's pages are resident only while it is copied). One rank: tp_shard(spec, 0, 1).
// With `quant`, each linear weight it applies to is quantized right after its slice is
// read (one tensor's f32 slice at a time, never the model) and its view is quantized
// (dtype nf4 / fp8_e4m3, see quant/quant_state.h); the backend's linear ops take it as is.
BaseWeights base_weights_load(const ModelSpec& spec, const std::string& model_dir, DType storage,
                              const TpShard& shard, const quant::QuantPolicy& quant = {});

}  // namespace anvil::model
