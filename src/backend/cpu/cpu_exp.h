// exp over float arrays for the CPU backend's softmaxes (attention, the LM head's loss) and
// SwiGLU. std::exp is a call per element (4-5% of an MoE LoRA step went to glibc's expf);
// these loops vectorize, one version per x86 instruction set chosen at load time.
//
// The result is within 2 ulp of the correctly rounded exp for x in [-87.33, 88.72] (tested
// against double precision over that range); below it the result is 0 (exp is subnormal
// there, at most 1.2e-38), above it +inf, and NaN stays NaN. The file is built without FMA
// contraction, so every instruction set gives the same bits as exp_scalar: a run's numbers do
// not depend on which x86 CPU a rank lands on.
#pragma once

#include <cstdint>

namespace anvil::backend {

// y[j] = exp(x[j] - shift) for j < n; y may be x.
void exp_shifted(const float* x, float shift, float* y, std::int64_t n);
// y[j] = exp(-x[j]) for j < n; y may be x.
void exp_negated(const float* x, float* y, std::int64_t n);
// One element, the same formula and bits as the array functions (their test's reference).
float exp_scalar(float x);

}  // namespace anvil::backend
