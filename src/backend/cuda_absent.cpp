// make_cuda_backend in a build without nvcc: the request is the user's to change.
#include "backend/backend.h"
#include "core/error.h"

namespace anvil::backend {

std::unique_ptr<Backend> make_cuda_backend(int device) {
  throw_user_error("parallel.backend: cuda was asked for (device ", device,
                   "), but this anvil was built without CUDA (nvcc was not found at build time); "
                   "rebuild on a machine with the CUDA toolkit or use parallel.backend: cpu");
}

int cuda_device_count() { return 0; }

std::vector<std::string> cuda_visible_gpus() { return {}; }

}  // namespace anvil::backend
