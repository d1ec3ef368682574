#include "runtime/placement.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"

namespace anvil::runtime {

namespace {

using backend::BackendKind;
using comm::CommKind;

const char* backend_name(BackendKind k) { return backend::backend_support(k).name; }

// "node-0 (ranks 0-3), node-1 (ranks 4, 5)": where the ranks in `which` run.
std::string nodes_of(const std::vector<RankView>& ranks, const std::vector<int>& which) {
  std::map<std::string, std::vector<int>> by_node;
  for (const int r : which) by_node[ranks[static_cast<std::size_t>(r)].node].push_back(r);
  std::string out;
  for (const auto& [node, rs] : by_node) {
    std::string list;
    for (const int r : rs) list += str_cat(list.empty() ? "" : ", ", r);
    out += str_cat(out.empty() ? "" : "; ", node, " (rank", rs.size() > 1 ? "s " : " ", list, ")");
  }
  return out;
}

void check_one_backend(const std::vector<RankView>& ranks) {
  std::map<BackendKind, std::vector<int>> by_backend;
  for (std::size_t r = 0; r < ranks.size(); ++r) by_backend[ranks[r].backend].push_back(static_cast<int>(r));
  if (by_backend.size() <= 1) return;
  std::string parts;
  for (const auto& [kind, rs] : by_backend)
    parts += str_cat(parts.empty() ? "" : "; but ", "the ", backend_name(kind), " backend on ", nodes_of(ranks, rs));
  throw_user_error("parallel.backend: the ranks of this job resolved to different backends (", parts,
                   "); every rank must run the same one: give the nodes the same GPUs (check nvidia-smi and the "
                   "Slurm --gpus request on the nodes without) or set parallel.backend: cpu");
}

// Each node's ranks, in world-rank order (local-rank order: a node's ranks are numbered
// in world order), take the visible GPU the fewest of them took so far.
std::vector<GpuChoice> assign_gpus(const std::vector<RankView>& ranks) {
  std::vector<GpuChoice> out(ranks.size());
  std::map<std::string, std::map<std::string, int>> taken;  // node -> uuid -> ranks on it
  for (std::size_t r = 0; r < ranks.size(); ++r) {
    const RankView& v = ranks[r];
    if (v.gpus.empty())
      throw_user_error("parallel.backend: cuda, but rank ", r, " on ", v.node,
                       " sees no GPU (check CUDA_VISIBLE_DEVICES and the Slurm --gpus request)");
    std::map<std::string, int>& used = taken[v.node];
    int best = 0;
    for (int o = 1; o < static_cast<int>(v.gpus.size()); ++o)
      if (used[v.gpus[static_cast<std::size_t>(o)]] < used[v.gpus[static_cast<std::size_t>(best)]]) best = o;
    out[r].ordinal = best;
    out[r].uuid = v.gpus[static_cast<std::size_t>(best)];
    ++used[out[r].uuid];
  }
  for (std::size_t r = 0; r < ranks.size(); ++r) out[r].sharers = taken[ranks[r].node][out[r].uuid];
  return out;
}

// "ranks 0, 2 on node-0 share GPU-...; ...", or "" when every rank has its own GPU.
std::string shared_gpus(const std::vector<RankView>& ranks, const std::vector<GpuChoice>& gpu) {
  std::map<std::pair<std::string, std::string>, std::vector<int>> on;  // (node, uuid) -> ranks
  for (std::size_t r = 0; r < ranks.size(); ++r) on[{ranks[r].node, gpu[r].uuid}].push_back(static_cast<int>(r));
  std::string out;
  for (const auto& [where, rs] : on) {
    if (rs.size() < 2) continue;
    std::string list;
    for (const int r : rs) list += str_cat(list.empty() ? "" : ", ", r);
    out += str_cat(out.empty() ? "" : "; ", "ranks ", list, " on ", where.first, " share ", where.second);
  }
  return out;
}

}  // namespace

JobPlacement placement_resolve(const std::vector<RankView>& ranks, CommKind requested) {
  ANVIL_CHECK(!ranks.empty(), "placement_resolve of an empty job");
  check_one_backend(ranks);
  JobPlacement out;
  out.backend = ranks.front().backend;
  if (out.backend == BackendKind::backend_cpu) {
    ANVIL_CHECK_INPUT(requested != CommKind::comm_nccl, "parallel.comm: nccl needs GPUs, but parallel.backend is cpu");
    out.comm = CommKind::comm_mpi;
    return out;
  }
  out.gpu = assign_gpus(ranks);
  out.shared = shared_gpus(ranks, out.gpu);
  if (requested == CommKind::comm_auto) {
    out.comm = out.shared.empty() ? CommKind::comm_nccl : CommKind::comm_mpi;
    return out;
  }
  ANVIL_CHECK_INPUT(!(requested == CommKind::comm_nccl && !out.shared.empty()), "parallel.comm: nccl, but ",
                    out.shared, ", and NCCL needs one GPU per rank; use parallel.comm: mpi (or auto), or one "
                    "rank per GPU");
  out.comm = requested;
  return out;
}

std::vector<RankView> placement_gather(comm::Comm& world, const RankView& mine) {
  // A JSON object per rank in a fixed-size slot: ~40 bytes a GPU, room for 64 of them.
  constexpr std::int64_t kSlot = 4096;
  const std::string text =
      nlohmann::json{{"node", mine.node}, {"backend", static_cast<int>(mine.backend)}, {"gpus", mine.gpus}}.dump();
  ANVIL_CHECK(static_cast<std::int64_t>(text.size()) < kSlot, "this rank's device list is ", text.size(),
              " bytes, more than the ", kSlot, " its record holds");
  std::vector<char> slot(static_cast<std::size_t>(kSlot), '\0');
  std::memcpy(slot.data(), text.data(), text.size());
  std::vector<char> all(static_cast<std::size_t>(kSlot * world.size()));
  world.allgather(slot.data(), all.data(), kSlot, DType::dtype_i8);
  std::vector<RankView> out(static_cast<std::size_t>(world.size()));
  for (std::size_t r = 0; r < out.size(); ++r) {
    const nlohmann::json j = nlohmann::json::parse(all.data() + r * static_cast<std::size_t>(kSlot));
    out[r].node = j.at("node").get<std::string>();
    out[r].backend = static_cast<BackendKind>(j.at("backend").get<int>());
    out[r].gpus = j.at("gpus").get<std::vector<std::string>>();
  }
  return out;
}

}  // namespace anvil::runtime
