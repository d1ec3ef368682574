// What each backend's kernels cover, as one table: config validation reads it
// (train/config_check.cpp), so that an unsupported LoRA rank or head_dim on the chosen
// backend is a config error naming its key (exit 2) before any weight is read; the CUDA
// backend's own guards read the same numbers (cuda/cuda_backend.h).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>

namespace anvil::backend {

// parallel.backend; auto is resolved by backend_auto() (and by the Runtime).
enum class BackendKind { backend_cpu, backend_cuda, backend_auto };

struct BackendSupport {
  const char* name;                // "CPU", "CUDA": named in messages
  int max_lora_rank;               // 0: any
  std::array<int, 2> head_dims;    // the attention head_dims it takes; {0, 0}: any
};

// The CPU backend is the fp32 reference and takes any shape. The CUDA kernels instantiate
// only what is used (kernels/lora.cu: ranks up to 64; kernels/attention.cu: head_dim 64
// and 128), as FlashAttention does. Both run mixture-of-experts blocks (kernels/moe.cu).
inline constexpr BackendSupport kCpuSupport{"CPU", 0, {0, 0}};
inline constexpr BackendSupport kCudaSupport{"CUDA", 64, {64, 128}};

// `kind` is cpu or cuda (auto resolved first).
constexpr const BackendSupport& backend_support(BackendKind kind) {
  return kind == BackendKind::backend_cuda ? kCudaSupport : kCpuSupport;
}

// What parallel.backend: auto means on this machine: cuda when this build has CUDA and a
// device is visible, cpu otherwise.
BackendKind backend_auto();

// The problem with LoRA rank `rank` on `kind` (a message for the key lora.rank), or none.
std::optional<std::string> backend_lora_rank_problem(BackendKind kind, std::int64_t rank);
// The problem with attention head_dim `head_dim` on `kind` (a message about the model's
// config.json), or none.
std::optional<std::string> backend_head_dim_problem(BackendKind kind, std::int64_t head_dim);

}  // namespace anvil::backend
