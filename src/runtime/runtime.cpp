#include "runtime/runtime.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "model/tp_shard.h"
#include "runtime/group_comm.h"
#include "runtime/placement.h"

#if ANVIL_WITH_CUDA
#include <cuda_runtime.h>

#include "comm/nccl_comm.h"
#endif

namespace anvil::runtime {

namespace {

using backend::BackendKind;
using comm::CommKind;

// Device buffers copied through host memory by the backend that owns them.
class BackendStaging final : public comm::DeviceStaging {
 public:
  explicit BackendStaging(backend::Backend& be) : be_(be) {}
  void to_host(void* host, const void* device, std::size_t bytes) override { be_.copy_to_host(host, device, bytes); }
  void to_device(void* device, const void* host, std::size_t bytes) override {
    be_.copy_from_host(device, host, bytes);
  }

 private:
  backend::Backend& be_;
};

// The device half of a group: NCCL on the backend's stream, or the host Comm staged.
std::unique_ptr<comm::Comm> device_comm(CommKind kind, comm::Comm& host, backend::Backend& be,
                                        comm::DeviceStaging& staging) {
  if (kind == CommKind::comm_mpi) return comm::staged_comm(host, staging);
#if ANVIL_WITH_CUDA
  return comm::nccl_comm_create(host, static_cast<cudaStream_t>(be.native_stream()), host.name());
#else
  (void)be;
  ANVIL_CHECK(false, "parallel.comm: nccl in a build without CUDA");
#endif
}

// The node this rank runs on, as a fixed-size name for an allgather. ANVIL_NODE_SIZE=N
// (tests) pretends that every N consecutive world ranks are one node, "node-<k>".
constexpr int kNodeNameBytes = 64;
std::vector<char> node_name(int world_rank) {
  std::vector<char> name(kNodeNameBytes, '\0');
  if (const char* sim = std::getenv("ANVIL_NODE_SIZE"); sim && std::atoi(sim) > 0) {
    const std::string fake = str_cat("node-", world_rank / std::atoi(sim));
    std::memcpy(name.data(), fake.data(), std::min<std::size_t>(fake.size(), kNodeNameBytes - 1));
  } else {
    gethostname(name.data(), kNodeNameBytes - 1);
  }
  return name;
}

// The CPUs this process may run on (its affinity mask).
std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> out;
  if (sched_getaffinity(0, sizeof set, &set) != 0) return out;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) out.push_back(c);
  return out;
}

}  // namespace

std::string cpu_ranges(const std::vector<int>& cpus) {
  std::string out;
  for (std::size_t i = 0; i < cpus.size();) {
    std::size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    out += str_cat(out.empty() ? "" : ",", cpus[i]);
    if (j > i) out += str_cat("-", cpus[j]);
    i = j + 1;
  }
  return out;
}

std::string numa_nodes_of(const std::vector<int>& cpus) {
  std::vector<int> nodes;
  for (const int c : cpus) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(str_cat("/sys/devices/system/cpu/cpu", c), ec)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("node", 0) != 0 || name.size() == 4) continue;
      const int n = std::atoi(name.c_str() + 4);
      if (std::find(nodes.begin(), nodes.end(), n) == nodes.end()) nodes.push_back(n);
    }
  }
  std::sort(nodes.begin(), nodes.end());
  return cpu_ranges(nodes);
}

void launch_check_world(int world_size) {
  // mpirun (and its orted, also under Slurm) says how many ranks it started; a direct srun
  // launch says how many tasks. A world of another size is MPI that did not wire up: each
  // task alone (srun without PMIx) would train and write the same checkpoints.
  if (const char* n = std::getenv("OMPI_COMM_WORLD_SIZE"); n && std::atoi(n) != world_size)
    throw_user_error("mpirun started ", n, " processes, but MPI's world has ", world_size,
                     " rank(s): the mpirun and the MPI library anvil runs with do not match "
                     "(use the mpirun of the Open MPI that anvil was built with or bundled)");
  if (std::getenv("OMPI_COMM_WORLD_SIZE")) return;
  if (const char* n = std::getenv("SLURM_STEP_NUM_TASKS"); n && std::atoi(n) != world_size)
    throw_user_error("srun started ", n, " tasks, but MPI's world has ", world_size,
                     " rank(s): every task would run alone; launch with srun --mpi=pmix (see "
                     "slurm/README.md) or mpirun");
}

