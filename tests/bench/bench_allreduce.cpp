// All-reduce bandwidth of the world as one tensor-parallel group, through the Runtime a
// training run gets (so on GPUs: each rank's GPU by UUID, NCCL over NVLink/PCIe; on CPU
// ranks: MPI). Reported as nccl-tests does: algbw = bytes / time, and the bus bandwidth
// busbw = algbw * 2 (n - 1) / n, comparable across rank counts. Before timing it checks the
// sum (rank r fills r + 1, every element must come back n (n + 1) / 2), so a path that
// corrupts data fails. One JSON line per size on rank 0. slurm/preflight.sh runs it.
//
//   mpirun -np 4 bench_allreduce [--backend auto|cpu|cuda] [--comm auto|nccl|mpi]
//                                [--mib 256] [--reps 20] [--min-busbw GBPS]
// --min-busbw: exit 1 when the largest size's bus bandwidth is below GBPS (GB/s, 1e9 B/s).
// Bad arguments: exit 2. The GPU path is compiled, never run (no GPU here).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "comm/mpi_session.h"
#include "core/error.h"
#include "runtime/runtime.h"

namespace {

using namespace anvil;

struct BenchArgs {
  runtime::RuntimeSpec spec;
  double max_mib = 256;
  int reps = 20;
  double min_busbw = 0;
};

BenchArgs bench_args(int argc, char** argv, int world) {
  BenchArgs a;
  a.spec.tp = world;  // one group over every rank: the node's GPUs, as a TP group uses them
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    ANVIL_CHECK_INPUT(i + 1 < argc, "bench_allreduce: ", k, " needs a value");
    const std::string v = argv[++i];
    if (k == "--backend") {
      ANVIL_CHECK_INPUT(v == "auto" || v == "cpu" || v == "cuda",
                        "bench_allreduce: --backend: auto, cpu or cuda, got ", v);
      a.spec.backend = v == "cpu"    ? backend::BackendKind::backend_cpu
                       : v == "cuda" ? backend::BackendKind::backend_cuda
                                     : backend::BackendKind::backend_auto;
    } else if (k == "--comm") {
      ANVIL_CHECK_INPUT(v == "auto" || v == "nccl" || v == "mpi",
                        "bench_allreduce: --comm: auto, nccl or mpi, got ", v);
      a.spec.comm = v == "nccl" ? comm::CommKind::comm_nccl
                    : v == "mpi" ? comm::CommKind::comm_mpi
                                 : comm::CommKind::comm_auto;
    } else if (k == "--mib") {
      a.max_mib = std::atof(v.c_str());
      ANVIL_CHECK_INPUT(a.max_mib > 0, "bench_allreduce: --mib must be positive, got ", v);
    } else if (k == "--reps") {
      a.reps = std::atoi(v.c_str());
      ANVIL_CHECK_INPUT(a.reps > 0, "bench_allreduce: --reps must be positive, got ", v);
    } else if (k == "--min-busbw") {
      a.min_busbw = std::atof(v.c_str());
    } else {
      throw_user_error("bench_allreduce: unknown option ", k,
                       " (options: --backend, --comm, --mib, --reps, --min-busbw)");
    }
  }
  return a;
}

// Every element of one all-reduce of rank + 1 must be n (n + 1) / 2 (exact in f32).
void sum_check(runtime::Runtime& rt, float* buf, std::int64_t n) {
  const int p = rt.world_size();
  std::vector<float> host(static_cast<std::size_t>(n), static_cast<float>(rt.world_rank() + 1));
  rt.backend().copy_from_host(buf, host.data(), host.size() * sizeof(float));
  rt.tp().allreduce_sum(buf, n);
  rt.backend().copy_to_host(host.data(), buf, host.size() * sizeof(float));
  const float want = static_cast<float>(p * (p + 1) / 2);
  for (std::int64_t i = 0; i < n; ++i)
    ANVIL_CHECK(host[static_cast<std::size_t>(i)] == want, "bench_allreduce: element ", i, " on rank ",
                rt.world_rank(), " is ", host[static_cast<std::size_t>(i)], " after the all-reduce, not ", want);
}

// Seconds per all-reduce of n floats, the slowest rank's, after two untimed ones.
double allreduce_seconds(runtime::Runtime& rt, float* buf, std::int64_t n, int reps) {
  for (int i = 0; i < 2; ++i) rt.tp().allreduce_sum(buf, n);
  rt.backend().synchronize();
  rt.world().barrier();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) rt.tp().allreduce_sum(buf, n);
  rt.backend().synchronize();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
  rt.world().allreduce(&s, 1, DType::dtype_f64, comm::ReduceOp::reduce_max);
  return s;
}

}  // namespace

int main(int argc, char** argv) try {
  auto session = std::make_unique<comm::MpiSession>();
  const BenchArgs args = bench_args(argc, argv, session->world_size());
  runtime::Runtime rt(std::move(session), args.spec);
  const int p = rt.world_size();
  const auto max_n = static_cast<std::int64_t>(args.max_mib * 1024 * 1024 / sizeof(float));
  auto* buf = static_cast<float*>(rt.backend().memory_alloc(static_cast<std::size_t>(max_n) * sizeof(float)));
  sum_check(rt, buf, max_n);
  // 1 MiB, then 4x larger up to the largest (--mib): small sizes show latency, the largest
  // the bandwidth that --min-busbw judges.
  std::vector<std::int64_t> sizes{std::min<std::int64_t>(max_n, 1 << 18)};
  while (sizes.back() * 4 < max_n) sizes.push_back(sizes.back() * 4);
  if (sizes.back() != max_n) sizes.push_back(max_n);
  double busbw = 0;
  for (const std::int64_t n : sizes) {
    const double s = allreduce_seconds(rt, buf, n, args.reps);
    const double bytes = static_cast<double>(n) * sizeof(float);
    busbw = bytes / s * 2.0 * (p - 1) / p / 1e9;
    const nlohmann::json row{{"ranks", p},        {"device", rt.description()},       {"bytes", bytes},
                             {"time_us", s * 1e6}, {"algbw_gbps", bytes / s / 1e9}, {"busbw_gbps", busbw}};
    if (rt.world_rank() == 0) std::printf("%s\n", row.dump().c_str());
  }
  rt.backend().memory_free(buf);
  if (args.min_busbw > 0 && busbw < args.min_busbw) {
    if (rt.world_rank() == 0)
      std::fprintf(stderr, "bench_allreduce: bus bandwidth %.2f GB/s is below --min-busbw %.2f GB/s\n", busbw,
                   args.min_busbw);
    return 1;
  }
  return 0;
} catch (const std::exception& e) {
  return anvil::comm::exit_after_error(e);
}
