// OpenBLAS picks its kernels from the CPU model at load time. Under some hypervisors the
// model is unknown and it falls back to the SSE3 "Prescott" kernels: sgemm then runs at a
// fifth of its speed on an AVX-512 machine (measured: 64 vs 290 GFLOP/s on 2 cores). The
// choice is made before main() from OPENBLAS_CORETYPE, so the fix is to set that and
// start the program again; blas_core_override() says which core to ask for.
#include <cstdlib>
#include <cstring>
#include <string>

#include "backend/backend.h"

extern "C" char* openblas_get_corename(void);

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

}  // namespace anvil::backend