void launch_check_tp_node(const comm::ProcessGrid& grid) {
  if (grid.tp_size() == 1) return;
  const std::vector<char> mine = node_name(grid.world_rank());
  std::vector<char> all(static_cast<std::size_t>(kNodeNameBytes * grid.tp_size()));
  grid.tp().allgather(mine.data(), all.data(), kNodeNameBytes, DType::dtype_i8);
  std::string nodes;
  bool split = false;
  for (int r = 0; r < grid.tp_size(); ++r) {
    const char* name = all.data() + r * kNodeNameBytes;
    split = split || std::strncmp(name, all.data(), kNodeNameBytes) != 0;
    nodes += str_cat(r ? ", " : "", "tp rank ", r, " on ", name);
  }
  ANVIL_CHECK_INPUT(!split, "parallel.tp = ", grid.tp_size(),
                    ": a tensor-parallel group must sit on one node (its collectives run every "
                    "layer), but the group of world rank ", grid.world_rank(), " spans nodes (",
                    nodes, "); place consecutive ranks on a node (srun --distribution=block, "
                    "mpirun --map-by core) and keep tp at most the GPUs per node");
}

namespace {

// 32 hex digits from the OS's random source: a token no earlier run (nor another job on
// the same directory) left behind.
std::string random_token() {
  std::random_device source;
  std::string out;
  for (int i = 0; i < 4; ++i) {
    char word[9];
    std::snprintf(word, sizeof word, "%08x", static_cast<unsigned>(source()));
    out += word;
  }
  return out;
}

// Where this rank looks for the file `name` that world rank 0, on node `writer_node`, wrote
// into `dir` (see ANVIL_OUTPUT_DIR_NODE_LOCAL in runtime.h).
std::filesystem::path seen_from_here(int world_rank, const std::string& writer_node, const std::string& dir,
                                     const std::string& name) {
  const char* node_local = std::getenv("ANVIL_OUTPUT_DIR_NODE_LOCAL");
  if (node_local && std::string(node_local) == "1") {
    const std::string mine = node_name(world_rank).data();
    if (mine != writer_node) return std::filesystem::path(dir) / mine / name;
  }
  return std::filesystem::path(dir) / name;
}

}  // namespace

void launch_check_shared_dir(comm::Comm& world, const std::string& dir) {
  // Rank 0 writes the token, then broadcasts it with its node's name and whether the write
  // worked: every rank opens the file after it was closed (NFS's close-to-open order).
  constexpr int kTokenBytes = 32;
  std::vector<char> note(kTokenBytes + 1 + kNodeNameBytes, '\0');  // token, written?, rank 0's node
  if (world.rank() == 0) {
    const std::string t = random_token();
    std::memcpy(note.data(), t.data(), kTokenBytes);
    std::ofstream out(std::filesystem::path(dir) / (".anvil-shared-check-" + t));
    out << t;
    out.close();
    note[kTokenBytes] = out ? 1 : 0;
    const std::vector<char> node = node_name(0);
    std::memcpy(note.data() + kTokenBytes + 1, node.data(), kNodeNameBytes);
  }
  world.broadcast(note.data(), static_cast<std::int64_t>(note.size()), DType::dtype_i8, 0);
  const std::string token(note.data(), kTokenBytes);
  const char* writer = note.data() + kTokenBytes + 1;
  const std::string writer_node(writer, strnlen(writer, kNodeNameBytes - 1));
  const std::string name = ".anvil-shared-check-" + token;
  ANVIL_CHECK_INPUT(note[kTokenBytes] == 1, "output_dir: world rank 0 cannot write a file into ", dir);
  // Every rank's answer (the last byte of its node name) and node, so that every rank throws
  // the same error naming them all.
  std::ifstream in(seen_from_here(world.rank(), writer_node, dir, name));
  std::string seen;
  std::getline(in, seen);
  std::vector<char> mine = node_name(world.rank());
  mine.back() = seen == token ? 1 : 0;
  std::vector<char> all(static_cast<std::size_t>(kNodeNameBytes) * static_cast<std::size_t>(world.size()));
  world.allgather(mine.data(), all.data(), kNodeNameBytes, DType::dtype_i8);
  const std::string path = (std::filesystem::path(dir) / name).string();
  if (world.rank() == 0) {
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
  }
  std::string blind;
  for (int r = 0; r < world.size(); ++r) {
    const char* node = all.data() + static_cast<std::ptrdiff_t>(r) * kNodeNameBytes;
    if (node[kNodeNameBytes - 1] == 1) continue;
    blind += str_cat(blind.empty() ? "" : ", ", "world rank ", r, " on host ",
                     std::string(node, strnlen(node, kNodeNameBytes - 1)));
  }
  ANVIL_CHECK_INPUT(blind.empty(), "output_dir must be on a shared filesystem: world rank 0 on host ", writer_node,
                    " wrote ", path, " but it is not visible to ", blind,
                    "; put output_dir on a filesystem that every node mounts at the same path "
                    "(slurm/train.sbatch uses $SCRATCH when set)");
}

