// CpuBackend: gradient norm, scaling and the AdamW step.
#include <algorithm>
#include <array>
#include <cmath>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"

namespace anvil::backend {

// A fixed number of contiguous chunks summed in parallel, then the partial sums in order:
// the result does not depend on the thread count.
double CpuBackend::sum_squares(const float* x, i64 n) {
  constexpr i64 kChunks = 64;
  std::array<double, kChunks> part{};
  const i64 chunk = (n + kChunks - 1) / kChunks;
#pragma omp parallel for schedule(static) if (n >= kParallelWork)
  for (i64 c = 0; c < kChunks; ++c) {
    const i64 lo = std::min(n, c * chunk), hi = std::min(n, lo + chunk);
    double s = 0.0;
    for (i64 i = lo; i < hi; ++i) s += static_cast<double>(x[i]) * x[i];
    part[static_cast<std::size_t>(c)] = s;
  }
  double total = 0.0;
  for (double s : part) total += s;
  return total;
}

void CpuBackend::scale(float* x, float s, i64 n) {
#pragma omp parallel for schedule(static) if (n >= kParallelWork)
  for (i64 i = 0; i < n; ++i) x[i] *= s;
}

// torch.optim.AdamW (single-tensor path), with its scalars computed in double and applied
// in fp32 as PyTorch does:
//   p *= 1 - lr*wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
//   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
void CpuBackend::adamw_update(float* p, const float* g, float* m, float* v, i64 n,
                              const AdamwArgs& args) {
  ANVIL_CHECK(args.step >= 1, "AdamW step is 1-based, got ", args.step);
  const double lr = args.lr, b1 = args.beta1, b2 = args.beta2;
  const auto t = static_cast<double>(args.step);
  const auto decay = static_cast<float>(1.0 - lr * static_cast<double>(args.weight_decay));
  const auto c1 = static_cast<float>(1.0 - b1);
  const auto c2 = static_cast<float>(1.0 - b2);
  const auto step_size = static_cast<float>(lr / (1.0 - std::pow(b1, t)));
  const auto bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(b2, t)));
  const float beta1 = args.beta1, beta2 = args.beta2, eps = args.eps;
#pragma omp parallel for schedule(static) if (n * 4 >= kParallelWork)
  for (i64 i = 0; i < n; ++i) {
    const float gi = g[i];
    const float mi = beta1 * m[i] + c1 * gi;
    const float vi = beta2 * v[i] + c2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float denom = std::sqrt(vi) / bc2_sqrt + eps;
    p[i] = p[i] * decay - step_size * mi / denom;
  }
}

}  // namespace anvil::backend
