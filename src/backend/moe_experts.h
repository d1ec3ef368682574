// The routed experts of a sparse layer: each expert's SwiGLU MLP over its block of the
// layer's rows, sorted by expert (backend/moe_route.h). What Backend::moe_experts_forward
// and moe_experts_backward take, and one expert's step written in Backend ops, which is how
// every backend runs an expert; a backend chooses only the order (the CPU backend runs
// experts side by side on its threads, each with single-threaded products).
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace anvil::backend {

class Backend;

// One linear of one expert: y(n, out) = x W^T + scale x A^T B^T (experts take no dropout).
struct ExpertLinear {
  TensorView w;              // (out, in), frozen
  const float* a = nullptr;  // (r, in) adapter A; null: no adapter
  const float* b = nullptr;  // (out, r) adapter B
  float* da = nullptr;       // (r, in) gradient of A, accumulated by backward
  float* db = nullptr;       // (out, r) gradient of B, accumulated by backward
  std::int64_t r = 0;
  float scale = 0.0f;
};

// An expert and its rows [row0, row0 + rows) of the layer's buffers.
struct MoeExpert {
  ExpertLinear gate, up, down;  // gate, up (fe, c); down (c, fe)
  std::int64_t row0 = 0;
  std::int64_t rows = 0;
};

// A sparse layer's buffers, R rows in expert order; forward writes all but xs, backward
// reads them.
struct MoeExpertActs {
  std::int64_t c = 0;             // the layer's width
  std::int64_t fe = 0;            // an expert's intermediate width
  std::int64_t r = 0;             // LoRA rank (the xa buffers' width)
  const float* xs = nullptr;      // (R, c) the experts' inputs
  float* gate = nullptr;          // (R, fe)
  float* up = nullptr;            // (R, fe)
  float* h = nullptr;             // (R, fe) silu(gate) * up
  float* y = nullptr;             // (R, c) the experts' outputs
  float* xa_gate = nullptr;       // (R, r) adapter inputs saved; null where unadapted
  float* xa_up = nullptr;         // (R, r)
  float* xa_down = nullptr;       // (R, r)
};

// Backward's buffers, R rows in expert order.
struct MoeExpertGrads {
  const float* dy = nullptr;  // (R, c) the outputs' gradient
  float* dh = nullptr;        // (R, fe) scratch
  float* dgate = nullptr;     // (R, fe) scratch
  float* dup = nullptr;       // (R, fe) scratch
  float* dxs = nullptr;       // (R, c) the inputs' gradient, overwritten
};

// One expert's forward: gate, up, h and y (and the adapters' xa) of its rows.
void moe_expert_forward(Backend& be, const MoeExpert& e, const MoeExpertActs& a);
// One expert's backward: dxs of its rows, its adapters' gradients accumulated.
void moe_expert_backward(Backend& be, const MoeExpert& e, const MoeExpertActs& a,
                         const MoeExpertGrads& g);

}  // namespace anvil::backend
