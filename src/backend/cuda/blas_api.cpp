#include "backend/cuda/blas_api.h"

#include <dlfcn.h>

#include <string>

#include "core/error.h"

namespace anvil::backend {

namespace {

#define ANVIL_BLAS_STR2(x) #x
#define ANVIL_BLAS_STR(x) ANVIL_BLAS_STR2(x)

// The soname first (the loader's search: LD_LIBRARY_PATH, the executable's RUNPATH, the
// system cache), then the toolkit directory this build was linked against.
void* open_library(const char* soname, const char* toolkit_dir) {
  if (void* h = dlopen(soname, RTLD_NOW | RTLD_GLOBAL)) return h;
  const std::string first_error = dlerror();
  const std::string path = std::string(toolkit_dir) + "/" + soname;
  if (void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL)) return h;
  throw_user_error("the CUDA backend needs ", soname, " (cuBLAS, from the CUDA toolkit): ", first_error,
                   "; put its directory on LD_LIBRARY_PATH, or run from a bundle (scripts/bundle.sh)");
}

template <typename Fn>
void resolve(Fn& fn, void* library, const char* soname, const char* symbol) {
  fn = reinterpret_cast<Fn>(dlsym(library, symbol));
  if (!fn) throw_user_error(soname, " has no ", symbol, ": a cuBLAS older than this build's CUDA ", ANVIL_CUDA_MAJOR);
}

BlasApi load() {
  BlasApi api;
  void* lt = open_library(ANVIL_CUBLASLT_SONAME, ANVIL_CUDA_LIBRARY_DIR);  // cuBLAS needs it first
  void* blas = open_library(ANVIL_CUBLAS_SONAME, ANVIL_CUDA_LIBRARY_DIR);
#define ANVIL_BLAS_RESOLVE(name) resolve(api.name, blas, ANVIL_CUBLAS_SONAME, ANVIL_BLAS_STR(name));
#define ANVIL_BLASLT_RESOLVE(name) resolve(api.name, lt, ANVIL_CUBLASLT_SONAME, ANVIL_BLAS_STR(name));
  ANVIL_BLAS_FUNCTIONS(ANVIL_BLAS_RESOLVE)
  ANVIL_BLASLT_FUNCTIONS(ANVIL_BLASLT_RESOLVE)
#undef ANVIL_BLAS_RESOLVE
#undef ANVIL_BLASLT_RESOLVE
  return api;
}

}  // namespace

const BlasApi& blas_api() {
  static const BlasApi api = load();
  return api;
}

}  // namespace anvil::backend
