// Run output a person or a script reads: <output_dir>/metrics.jsonl (one JSON object per
// optimizer step and per evaluation, flushed as written) and the console progress line.
#pragma once

#include <array>

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

namespace anvil::train {

struct StepMetrics {
  std::int64_t step = 0;
  double loss = 0;           // sum of token losses / trained tokens of the step
  double lr = 0;
  double grad_norm = 0;      // before clipping
  std::int64_t tokens = 0;   // trained tokens of the step (the loss denominator)
  double tokens_per_s = 0;   // sequence tokens processed per second in this step
  double elapsed_s = 0;      // since training started
  bool skipped = false;      // no update: non-finite loss or gradient (train.skip_nonfinite), or a skipped spike
  std::int64_t skipped_total = 0;
  bool spike = false;        // the loss was flagged by train.loss_spike_factor
  std::optional<double> mfu;  // model FLOPs / (step time x peak of every rank); needs log.peak_tflops on CPU
  double peak_rss_mib = 0;   // the largest peak resident set of any rank so far
  double comm_share = 0;     // the largest share of the step any rank spent inside collectives
  double data_share = 0;     // the largest share any rank spent drawing and gathering its batch
  // Mixture of experts: the load-balancing loss (mean over the step's micro-batches; when
  // config.json's output_router_logits asks for it, router_aux_loss_coef times it is in the
  // gradient, not in `loss`), and per sparse layer the fewest and most tokens any expert got
  // in the step (over every rank).
  std::optional<double> aux_loss;
  std::vector<std::array<std::int64_t, 2>> expert_load;
};

class MetricsWriter {
 public:
  // Truncates (or creates) `path`; a user error names it if it cannot.
  // A new file; or, resuming after step `resumed_step` (>= 0), the existing file with the
  // lines of later steps (written after that checkpoint by the run that stopped) dropped.
  explicit MetricsWriter(const std::string& path, std::int64_t resumed_step = -1);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  void write_step(const StepMetrics& m);
  void write_eval(std::int64_t step, double eval_loss, std::int64_t eval_tokens, double elapsed_s);
  // The end of a run: {"end": true, "steps", "peak_rss_mib_per_rank": [...]} (no "step" key,
  // so a resumed run drops it with the later steps).
  void write_end(std::int64_t steps, const std::vector<double>& peak_rss_mib_per_rank);

 private:
  void write_line(const std::string& line);
  std::string path_;
  std::FILE* file_ = nullptr;
};

// "step 120/1000 | loss 2.314 | 18.4k tok/s | ETA 3m12s": redrawn in place on a terminal,
// else printed as plain lines every `every` steps (and at the last step).
class ProgressLine {
 public:
  ProgressLine(std::int64_t total_steps, std::int64_t every);
  void update(const StepMetrics& m);
  void note(const std::string& line);  // a message that must not be overdrawn
  void finish();

 private:
  std::int64_t total_;
  std::int64_t every_;
  bool tty_;
  bool open_line_ = false;
};

std::string format_duration(double seconds);

}  // namespace anvil::train
