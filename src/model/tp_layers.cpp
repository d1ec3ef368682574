#include "model/tp_layers.h"

#include "core/error.h"

namespace anvil::model {

namespace {

bool is_single(const comm::Comm* tp) { return tp == nullptr || tp->size() == 1; }

// The vocab-parallel cross-entropy's row reductions, as Comm all-reduces.
class CommVocabReducer final : public backend::VocabReducer {
 public:
  explicit CommVocabReducer(comm::Comm& c) : comm_(c) {}
  void max(float* x, std::int64_t n) override { comm_.allreduce_max(x, n); }
  void sum(double* x, std::int64_t n) override { comm_.allreduce_sum(x, n); }

 private:
  comm::Comm& comm_;
};

}  // namespace

void tp_allreduce(comm::Comm* tp, float* x, std::int64_t n) {
  if (is_single(tp)) return;
  tp->allreduce_sum(x, n);
}

void linear_forward_local(backend::Backend& be, const LinearShard& l, float* y, const float* x,
                          float* xa, std::int64_t n, float beta, const backend::LoraDropout& drop) {
  be.linear_forward(y, x, l.w, l.bias, n, beta);  // (n, out)
  if (!l.a) return;
  be.lora_down(xa, x, l.a, n, l.in(), l.r, drop);  // (n, r)
  be.lora_up(y, xa, l.b, n, l.out(), l.r, l.scale);
}

void linear_backward_local(backend::Backend& be, const LinearShard& l, float* dx, const float* dy,
                           const float* x, const float* xa, std::int64_t n, float beta,
                           const backend::LoraDropout& drop) {
  be.linear_backward_input(dx, dy, l.w, n, beta);  // (n, in)
  if (!l.a) return;
  be.lora_backward(dx, l.da, l.db, dy, x, xa, l.a, l.b, n, l.in(), l.out(), l.r, l.scale, drop);
}

void row_parallel_forward(backend::Backend& be, comm::Comm* tp, const LinearShard& l, float* y,
                          const float* x, float* xa, std::int64_t n, float beta,
                          const backend::LoraDropout& drop) {
  if (is_single(tp)) {
    linear_forward_local(be, l, y, x, xa, n, beta, drop);
    return;
  }
  // The partial outputs of all ranks are summed; what is added once (beta·y, the bias)
  // is added by rank 0 only.
  const bool first = tp->rank() == 0;
  LinearShard partial = l;
  if (!first) partial.bias = nullptr;
  linear_forward_local(be, partial, y, x, xa, n, first ? beta : 0.0f, drop);  // (n, out) partial
  tp->allreduce_sum(y, n * l.out());
}

void vocab_parallel_embedding(backend::Backend& be, comm::Comm* tp, float* out,
                              const std::int32_t* ids, const TensorView& table, std::int64_t n,
                              const backend::VocabShard& shard) {
  be.embedding_forward(out, ids, table, n, shard);  // (n, C), zero rows for others' ids
  tp_allreduce(tp, out, n * table.shape[1]);
}

double vocab_parallel_cross_entropy(backend::Backend& be, comm::Comm* tp, float* dhidden,
                                    const float* hidden, const TensorView& w_head,
                                    const std::int32_t* targets, std::int64_t n,
                                    float grad_scale, const backend::VocabShard& shard) {
  if (is_single(tp)) {
    ANVIL_CHECK(shard.total == 0 || shard.total == w_head.shape[0],
                "a vocabulary shard without a TP group");
    return be.lm_head_cross_entropy(dhidden, hidden, w_head, targets, n, grad_scale);
  }
  CommVocabReducer reduce(*tp);
  const double loss =
      be.lm_head_cross_entropy(dhidden, hidden, w_head, targets, n, grad_scale, shard, &reduce);
  if (dhidden) tp->allreduce_sum(dhidden, n * w_head.shape[1]);
  return loss;
}

}  // namespace anvil::model