BackendKind backend_resolve(BackendKind requested) {
  if (requested == BackendKind::backend_auto) return backend::backend_auto();
  if (requested == BackendKind::backend_cuda && backend::cuda_device_count() == 0)
    throw_user_error("parallel.backend: cuda, but ",
#if ANVIL_WITH_CUDA
                     "no CUDA device is visible to this process (check CUDA_VISIBLE_DEVICES, the driver "
                     "and the Slurm --gpus request)",
#else
                     "this anvil was built without CUDA (nvcc was not found at build time)",
#endif
                     "; use parallel.backend: cpu or auto");
  return requested;
}

Runtime::Runtime(std::unique_ptr<comm::MpiSession> session, const RuntimeSpec& spec)
    : session_(std::move(session)),
      local_rank_(session_ ? session_->local_rank() : 0),
      local_size_(session_ ? session_->local_size() : 1),
      grid_(session_ || comm::mpi_running() ? comm::mpi_comm_world() : comm::self_comm("world"), spec.tp,
            spec.ep),
      backend_kind_(backend_resolve(spec.backend)) {
  launch_check_world(grid_.world_size());
  launch_check_tp_node(grid_);
  world_ = &grid_.world();
  tp_ = &grid_.tp();
  dp_ = &grid_.dp();
  ep_ = &grid_.ep();
  edp_ = &grid_.edp();
  // Ranks sharing a node share its cores (the CPU backend's, and the data preparation's
  // on any backend), unless the user set OMP_NUM_THREADS.
  if (std::getenv("OMP_NUM_THREADS") == nullptr) {
    const int threads = backend::cpu_threads_for_rank(local_size_);
    backend::cpu_threads_set(threads);
    if (local_size_ > 1) log_info(local_size_, " ranks on this node: ", threads, " CPU threads each");
  }
  // Backend, GPU and communicator, decided job-wide from every rank's view (placement.h).
  RankView mine{node_name(world_rank()).data(), backend_kind_, {}};
  if (backend_kind_ == BackendKind::backend_cuda) mine.gpus = backend::cuda_visible_gpus();
  const JobPlacement placement = placement_resolve(placement_gather(grid_.world(), mine), spec.comm);
  if (backend_kind_ == BackendKind::backend_cpu) {
    backend_ = backend::make_cpu_backend();
    description_ = "cpu";
    return;  // host memory is backend memory: the grid's Comms serve both
  }
  const GpuChoice& gpu = placement.gpu[static_cast<std::size_t>(world_rank())];
  const CommKind kind = placement.comm;
  if (!placement.shared.empty() && world_rank() == 0)
    log_info(placement.shared, ": NCCL needs a GPU per rank, so the groups talk through host memory (MPI)");
  backend_ = backend::make_cuda_backend(gpu.ordinal);
  description_ = str_cat("cuda device ", gpu.ordinal, gpu.sharers > 1 ? str_cat(" (shared by ", gpu.sharers, " ranks)") : "",
                         ", ", kind == CommKind::comm_nccl ? "nccl" : "mpi (host-staged)");
  staging_ = std::make_unique<BackendStaging>(*backend_);
  // The world's device half is always staged: nothing collects device buffers over the
  // whole world yet, and an NCCL communicator for it would cost an init for nothing.
  device_world_ = comm::staged_comm(grid_.world(), *staging_);
  device_tp_ = device_comm(kind, grid_.tp(), *backend_, *staging_);
  device_dp_ = device_comm(kind, grid_.dp(), *backend_, *staging_);
  // The expert groups only under ep (no NCCL init for nothing): at ep 1, edp is dp's ranks.
  if (ep_size() > 1) {
    device_ep_ = device_comm(kind, grid_.ep(), *backend_, *staging_);
    device_edp_ = device_comm(kind, grid_.edp(), *backend_, *staging_);
  }
  backend::Backend* be = backend_.get();
  const IsDeviceMemory is_device = [be](const void* p) { return be->is_device_memory(p); };
  group_world_ = group_comm(grid_.world(), *device_world_, is_device);
  group_tp_ = group_comm(grid_.tp(), *device_tp_, is_device);
  group_dp_ = group_comm(grid_.dp(), *device_dp_, is_device);
  if (ep_size() > 1) {
    group_ep_ = group_comm(grid_.ep(), *device_ep_, is_device);
    group_edp_ = group_comm(grid_.edp(), *device_edp_, is_device);
  }
  world_ = group_world_.get();
  tp_ = group_tp_.get();
  dp_ = group_dp_.get();
  ep_ = ep_size() > 1 ? group_ep_.get() : &grid_.ep();  // one rank: its calls move nothing
  edp_ = ep_size() > 1 ? group_edp_.get() : dp_;
}

