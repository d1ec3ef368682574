#include "model/tp_shard.h"

#include <algorithm>

#include "core/error.h"

namespace anvil::model {

std::vector<std::string> tp_shard_problems(const ModelSpec& spec, int tp) {
  std::vector<std::string> out;
  if (tp < 1) {
    out.push_back(str_cat("must be at least 1, got ", tp));
    return out;
  }
  auto must_divide = [&](const char* name, std::int64_t value) {
    if (value % tp != 0) out.push_back(str_cat(tp, " does not divide the model's ", name, " (", value, ")"));
  };
  must_divide("num_attention_heads", spec.num_attention_heads);
  // Llama 4's dense width is intermediate_size_mlp and its experts' intermediate_size.
  must_divide(spec.is_llama4() ? "intermediate_size_mlp" : "intermediate_size", spec.intermediate_size);
  if (spec.is_moe())
    must_divide(spec.model_type == "mixtral" || spec.is_llama4() ? "intermediate_size" : "moe_intermediate_size",
                spec.moe.intermediate_size);
  must_divide("vocab_size", spec.vocab_size);
  const std::int64_t kv = spec.num_key_value_heads;
  if (kv % tp != 0 && tp % kv != 0)
    out.push_back(str_cat(tp, " neither divides the model's num_key_value_heads (", kv,
                          ") nor is a multiple of it (then each KV head would be replicated on tp / ",
                          kv, " ranks)"));
  return out;
}

TpShard tp_shard(const ModelSpec& spec, int rank, int size) {
  const auto problems = tp_shard_problems(spec, size);
  ANVIL_CHECK(problems.empty(), "tp ", size, ": ", problems.front());
  ANVIL_CHECK(rank >= 0 && rank < size, "tp rank ", rank, " of ", size);
  TpShard t;
  t.rank = rank;
  t.size = size;
  t.heads = spec.num_attention_heads / size;
  if (spec.num_key_value_heads >= size) {
    t.kv_heads = spec.num_key_value_heads / size;
    t.kv_head_first = rank * t.kv_heads;
  } else {
    t.kv_heads = 1;
    t.kv_replicas = size / spec.num_key_value_heads;
    t.kv_head_first = rank / t.kv_replicas;
  }
  t.ffn = spec.intermediate_size / size;
  t.expert_ffn = spec.moe.intermediate_size / size;
  t.vocab = spec.vocab_size / size;
  t.vocab_first = rank * t.vocab;
  t.experts = spec.moe.num_experts;
  return t;
}

void ep_shard_set(TpShard& t, const ModelSpec& spec, int ep_rank, int ep_size) {
  ANVIL_CHECK(spec.is_moe() && ep_size >= 1 && spec.moe.num_experts % ep_size == 0 && ep_rank >= 0 &&
                  ep_rank < ep_size,
              "ep rank ", ep_rank, " of ", ep_size, " cannot split ", spec.moe.num_experts, " experts");
  t.ep_rank = ep_rank;
  t.ep_size = ep_size;
  t.experts = spec.moe.num_experts / ep_size;
  t.expert_first = ep_rank * t.experts;
}

bool proj_row_parallel(Proj p) { return p == Proj::proj_o || p == Proj::proj_down || p == Proj::proj_expert_down; }

WeightSlice tp_proj_slice(const ModelSpec& spec, const TpShard& t, Proj p) {
  const std::int64_t D = spec.head_dim;
  switch (p) {
    case Proj::proj_q: return {SplitAxis::split_rows, t.rank * t.heads * D, t.heads * D};
    case Proj::proj_k:
    case Proj::proj_v: return {SplitAxis::split_rows, t.kv_head_first * D, t.kv_heads * D};
    case Proj::proj_o: return {SplitAxis::split_cols, t.rank * t.heads * D, t.heads * D};
    case Proj::proj_gate:
    case Proj::proj_up: return {SplitAxis::split_rows, t.rank * t.ffn, t.ffn};
    case Proj::proj_down: return {SplitAxis::split_cols, t.rank * t.ffn, t.ffn};
    case Proj::proj_expert_gate:
    case Proj::proj_expert_up: return {SplitAxis::split_rows, t.rank * t.expert_ffn, t.expert_ffn};
    case Proj::proj_expert_down: return {SplitAxis::split_cols, t.rank * t.expert_ffn, t.expert_ffn};
  }
  ANVIL_CHECK(false, "unknown projection");
  return {};
}

WeightSlice tp_proj_slice_at(const ModelSpec& spec, const TpShard& t, std::int64_t layer, Proj p) {
  const WeightSlice w = tp_proj_slice(spec, t, p);
  if (!spec.is_llama4() || proj_is_expert(p) || p < Proj::proj_gate) return w;
  const std::int64_t f = spec.mlp_rows(layer) / t.size;
  return {w.axis, t.rank * f, f};
}

std::array<std::int64_t, 2> tp_proj_shape(const ModelSpec& spec, const TpShard& t, Proj p) {
  auto shape = proj_shape(spec, p);
  const WeightSlice s = tp_proj_slice(spec, t, p);
  shape[s.axis == SplitAxis::split_rows ? 0 : 1] = s.count;
  return shape;
}

WeightSlice tp_vocab_slice(const TpShard& t) { return {SplitAxis::split_rows, t.vocab_first, t.vocab}; }

ModelSpec tp_local_spec(const ModelSpec& spec, const TpShard& t) {
  ModelSpec s = spec;
  s.num_attention_heads = t.heads;
  s.num_key_value_heads = t.kv_heads;
  s.intermediate_size = t.ffn;
  s.moe.intermediate_size = t.expert_ffn;
  s.vocab_size = t.vocab;
  if (t.ep_size > 1) {
    s.moe.expert_first = t.expert_first;
    s.moe.expert_count = t.experts;
  }
  return s;
}

std::vector<LoraPart> lora_tp_parts(const TpShard& t, const LoraLayout& local) {
  std::vector<LoraPart> parts;
  const std::int64_t r = local.spec().rank;
  for (const LoraSlot& s : local.slots()) {
    LoraPart a{s.a_offset, r * s.in, 1, GradReduce::grad_reduce_none};
    LoraPart b{s.b_offset, s.out * r, 1, GradReduce::grad_reduce_none};
    if (proj_row_parallel(s.proj)) {
      b.replicas = t.size;
      b.grad = t.size > 1 ? GradReduce::grad_reduce_tp : GradReduce::grad_reduce_none;
    } else {
      a.replicas = t.size;
      a.grad = t.size > 1 ? GradReduce::grad_reduce_tp : GradReduce::grad_reduce_none;
      if ((s.proj == Proj::proj_k || s.proj == Proj::proj_v) && t.kv_replicas > 1) {
        b.replicas = t.kv_replicas;
        b.grad = GradReduce::grad_reduce_kv;
      }
    }
    parts.push_back(a);
    parts.push_back(b);
  }
  return parts;
}

namespace {

// The slot of the full layout that local slot `l` is a slice of (under ep the local layout
// holds this rank's experts only, so the two are not index for index).
const LoraSlot& full_slot_of(const LoraLayout& full, const LoraSlot& l) {
  const LoraSlot* f = full.find(l.layer, l.proj, l.expert);
  ANVIL_CHECK(f != nullptr && f->proj == l.proj && f->expert == l.expert, "local and full LoRA layouts differ");
  return *f;
}

// A slot's part on rank t (Llama 4's gate/up/down by their own layer's width).
WeightSlice slot_slice(const ModelSpec& spec, const TpShard& t, const LoraSlot& s) {
  return tp_proj_slice_at(spec, t, s.layer, s.proj);
}

// Calls copy(full_offset, local_offset, count) for every contiguous run of rank t's values.
template <typename Copy>
void lora_shard_walk(const ModelSpec& spec, const TpShard& t, const LoraLayout& full,
                     const LoraLayout& local, Copy copy) {
  const std::int64_t r = full.spec().rank;
  ANVIL_CHECK(local.spec().rank == r, "local and full LoRA layouts differ");
  for (const LoraSlot& l : local.slots()) {
    const LoraSlot& f = full_slot_of(full, l);
    const WeightSlice w = slot_slice(spec, t, f);
    if (w.axis == SplitAxis::split_rows) {
      copy(f.a_offset, l.a_offset, r * f.in);                      // A (r, in): all of it
      copy(f.b_offset + w.start * r, l.b_offset, w.count * r);     // B rows of W's rows
    } else {
      for (std::int64_t row = 0; row < r; ++row)                   // A columns of W's columns
        copy(f.a_offset + row * f.in + w.start, l.a_offset + row * l.in, w.count);
      copy(f.b_offset, l.b_offset, f.out * r);                     // B (out, r): all of it
    }
  }
}

}  // namespace

std::vector<LoraBlock> lora_tp_blocks(const ModelSpec& spec, const TpShard& t, const LoraLayout& full,
                                      const LoraLayout& local) {
  const std::int64_t r = full.spec().rank;
  std::vector<LoraBlock> out;
  for (const LoraSlot& l : local.slots()) {
    const LoraSlot& f = full_slot_of(full, l);
    const WeightSlice w = slot_slice(spec, t, f);
    const bool kv = (f.proj == Proj::proj_k || f.proj == Proj::proj_v) && t.kv_replicas > 1;
    LoraBlock a{&f, 'A', r, f.in, 0, r, 0, f.in, l.a_offset, t.rank == 0};
    LoraBlock b{&f, 'B', f.out, r, 0, f.out, 0, r, l.b_offset, t.rank == 0};
    if (w.axis == SplitAxis::split_rows) {  // B's rows split (and replicated with KV heads)
      b.row0 = w.start;
      b.nrows = w.count;
      b.writer = kv ? t.rank % t.kv_replicas == 0 : true;
    } else {  // A's columns split
      a.col0 = w.start;
      a.ncols = w.count;
      a.writer = true;
    }
    out.push_back(a);
    out.push_back(b);
  }
  return out;
}

void lora_shard_extract(const ModelSpec& spec, const TpShard& t, const LoraLayout& full,
                        const LoraLayout& local, const float* full_params, float* local_params) {
  lora_shard_walk(spec, t, full, local, [&](std::int64_t fo, std::int64_t lo, std::int64_t n) {
    std::copy_n(full_params + fo, n, local_params + lo);
  });
}

void lora_shard_insert(const ModelSpec& spec, const TpShard& t, const LoraLayout& full,
                       const LoraLayout& local, const float* local_params, float* full_params) {
  lora_shard_walk(spec, t, full, local, [&](std::int64_t fo, std::int64_t lo, std::int64_t n) {
    std::copy_n(local_params + lo, n, full_params + fo);
  });
}

}  // namespace anvil::model
