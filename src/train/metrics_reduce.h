// The metrics collectives: what every rank measures about itself (peak memory, time inside
// collectives, time drawing data), reduced to the worst rank for metrics.jsonl.
#pragma once

#include <vector>

#include "comm/comm.h"
#include "train/metrics.h"

namespace anvil::train {

// This process's peak resident set so far, in MiB (getrusage: the kernel's high-water mark).
double peak_rss_mib();

// m.peak_rss_mib, m.comm_share, m.data_share: the largest over the ranks of `world`, in
// one small max-allreduce made after the step's collectives were timed. `comm_s` and
// `data_s` are this rank's seconds inside collectives and drawing data in a step of `step_s`.
void step_metrics_reduce_worst(comm::Comm& world, StepMetrics& m, double comm_s, double data_s, double step_s);

// Every rank's peak RSS in world rank order (an allgather): the end line of metrics.jsonl.
std::vector<double> peak_rss_per_rank(comm::Comm& world);

}  // namespace anvil::train