// Members go in reverse order: the group Comms before the Comms they use, the backend
// (whose stream NCCL enqueues on) after them, the MPI session last.
Runtime::~Runtime() = default;

std::string Runtime::binding_line() const {
  const std::vector<int> cpus = allowed_cpus();
  const std::string numa = numa_nodes_of(cpus);
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  const std::string device = backend_->device_identity();
  return str_cat("rank ", world_rank(), "/", world_size(), " on ", node_name(world_rank()).data(), ", local ",
                 local_rank_, "/", local_size_, ", tp ", tp_rank(), "/", tp_size(),
                 ep_size() > 1 ? str_cat(", ep ", ep_rank(), "/", ep_size()) : std::string(), ", dp ", dp_rank(), "/",
                 dp_size(), "; cpus ", cpu_ranges(cpus), ", numa ", numa.empty() ? "?" : numa,
                 "; CUDA_VISIBLE_DEVICES=", visible ? visible : "(unset)", "; ", description_,
                 device.empty() ? "" : ", " + device);
}

std::vector<std::string> Runtime::binding_report() const {
  constexpr int kLineBytes = 512;
  std::vector<char> mine(kLineBytes, '\0');
  const std::string line = binding_line();
  std::memcpy(mine.data(), line.data(), std::min<std::size_t>(line.size(), kLineBytes - 1));
  std::vector<char> all(static_cast<std::size_t>(kLineBytes) * static_cast<std::size_t>(world_size()));
  grid_.world().allgather(mine.data(), all.data(), kLineBytes, DType::dtype_i8);
  std::vector<std::string> out;
  if (world_rank() != 0) return out;
  for (int r = 0; r < world_size(); ++r) out.emplace_back(all.data() + static_cast<std::ptrdiff_t>(r) * kLineBytes);
  return out;
}

const model::TpGroup& Runtime::tp_group(const model::ModelSpec& spec) {
  if (tp_group_) return *tp_group_;
  model::TpGroup group;
  group.shard = model::tp_shard(spec, tp_rank(), tp_size());
  if (ep_size() > 1) {
    model::ep_shard_set(group.shard, spec, ep_rank(), ep_size());
    group.ep_comm = ep_;
  }
  group.comm = tp_;
  // Ranks holding copies of the same KV heads (tp > n_kv_heads) reduce their KV gradients
  // among themselves.
  if (group.shard.kv_replicas > 1) {
    kv_comm_ = tp_->split(static_cast<int>(group.shard.kv_head_first), tp_rank(), "tp-kv");
    group.kv_comm = kv_comm_.get();
  }
  tp_group_ = group;
  return *tp_group_;
}

}  // namespace anvil::runtime
