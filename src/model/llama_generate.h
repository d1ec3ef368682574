// Greedy decoding with a KV cache: one token at a time through the same weights, adapters
// and Backend ops as training, keys and values of past positions kept per layer.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "backend/backend.h"
#include "model/llama_weights.h"
#include "model/lora.h"
#include "model/model_spec.h"

namespace anvil::model {

struct GenerateOptions {
  std::int64_t max_new_tokens = 64;
  std::vector<std::int32_t> stop_ids;  // generation ends after emitting one (not returned)
  // Only ids below this are chosen (0: the whole vocabulary). Embedding tables are often
  // padded past the tokenizer's last id; those rows have no text to decode to.
  std::int64_t vocab_limit = 0;
};

class Generator {
 public:
  // `lora` and `lora_params` may be null (the base model alone). Sequences up to `max_len`
  // tokens (prompt + generated) fit in the cache.
  Generator(const ModelSpec& spec, const BaseWeights& base, const LoraLayout* lora,
            const float* lora_params, backend::Backend& backend, std::int64_t max_len);

  // Greedy continuation of `prompt` (which must be non-empty); starts a fresh cache.
  std::vector<std::int32_t> generate(std::span<const std::int32_t> prompt, const GenerateOptions& opt);

  // Feeds one token at the next position and returns the logits (V) for the position after it.
  const float* step(std::int32_t token);
  // Feeds `tokens` at the next positions at once and returns the logits (V) for the position
  // after the last: the same cache as step() token by token, but each weight is read once
  // per chunk of rows instead of once per token (a prompt's prefill). Dense models only
  // (a MoE model feeds them one at a time).
  const float* prefill(std::span<const std::int32_t> tokens);
  void reset() { pos_ = 0; }
  std::int64_t position() const { return pos_; }

 private:
  void project(std::int64_t layer, Proj p, float* y, const float* x, float beta);
  // x_ += the token's top-k experts of xn_, weighted (a sparse layer's MLP).
  void experts_forward(std::int64_t layer);
  // Llama 4 (model/llama4_ops.h): q_ and the cache's newest k from their projections to what
  // the attention reads; the first cache position the query sees (its chunk's on RoPE layers).
  std::int64_t llama4_qk(std::int64_t layer, float* k_row);

  const ModelSpec& spec_;
  const BaseWeights& base_;
  const LoraLayout* lora_;
  const float* lora_params_;
  backend::Backend& be_;
  std::int64_t max_len_;
  std::int64_t pos_ = 0;
  std::vector<float> inv_freq_;
  std::vector<float> k_cache_, v_cache_;  // (L, max_len, Hkv*D) each
  std::vector<float> x_, xn_, q_, k_, v_, att_, gate_, up_, h_, xa_, logits_;
  std::vector<float> rstd_heads_, router_, probs_, weight_, y_;  // qk-norm and the experts
  std::vector<std::int32_t> expert_, row_, token_;
  std::vector<std::int64_t> offsets_;
  std::vector<float> ones_, xs_;  // Llama 4: its weightless qk-norm's weight (D), a scaled expert input (C)
  // prefill's rows: (chunk, C), (chunk, H*D), (chunk, F), ... sized on first use
  std::vector<float> px_, pxn_, pq_, patt_, pgate_, pup_, ph_, pxa_, prstd_;
  std::vector<std::int32_t> ppos_;
};

}  // namespace anvil::model
