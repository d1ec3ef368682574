#include "train/metrics_reduce.h"

#include <sys/resource.h>

namespace anvil::train {

double peak_rss_mib() {
  struct rusage u {};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // Linux: KiB
}

void step_metrics_reduce_worst(comm::Comm& world, StepMetrics& m, double comm_s, double data_s, double step_s) {
  double worst[3] = {peak_rss_mib(), comm_s / step_s, data_s / step_s};
  world.allreduce(worst, 3, DType::dtype_f64, comm::ReduceOp::reduce_max);
  m.peak_rss_mib = worst[0];
  m.comm_share = worst[1];
  m.data_share = worst[2];
}

std::vector<double> peak_rss_per_rank(comm::Comm& world) {
  const double mine = peak_rss_mib();
  std::vector<double> peaks(static_cast<std::size_t>(world.size()));
  world.allgather(&mine, peaks.data(), 1, DType::dtype_f64);
  return peaks;
}

}  // namespace anvil::train
