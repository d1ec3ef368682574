// OpenBLAS picks its kernels from the CPU model at load time. Under some hypervisors the
// model is unknown and it falls back to the SSE3 "Prescott" kernels: sgemm then runs at a
// fifth of its speed on an AVX-512 machine (measured: 64 vs 290 GFLOP/s on 2 cores). The
// choice is made before main() from OPENBLAS_CORETYPE, so the fix is to set that and
// start the program again; blas_core_override() says which core to ask for.
//
// Several ranks on one node must share its cores: each OpenBLAS and OpenMP team spinning
// on every core would oversubscribe the node many times over.
#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "backend/backend.h"

extern "C" char* openblas_get_corename(void);
extern "C" void openblas_set_num_threads(int n);

namespace anvil::backend {

std::string blas_core_override() {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return {};  // the user decided
  const char* core = openblas_get_corename();
  if (core == nullptr) return {};
  for (const char* generic : {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Katmai"}) {
    if (std::strcmp(core, generic) != 0) continue;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
      return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
    return {};
  }
  return {};
}

void cpu_threads_set(int n) {
  n = std::max(n, 1);
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int cpu_threads_for_rank(int local_ranks) {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  int allowed = static_cast<int>(online > 0 ? online : 1);
  if (sched_getaffinity(0, sizeof(mask), &mask) == 0) allowed = CPU_COUNT(&mask);
  const bool whole_node = online > 0 && allowed >= online;
  const int share = whole_node ? allowed / std::max(local_ranks, 1) : allowed;
  return std::max(share, 1);
}

}  // namespace anvil::backend
