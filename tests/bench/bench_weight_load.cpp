// Memory of loading one tensor-parallel rank's base weights: the peak growth of the
// resident set over base_weights_load plus a read of every byte it returned (a view into
// the mapping costs nothing until read), next to the bytes of the rank's slice and of the
// whole model. Prints one JSON object (tests/unit/test_weight_load_rss.py reads it).
//
//   bench_weight_load MODEL_DIR TP RANK STORAGE      STORAGE: f32 or bf16
//
// Measure with the file out of the page cache (a cold load, as from disk): right after a
// write the cache holds it in large folios, and the kernel maps a whole folio (up to
// 2 MiB) around every byte read, so small tensors would count their neighbours too.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "model/llama_weights.h"

namespace {

using namespace anvil;

// A "VmRSS:" / "VmHWM:" line of /proc/self/status, in bytes.
std::int64_t status_bytes(const std::string& key) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key + ":", 0) == 0) return std::atoll(line.c_str() + key.size() + 1) * 1024;
  throw_user_error("/proc/self/status has no ", key);
}

// Makes VmHWM start again from the current RSS, so that the peak is the load's own
// (Linux >= 4.0); false where the kernel refuses.
bool peak_reset() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return out.good();
}

// Reads every byte so that each mapped page of the slice is resident; the sum keeps the
// compiler from skipping the reads.
std::uint64_t bytes_sum(const TensorView& v) {
  const auto* p = static_cast<const std::uint8_t*>(v.data);
  std::uint64_t s = 0;
  for (std::size_t i = 0; i < v.nbytes(); ++i) s += p[i];
  return s;
}

bool weight_is_f32_always(const std::string& name) {
  auto ends = [&](const std::string& x) {
    return name.size() >= x.size() && name.compare(name.size() - x.size(), x.size(), x) == 0;
  };
  return ends("norm.weight") || ends(".bias");
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc != 5) {
    std::fprintf(stderr, "usage: bench_weight_load MODEL_DIR TP RANK STORAGE (f32 or bf16)\n");
    return 2;
  }
  const std::string dir = argv[1];
  const int tp = std::atoi(argv[2]), rank = std::atoi(argv[3]);
  const auto storage = dtype_from_short_name(argv[4]);
  ANVIL_CHECK_INPUT(storage == DType::dtype_f32 || storage == DType::dtype_bf16,
                    "STORAGE must be f32 or bf16, got ", argv[4]);
  const model::ModelSpec spec = model::model_spec_from_dir(dir);
  const auto problems = model::tp_shard_problems(spec, tp);
  ANVIL_CHECK_INPUT(problems.empty(), "TP ", tp, ": ", problems.empty() ? "" : problems.front());
  ANVIL_CHECK_INPUT(rank >= 0 && rank < tp, "RANK must be in [0, ", tp, "), got ", rank);
  const model::TpShard shard = model::tp_shard(spec, rank, tp);

  std::int64_t model_bytes = 0;  // what one rank would hold without TP
  for (const auto& w : model::model_weight_list(spec))
    model_bytes += w.shape.numel() * static_cast<std::int64_t>(dtype_size(
                                         weight_is_f32_always(w.name) ? DType::dtype_f32 : *storage));

  const bool reset = peak_reset();
  const std::int64_t rss_before = status_bytes("VmRSS");
  const auto t0 = std::chrono::steady_clock::now();
  const model::BaseWeights w = model::base_weights_load(spec, dir, *storage, shard);
  const std::int64_t rss_loaded = status_bytes("VmRSS");  // the copies; views cost nothing yet
  std::uint64_t checksum = 0;
  std::int64_t local_bytes = 0;
  auto read = [&](const TensorView& v) {
    if (!v.data) return;
    checksum += bytes_sum(v);
    local_bytes += static_cast<std::int64_t>(v.nbytes());
  };
  read(w.embed);
  for (const auto& l : w.layers) {
    read(l.attn_norm);
    read(l.mlp_norm);
    for (const auto& p : l.proj) read(p);
    for (const auto& b : l.bias) read(b);
  }
  read(w.final_norm);
  if (w.lm_head.data != w.embed.data) read(w.lm_head);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::int64_t peak = status_bytes("VmHWM"), rss_after = status_bytes("VmRSS");

  const nlohmann::json j = {{"model_dir", dir},
                            {"tp", tp},
                            {"rank", rank},
                            {"storage", dtype_short_name(*storage)},
                            {"peak_rss_growth_bytes", peak - rss_before},
                            {"rss_growth_bytes", rss_after - rss_before},
                            {"load_rss_growth_bytes", rss_loaded - rss_before},
                            {"peak_reset", reset},
                            {"local_bytes", local_bytes},
                            {"model_bytes", model_bytes},
                            {"converted_bytes", w.converted_bytes},
                            {"load_s", load_s},
                            {"checksum", checksum}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 2;
}
