#include "backend/backend_support.h"

#include "backend/backend.h"
#include "core/error.h"

namespace anvil::backend {

BackendKind backend_auto() {
  return cuda_device_count() > 0 ? BackendKind::backend_cuda : BackendKind::backend_cpu;
}

std::optional<std::string> backend_lora_rank_problem(BackendKind kind, std::int64_t rank) {
  const BackendSupport& s = backend_support(kind);
  if (s.max_lora_rank == 0 || rank <= s.max_lora_rank) return std::nullopt;
  return str_cat(rank, " is more than ", "the ", s.name, " backend's LoRA kernels take (at most ", s.max_lora_rank,
                 "); use a rank of at most ", s.max_lora_rank, " or parallel.backend: cpu");
}

std::optional<std::string> backend_head_dim_problem(BackendKind kind, std::int64_t head_dim) {
  const BackendSupport& s = backend_support(kind);
  if (s.head_dims[0] == 0 || head_dim == s.head_dims[0] || head_dim == s.head_dims[1]) return std::nullopt;
  return str_cat("head_dim is ", head_dim, "; ", "the ", s.name, " backend's attention kernels take head_dim ",
                 s.head_dims[0], " or ", s.head_dims[1], " (use parallel.backend: cpu)");
}

}  // namespace anvil::backend
