// The Trainer: one training run, llm.c style. The constructor sets everything up (model,
// data, adapter and optimizer state, resume); train_step() is one optimizer step read top
// to bottom:
//   micro-batches (forward + backward each) ─► TP then DP gradient reduction ─► grad norm
//   ─► loss guard ─► clip + AdamW ─► schedule ─► metrics
// and run() loops over the steps with evaluation, checkpoints and preemption.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/sampler.h"
#include "model/llama.h"
#include "model/lora.h"
#include "model/model_spec.h"
#include "runtime/runtime.h"
#include "train/adapter_state.h"
#include "train/batch.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/data_prepare.h"
#include "train/fault_inject.h"
#include "train/loss_guard.h"
#include "train/metrics.h"
#include "train/schedule.h"

namespace anvil::train {

struct TrainResult {
  std::int64_t steps = 0;
  std::int64_t skipped_steps = 0;
  double last_loss = 0;
  std::optional<double> first_eval_loss;  // before the first step
  std::optional<double> last_eval_loss;
  std::string adapter_dir;  // PEFT adapter written at the end (empty after --stop-after)
  std::optional<std::string> resumed_from;
  std::string last_checkpoint;
  // Stopped early on SIGUSR1/SIGTERM (train/preemption.h): last_checkpoint continues it.
  bool preempted = false;
};

struct TrainOptions {
  // > 0: end cleanly after this step with a checkpoint, as a preempted job would; the same
  // command with checkpoint.resume: auto continues from it.
  std::int64_t stop_after = 0;
};

// The Runtime a config asks for (parallel.*): every rank calls it, once, before any weight
// is read. `session` null: one rank without MPI.
std::unique_ptr<runtime::Runtime> runtime_from_config(const TrainConfig& cfg,
                                                      std::unique_ptr<comm::MpiSession> session);

// The training of `cfg` on the ranks of `rt`, every rank constructing it and calling run().
// Each data-parallel replica takes its own rows of every global batch; each tensor-parallel
// rank holds its slice of the model. Only world rank 0 writes metrics, the progress line
// and the adapter. Throws anvil::Error with the step on a non-finite loss (unless
// train.skip_nonfinite) and on bad data or models.
class Trainer {
 public:
  Trainer(const TrainConfig& cfg, runtime::Runtime& rt, const TrainOptions& options = {});
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  TrainResult run();

 private:
  void data_load();
  void model_build();
  void step_plan();
  StepMetrics train_step(std::int64_t step);
  // A mixture-of-experts step's router statistics, summed over its micro-batches.
  struct MoeStepStats {
    double aux_sum = 0;
    std::vector<std::int64_t> load;  // (sparse layers, experts)
    void add(const model::LlamaModel& model);
  };
  void moe_step_metrics(MoeStepStats& s, StepMetrics& m);
  void step_record(StepMetrics& m, double step_s, double comm_s, double data_s);
  void eval_run(std::int64_t step);
  TrainResult finish();
  // The checkpoint module's calls, together: what every save and the resume need, the
  // resume itself, a save, and the PEFT adapter at the end.
  void checkpoint_setup();
  void checkpoint_resume();
  void checkpoint_write(std::int64_t step);
  void adapter_write();

  const TrainConfig& cfg_;
  runtime::Runtime& rt_;
  const TrainOptions options_;
  const bool writer_;  // world rank 0: metrics, progress line, adapter

  model::ModelSpec spec_;
  PreparedData data_;
  model::LoraLayout full_layout_;  // the whole model's adapter
  std::unique_ptr<model::LlamaModel> model_;
  std::unique_ptr<AdapterState> adapter_;

  // The step plan.
  std::int64_t total_steps_ = 0;
  std::int64_t per_replica_ = 0;  // rows of each global batch this DP replica trains
  std::int64_t first_row_ = 0;    // its first row
  ScheduleParams sched_{};
  std::unique_ptr<data::Sampler> sampler_;
  std::unique_ptr<BatchBuffers> batch_;
  std::vector<std::int64_t> rows_;  // the step's global batch
  std::unique_ptr<LossGuard> guard_;
  FaultInjection fault_;
  double flops_per_step_ = 0, peak_flops_ = 0;  // MFU

  CheckpointContext ckpt_;
  TrainState state_;
  TrainResult result_;
  std::optional<MetricsWriter> metrics_;
  std::optional<ProgressLine> progress_;
  double t0_ = 0;  // steady-clock seconds when training started
};

}  // namespace anvil::train
