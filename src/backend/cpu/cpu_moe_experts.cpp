// CpuBackend: a sparse layer's experts side by side on the OpenMP threads.
//
// An expert gets about n·k/E rows (128 in the issue 19 benchmark), so its products are
// small (128 x 192 x 512 and rank-16 slivers): split over two threads, each sgemm spends
// much of its time starting and joining them and packing, and the step ran at a third of
// sgemm's large-matrix rate (tests/bench/RESULTS.md). Here each thread takes whole experts
// and runs their products single-threaded (OpenBLAS's OpenMP build does inside a parallel
// region). An expert's rows and adapter gradients are its own, so which thread runs it
// changes nothing in the results: they are the same run to run.
#include <omp.h>

#include <algorithm>
#include <exception>
#include <numeric>
#include <vector>

#include "backend/cpu/cpu_backend.h"

namespace anvil::backend {

namespace {

// The experts' indices into order (count), most rows first: dynamic scheduling then ends on
// the small ones, which evens out the threads' finishing times.
void largest_first(i64* order, const MoeExpert* experts, i64 count) {
  std::iota(order, order + count, i64{0});
  std::sort(order, order + count, [&](i64 x, i64 y) {  // ties by index: no allocation, one order
    return experts[x].rows != experts[y].rows ? experts[x].rows > experts[y].rows : x < y;
  });
}

// Runs step(worker, expert) for every expert over the threads, each thread with its own
// worker backend; the first exception thrown inside is rethrown after the loop.
template <typename Step>
void experts_side_by_side(std::vector<std::unique_ptr<CpuBackend>>& workers, i64* order,
                          const MoeExpert* experts, i64 count, Step step) {
  largest_first(order, experts, count);
  std::exception_ptr failure;
#pragma omp parallel for schedule(dynamic, 1) num_threads(static_cast<int>(workers.size()))
  for (i64 i = 0; i < count; ++i) {
    try {
      step(*workers[static_cast<std::size_t>(omp_get_thread_num())], experts[order[i]]);
    } catch (...) {
#pragma omp critical(anvil_moe_experts_failure)
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);
}

// Whether the experts are worth spreading: more than one thread and one expert, and not
// already inside a parallel region.
bool spread(int threads, i64 count) { return threads > 1 && count > 1 && !omp_in_parallel(); }

}  // namespace

std::vector<std::unique_ptr<CpuBackend>>& CpuBackend::expert_workers(int threads) {
  while (static_cast<int>(expert_workers_.size()) < threads) expert_workers_.push_back(std::make_unique<CpuBackend>());
  expert_workers_.resize(static_cast<std::size_t>(threads));
  return expert_workers_;
}

void CpuBackend::moe_experts_forward(const MoeExpert* experts, i64 count, const MoeExpertActs& a) {
  const int threads = omp_get_max_threads();
  if (!spread(threads, count)) {
    Backend::moe_experts_forward(experts, count, a);
    return;
  }
  experts_side_by_side(expert_workers(threads), scratch(expert_order_, count), experts, count,
                       [&](CpuBackend& be, const MoeExpert& e) { moe_expert_forward(be, e, a); });
}

void CpuBackend::moe_experts_backward(const MoeExpert* experts, i64 count, const MoeExpertActs& a,
                                      const MoeExpertGrads& g) {
  const int threads = omp_get_max_threads();
  if (!spread(threads, count)) {
    Backend::moe_experts_backward(experts, count, a, g);
    return;
  }
  experts_side_by_side(expert_workers(threads), scratch(expert_order_, count), experts, count,
                       [&](CpuBackend& be, const MoeExpert& e) { moe_expert_backward(be, e, a, g); });
}

}  // namespace anvil::backend
