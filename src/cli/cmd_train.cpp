// anvil train CONFIG [--set KEY=VALUE]...
// anvil validate CONFIG [--set KEY=VALUE]... [--world N] [--gpu h200|h200-nvl|h100|cpu] [--print]
// anvil prepare CONFIG [--set KEY=VALUE]...
//
// All load the config through the same path (train/config.h); validate stops after the
// checks (with --world or --gpu it then prints the run's plan, train/plan.h), prepare tokenizes the data into the token cache that train then reuses
// (train/data_prepare.h), train runs it all (train/trainer.h).
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "cli/commands.h"
#include "comm/mpi_session.h"
#include "core/error.h"
#include "core/log.h"
#include "data/tokenizer.h"
#include "train/config.h"
#include "model/model_spec.h"
#include "model/tp_shard.h"
#include "train/data_prepare.h"
#include "train/plan.h"
#include "train/trainer.h"

namespace anvil::cli {

namespace {

struct ConfigOptions {
  std::string path;
  std::vector<std::string> overrides;
  int world_size = 0;  // validate: 0 = infer from tp x dp
  std::string gpu;     // validate: the device to plan for; empty: no plan unless --world
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
  const int ep = cfg.parallel.ep;
  if (ep > 1)
    std::printf("world size %d = tp %d x ep %d x dp %d%s\n", world, cfg.parallel.tp, ep, dp / ep,
                opt.world_size > 0 ? "" : " (from the config; check another with --world N)");
  else
    std::printf("world size %d = tp %d x dp %d%s\n", world, cfg.parallel.tp, dp,
                opt.world_size > 0 ? "" : " (from the config; check another with --world N)");
  const std::string data_ranks = ep > 1 ? str_cat("ep ", ep, " x dp ", dp / ep) : str_cat("dp ", dp);
  std::printf("global batch %d = micro batch %d x %s x grad accumulation %d\n", cfg.train.global_batch,
              cfg.train.micro_batch, data_ranks.c_str(), accumulation);
  if (opt.world_size == 0 && opt.gpu.empty()) return;

  // The plan: without --gpu, the backend the config asks for (CPU unless cuda).
  const std::string device_name =
      !opt.gpu.empty() ? opt.gpu : cfg.parallel.backend == train::BackendKind::backend_cuda ? "h200" : "cpu";
  const auto kind = train::plan_device_from_name(device_name);
  ANVIL_CHECK_INPUT(kind.has_value(), "--gpu: expected h200, h200-nvl, h100 or cpu, got '", device_name, "'");
  const model::ModelSpec spec = model::model_spec_from_dir(cfg.model.path);
  if (spec.is_llama4() && device_name != "cpu")
    std::printf("note: Llama 4's CUDA kernels (kernels/llama4.cu) have not run on a GPU yet; the plan below is a "
                "projection\n");
  train::PlanDevice device = train::plan_device(*kind, world);
  if (!device.gpu) {
    const model::ModelSpec local = model::tp_local_spec(spec, model::tp_shard(spec, 0, cfg.parallel.tp));
    const int threads = backend::cpu_threads_for_rank(world);
    device.peak_flops = train::plan_measure_cpu_gemm(
        local, static_cast<std::int64_t>(cfg.train.micro_batch) * cfg.data.seq_len, threads);
    device.name = str_cat("CPU rank (", threads, " thread", threads > 1 ? "s" : "", ")");
  }
  std::printf("\n%s", train::plan_format(train::plan_run(cfg, spec, world, device)).c_str());
  // A mixture-of-experts run on GPUs: how tp and ep trade memory against step time, on this
  // world size and on the 4- and 8-GPU servers the workload is sized for.
  if (!spec.is_moe() || !device.gpu) return;
  std::vector<int> worlds{4, 8};
  if (world != 4 && world != 8) worlds.insert(worlds.begin(), world);
  for (const int w : worlds)
    std::printf("\n%s", train::plan_format_choices(train::plan_grid_choices(cfg, spec, w, train::plan_device(*kind, w)),
                                                   train::plan_device(*kind, w))
                            .c_str());
}

void run_train(const ConfigOptions& opt) {
  auto session = std::make_unique<comm::MpiSession>();
  train::ConfigContext ctx;
  ctx.world_size = session->world_size();
  const train::TrainConfig cfg = train::config_load(opt.path, opt.overrides, ctx);
  log_set_level(cfg.log.level);
  std::string yaml = train::config_to_yaml(cfg);
  if (!yaml.empty() && yaml.back() == '\n') yaml.pop_back();
  log_info("anvil train ", opt.path, ": resolved config\n", yaml);
  log_info("grad accumulation ", train::config_grad_accumulation(cfg, ctx.world_size), " over dp ",
           train::config_data_parallel(cfg, ctx.world_size));
  const std::unique_ptr<runtime::Runtime> rt = train::runtime_from_config(cfg, std::move(session));
  train::TrainOptions options;
  options.stop_after = opt.stop_after;
  const train::TrainResult r = train::Trainer(cfg, *rt, options).run();
  if (r.first_eval_loss && r.last_eval_loss)
    log_info("eval loss ", *r.first_eval_loss, " -> ", *r.last_eval_loss);
}

void run_prepare(const ConfigOptions& opt) {
  comm::MpiSession mpi;
  // The cache does not depend on the grid: the batch layout is checked for the config's
  // own tp x dp, not for this job's ranks, which only share the tokenizing.
  train::ConfigContext ctx;
  const train::TrainConfig cfg = train::config_load(opt.path, opt.overrides, ctx);
  log_set_level(cfg.log.level);
  const data::Tokenizer tokenizer = data::Tokenizer::load(cfg.model.path);
  const auto world = comm::mpi_comm_world();
  const train::PreparedData data = train::data_prepare(cfg, tokenizer, *world);
  if (mpi.world_rank() == 0) std::printf("%s\n", data.cache.path.c_str());
}

}  // namespace

void register_prepare(CLI::App& app) {
  auto* cmd = app.add_subcommand("prepare",
                                 "Tokenize and pack a config's data into the token cache that train reuses "
                                 "(under mpirun, the ranks share the work)");
  auto opt = std::make_shared<ConfigOptions>();
  add_config_options(cmd, *opt);
  cmd->callback([opt] { run_prepare(*opt); });
}

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
  auto* cmd = app.add_subcommand("validate",
                                 "Check a training config and report every problem at once; with --world or "
                                 "--gpu, plan the run (memory per rank, step time, communication)");
  auto opt = std::make_shared<ConfigOptions>();
  add_config_options(cmd, *opt);
  cmd->add_option("--world-size,--world", opt->world_size,
                  "Ranks the job will have (default: tp x dp from the config, dp auto counting as 1); "
                  "also prints the run's plan")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--gpu", opt->gpu,
                  "Plan the run for this device: memory per rank, step time, communication "
                  "(h200, h100, or cpu: this machine)")
      ->check(CLI::IsMember({"h200", "h200-nvl", "h100", "cpu"}));
  cmd->add_flag("--print", opt->print, "Print the resolved config (every key, defaults filled) as YAML");
  cmd->callback([opt] { run_validate(*opt); });
}

}  // namespace anvil::cli
