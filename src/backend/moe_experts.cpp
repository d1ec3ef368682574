// One routed expert's forward and backward in Backend ops (backend/moe_experts.h).
#include "backend/moe_experts.h"

#include "backend/backend.h"

namespace anvil::backend {

namespace {

// y(n, out) = x W^T + scale x A^T B^T; xa (n, r) = x A^T saved.
void expert_linear_forward(Backend& be, const ExpertLinear& l, float* y, const float* x, float* xa,
                           i64 n) {
  be.linear_forward(y, x, l.w, nullptr, n, 0.0f);
  if (!l.a) return;
  const LoraDropout none;
  be.lora_down(xa, x, l.a, n, l.w.shape[1], l.r, none);
  be.lora_up(y, xa, l.b, n, l.w.shape[0], l.r, l.scale);
}

// dx(n, in) = beta dx + dy W + the adapter's share; da, db accumulated.
void expert_linear_backward(Backend& be, const ExpertLinear& l, float* dx, const float* dy,
                            const float* x, const float* xa, i64 n, float beta) {
  be.linear_backward_input(dx, dy, l.w, n, beta);
  if (!l.a) return;
  const LoraDropout none;
  be.lora_backward(dx, l.da, l.db, dy, x, xa, l.a, l.b, n, l.w.shape[1], l.w.shape[0], l.r, l.scale,
                   none);
}

// The expert's rows of an (R, width) buffer; null stays null.
template <typename T>
T* rows_of(T* buf, const MoeExpert& e, i64 width) {
  return buf ? buf + e.row0 * width : nullptr;
}

}  // namespace

void moe_expert_forward(Backend& be, const MoeExpert& e, const MoeExpertActs& a) {
  const i64 n = e.rows, c = a.c, fe = a.fe;
  if (n == 0) return;
  const float* x = rows_of(a.xs, e, c);                                          // (n, c)
  float* gate = rows_of(a.gate, e, fe);                                          // (n, fe)
  float* up = rows_of(a.up, e, fe);                                              // (n, fe)
  float* h = rows_of(a.h, e, fe);                                                // (n, fe)
  expert_linear_forward(be, e.gate, gate, x, rows_of(a.xa_gate, e, a.r), n);
  expert_linear_forward(be, e.up, up, x, rows_of(a.xa_up, e, a.r), n);
  be.swiglu_forward(h, gate, up, n * fe);
  expert_linear_forward(be, e.down, rows_of(a.y, e, c), h, rows_of(a.xa_down, e, a.r), n);  // (n, c)
}

void moe_expert_backward(Backend& be, const MoeExpert& e, const MoeExpertActs& a,
                         const MoeExpertGrads& g) {
  const i64 n = e.rows, c = a.c, fe = a.fe;
  if (n == 0) return;
  float* dh = rows_of(g.dh, e, fe);  // (n, fe); dgate, dup the same
  expert_linear_backward(be, e.down, dh, rows_of(g.dy, e, c), rows_of(a.h, e, fe),
                         rows_of(a.xa_down, e, a.r), n, 0.0f);
  be.swiglu_backward(rows_of(g.dgate, e, fe), rows_of(g.dup, e, fe), dh, rows_of(a.gate, e, fe),
                     rows_of(a.up, e, fe), n * fe);
  // Gate and up read the same input: their input gradients add up in dx (n, c).
  const float* x = rows_of(a.xs, e, c);
  expert_linear_backward(be, e.gate, rows_of(g.dxs, e, c), rows_of(g.dgate, e, fe), x,
                         rows_of(a.xa_gate, e, a.r), n, 0.0f);
  expert_linear_backward(be, e.up, rows_of(g.dxs, e, c), rows_of(g.dup, e, fe), x,
                         rows_of(a.xa_up, e, a.r), n, 1.0f);
}

}  // namespace anvil::backend
