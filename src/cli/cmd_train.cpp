// anvil train CONFIG [--set KEY=VALUE]...
// anvil validate CONFIG [--set KEY=VALUE]... [--world-size N] [--print]
//
// Both load the config through the same path (train/config.h); validate stops after the
// checks, train goes on to run it (train/trainer.h).
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "cli/commands.h"
#include "comm/process_grid.h"
#include "comm/runtime.h"
#include "core/log.h"
#include "train/config.h"
#include "train/trainer.h"

namespace anvil::cli {

namespace {

struct ConfigOptions {
  std::string path;
  std::vector<std::string> overrides;
  int world_size = 0;  // validate: 0 = infer from tp x dp
  bool print = false;
  std::int64_t stop_after = 0;  // train
};

void add_config_options(CLI::App* cmd, ConfigOptions& opt) {
  cmd->add_option("config", opt.path, "Training config (YAML); see configs/README.md")->required();
  // One value per --set, so that `--set a=1 config.yaml` leaves the config positional alone.
  cmd->add_option("--set", opt.overrides,
                  "Override one config key, e.g. --set train.lr=1e-4 (repeatable; the value is read as YAML)")
      ->allow_extra_args(false);
}

void run_validate(const ConfigOptions& opt) {
  train::ConfigContext ctx;
  ctx.world_size = opt.world_size;
  const train::TrainConfig cfg = train::config_load(opt.path, opt.overrides, ctx);
  if (opt.print) std::fputs(train::config_to_yaml(cfg).c_str(), stdout);
  const int world = train::config_world_size(cfg, opt.world_size);
  const int dp = train::config_data_parallel(cfg, opt.world_size);
  const int accumulation = train::config_grad_accumulation(cfg, opt.world_size);
  std::printf("config OK: %s\n", opt.path.c_str());
  std::printf("world size %d = tp %d x dp %d%s\n", world, cfg.parallel.tp, dp,
              opt.world_size > 0 ? "" : " (from the config; check another with --world-size N)");
  std::printf("global batch %d = micro batch %d x dp %d x grad accumulation %d\n", cfg.train.global_batch,
              cfg.train.micro_batch, dp, accumulation);
}

void run_train(const ConfigOptions& opt) {
  comm::MpiSession mpi;
  train::ConfigContext ctx;
  ctx.world_size = mpi.world_size();
  const train::TrainConfig cfg = train::config_load(opt.path, opt.overrides, ctx);
  log_set_level(cfg.log.level);
  std::string yaml = train::config_to_yaml(cfg);
  if (!yaml.empty() && yaml.back() == '\n') yaml.pop_back();
  log_info("anvil train ", opt.path, ": resolved config\n", yaml);
  log_info("grad accumulation ", train::config_grad_accumulation(cfg, ctx.world_size), " over dp ",
           train::config_data_parallel(cfg, ctx.world_size));
  if (std::getenv("OMP_NUM_THREADS") == nullptr) {  // else the user decided
    const int threads = backend::cpu_threads_for_rank(mpi.local_size());
    backend::cpu_threads_set(threads);
    if (mpi.local_size() > 1) log_info(mpi.local_size(), " ranks on this node: ", threads, " CPU threads each");
  }
  const comm::ProcessGrid grid(comm::mpi_comm_world(), cfg.parallel.tp);
  train::TrainOptions options;
  options.stop_after = opt.stop_after;
  const train::TrainResult r = train::train_run(cfg, grid, options);
  if (r.first_eval_loss && r.last_eval_loss)
    log_info("eval loss ", *r.first_eval_loss, " -> ", *r.last_eval_loss);
}

}  // namespace

void register_train(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Fine-tune a model as a YAML config describes");
  auto opt = std::make_shared<ConfigOptions>();
  add_config_options(cmd, *opt);
  cmd->add_option("--stop-after", opt->stop_after,
                  "End cleanly after step N with a checkpoint (as a preempted job would); the same command "
                  "with checkpoint.resume: auto continues")
      ->check(CLI::PositiveNumber);
  cmd->callback([opt] { run_train(*opt); });
}

void register_validate(CLI::App& app) {
  auto* cmd = app.add_subcommand("validate", "Check a training config and report every problem at once");
  auto opt = std::make_shared<ConfigOptions>();
  add_config_options(cmd, *opt);
  cmd->add_option("--world-size", opt->world_size,
                  "Ranks the job will have (default: tp x dp from the config, dp auto counting as 1)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_flag("--print", opt->print, "Print the resolved config (every key, defaults filled) as YAML");
  cmd->callback([opt] { run_validate(*opt); });
}

}  // namespace anvil::cli
