// Checkpoint save and load bandwidth: the adapter and AdamW state of a LoRA run on a real
// model shape (no weights needed: only the shapes matter), saved and resumed (resume: auto)
// by train/checkpoint.h as a training run does, under MPI as one TP group of the world size.
// Each load is timed three times: cold (the file evicted from the page cache first, as
// after a restart on another node), cold again (evicted once more: on a VM whose host
// caches the disk, the first read of newly written blocks comes from the storage behind it
// and this one from the host's cache, tests/bench/RESULTS.md) and warm (right after; a rank
// alone on its node streams a file not in the page cache past it, so there the "warm" read
// finds the page cache as empty as the cold ones did).
// Prints one JSON object on rank 0 (for scripts/bench/checkpoint_bandwidth.sh).
//
//   mpirun -np N bench_checkpoint DIR [--preset llama3-8b] [--rank 16] [--reps 3] [--settle SECONDS]
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "comm/process_grid.h"
#include "comm/mpi_session.h"
#include "core/error.h"
#include "model/tp_shard.h"
#include "train/checkpoint.h"

namespace {

using namespace anvil;
using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Drops the file's pages from the page cache (it was fsynced by the save's close).
void page_cache_evict(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

}  // namespace

int main(int argc, char** argv) try {
  comm::MpiSession mpi;
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_checkpoint DIR [--preset NAME] [--rank N] [--reps N] [--settle SECONDS]\n");
    return 2;
  }
  const std::string dir = argv[1];
  std::string preset = "llama3-8b";
  int rank = 16, reps = 3;
  double settle = 0;  // seconds between a save and its cold resume
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    ANVIL_CHECK_INPUT(i + 1 < argc, a, " needs a value");
    if (a == "--preset") preset = argv[++i];
    else if (a == "--rank") rank = std::atoi(argv[++i]);
    else if (a == "--reps") reps = std::atoi(argv[++i]);
    else if (a == "--settle") settle = std::atof(argv[++i]);
    else throw_user_error("unknown option ", a);
  }
  const auto spec = model::model_preset(preset);
  ANVIL_CHECK_INPUT(spec.has_value(), "unknown preset ", preset);
  const comm::ProcessGrid grid(comm::mpi_comm_world(), mpi.world_size());

  train::TrainConfig cfg = train::config_defaults();
  cfg.output_dir = dir;
  cfg.model.path = "(bench)";
  cfg.data.train = {{"(bench)", 1.0}};
  model::LoraSpec ls;
  ls.rank = rank;
  ls.alpha = 2.0 * rank;
  ls.targets.fill(true);
  const model::TpShard shard = model::tp_shard(*spec, grid.tp_rank(), grid.tp_size());
  const model::LoraLayout full(*spec, ls), local(model::tp_local_spec(*spec, shard), ls);

  train::CheckpointContext ctx;
  ctx.cfg = &cfg;
  ctx.config_yaml = train::config_to_yaml(cfg);
  ctx.model_config_json = model::model_spec_to_json(*spec);
  ctx.base_path = "(bench)";
  ctx.base_hash = "0000000000000000";
  ctx.spec = &*spec;
  ctx.full = &full;
  ctx.local = &local;
  ctx.shard = shard;
  ctx.grid = &grid;
  // The same whole state on every rank, sliced: replicated matrices are equal on all
  // ranks, as in training (a checkpoint's checksum of a replicated matrix relies on it).
  std::vector<float> p(static_cast<std::size_t>(local.size())), m(p.size()), v(p.size());
  std::vector<float> whole(static_cast<std::size_t>(full.size()));
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  for (auto* b : {&p, &m, &v}) {
    for (auto& x : whole) x = nd(rng);
    model::lora_shard_extract(*spec, shard, full, local, whole.data(), b->data());
  }
  const train::AdapterBuffers buf{p.data(), m.data(), v.data()};

  double save_best = 1e30, load_best = 1e30, cold_best = 1e30, again_best = 1e30;
  std::string path;
  for (int r = 0; r < reps; ++r) {
    train::TrainState state;
    state.step = r + 1;
    grid.world().barrier();
    auto t0 = Clock::now();
    path = train::checkpoint_save(ctx, state, buf);
    save_best = std::min(save_best, seconds(t0));
    if (grid.world_rank() == 0) page_cache_evict(path);
    if (settle > 0) std::this_thread::sleep_for(std::chrono::duration<double>(settle));
    grid.world().barrier();
    // A resume as training does it (checkpoint.resume: auto finds the file just saved).
    t0 = Clock::now();
    const auto resumed = train::checkpoint_resume(ctx, buf);
    grid.world().barrier();
    ANVIL_CHECK(resumed && resumed->path == path, "the resume did not find ", path);
    cold_best = std::min(cold_best, seconds(t0));
    if (grid.world_rank() == 0) page_cache_evict(path);
    grid.world().barrier();
    t0 = Clock::now();
    train::checkpoint_resume(ctx, buf);
    grid.world().barrier();
    again_best = std::min(again_best, seconds(t0));
    t0 = Clock::now();
    train::checkpoint_resume(ctx, buf);
    grid.world().barrier();
    load_best = std::min(load_best, seconds(t0));
  }
  const double bytes = 3.0 * 4.0 * static_cast<double>(full.size());  // params + 2 moments
  if (grid.world_rank() == 0) {
    nlohmann::json j = {{"preset", preset},
                        {"lora_rank", rank},
                        {"ranks", grid.world_size()},
                        {"state_bytes", bytes},
                        {"file_bytes", std::filesystem::file_size(path)},
                        {"save_s", save_best},
                        {"load_s", load_best},
                        {"load_cold_s", cold_best},
                        {"load_cold_mb_s", bytes / cold_best / 1e6},
                        {"load_cold_again_s", again_best},
                        {"load_cold_again_mb_s", bytes / again_best / 1e6},
                        {"save_mb_s", bytes / save_best / 1e6},
                        {"load_mb_s", bytes / load_best / 1e6}};
    std::printf("%s\n", j.dump().c_str());
  }
  return 0;
} catch (const std::exception& e) {
  return anvil::comm::exit_after_error(e);
}
