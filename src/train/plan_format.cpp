// anvil validate's text: the plan of one layout (plan_format) and the table of layouts
// (plan_format_choices).
#include <cmath>
#include <cstdio>
#include <string>

#include "core/error.h"
#include "train/plan.h"

namespace anvil::train {

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr double kMiB = 1024.0 * 1024.0;

std::string gib(double bytes) {
  char buf[32];
  if (bytes >= kGiB) std::snprintf(buf, sizeof(buf), "%.2f GiB", bytes / kGiB);
  else std::snprintf(buf, sizeof(buf), "%.1f MiB", bytes / kMiB);
  return buf;
}

std::string decimal_bytes(double bytes) {
  char buf[32];
  if (bytes >= 1e9) std::snprintf(buf, sizeof(buf), "%.2f GB", bytes / 1e9);
  else std::snprintf(buf, sizeof(buf), "%.1f MB", bytes / 1e6);
  return buf;
}

std::string seconds(double s) {
  char buf[32];
  if (s >= 1.0) std::snprintf(buf, sizeof(buf), "%.2f s", s);
  else std::snprintf(buf, sizeof(buf), "%.1f ms", s * 1e3);
  return buf;
}

}  // namespace

namespace {

// printf-style lines appended to one string.
struct PlanText {
  std::string out;
  template <typename... Args>
  void add(const char* fmt, Args... args) {
    char line[512];
    std::snprintf(line, sizeof(line), fmt, args...);
    out += line;
  }
};

// The grid, the model, the batch and the dtypes.
void plan_format_header(PlanText& t, const RunPlan& p) {
  const model::ModelSpec& s = p.spec;
  const std::string grid = p.spec.is_moe() ? str_cat("tp ", p.tp, " x ep ", p.ep, " x dp ", p.dp)
                                           : str_cat("tp ", p.tp, " x dp ", p.dp);
  if (p.device.gpu)
    t.add("plan: %d x %s (%d per node): %s\n", p.world, p.device.name.c_str(), p.device.ranks_per_node, grid.c_str());
  else
    t.add("plan: %d x %s, all on this machine: %s\n", p.world, p.device.name.c_str(), grid.c_str());
  t.add("model: hidden %lld, ffn %lld, %lld layers, %lld heads (%lld KV), vocab %lld; %.2f B parameters\n",
      (long long)s.hidden_size, (long long)s.intermediate_size, (long long)s.num_hidden_layers,
      (long long)s.num_attention_heads, (long long)s.num_key_value_heads, (long long)s.vocab_size,
      static_cast<double>(model::model_parameter_count(s)) / 1e9);
  if (s.is_moe())
    t.add("experts: %lld routed, top %lld, width %lld; %lld per rank (ep %d)\n", (long long)s.moe.num_experts,
        (long long)s.moe.top_k, (long long)s.moe.intermediate_size, (long long)(s.moe.num_experts / p.ep), p.ep);
  t.add("batch: global %lld = micro %lld x dp %d x accumulation %d, seq_len %lld; LoRA r %lld: %.1f M parameters "
      "(%.1f M per rank)\n",
      (long long)p.global_batch, (long long)p.micro_batch, p.dp, p.accumulation, (long long)p.seq_len,
      (long long)p.lora_rank, p.lora_full / 1e6, p.lora_local / 1e6);
  const std::string weights_dtype(dtype_short_name(p.weights_dtype)), act_dtype(dtype_short_name(p.activations_dtype));
  t.add("weights %s, activations %s%s, activation checkpointing %s\n\n", weights_dtype.c_str(), act_dtype.c_str(),
      p.device.gpu ? " (projected)" : "", p.checkpointing ? "on" : "off");
}

// Memory per rank, line by line, and whether it fits the device (or the node).
void plan_format_memory(PlanText& t, const RunPlan& p) {
  const bool alone = p.world == 1;
  t.add("%-38s %14s %14s\n", "memory per rank", "rank 0", alone ? "" : "other ranks");
  auto row = [&](const char* name, double r0, double other) {
    t.add("  %-36s %14s %14s\n", name, gib(r0).c_str(), alone ? "" : gib(other).c_str());
  };
  const std::string quantized =
      p.quant.kind == quant::QuantKind::quant_none ? "" : str_cat(", linear ", quant::quant_kind_name(p.quant.kind));
  row(str_cat("base weights (", dtype_short_name(p.weights_dtype), quantized, ")").c_str(), p.rank0.weights,
      p.others.weights);
  row("adapter + gradients (f32)", p.rank0.adapter, p.others.adapter);
  row("AdamW m, v (f32)", p.rank0.optimizer, p.others.optimizer);
  row(p.checkpointing ? "activations, checkpointing  [used]" : "activations, checkpointing", p.rank0.activations_ckpt,
      p.others.activations_ckpt);
  row(p.checkpointing ? "activations, no checkpointing" : "activations, no checkpointing  [used]",
      p.rank0.activations_full, p.others.activations_full);
  row("backend scratch", p.rank0.scratch, p.others.scratch);
  row("communication buffers", p.rank0.comm, p.others.comm);
  row("runtime", p.rank0.runtime, p.others.runtime);
  row("total", p.rank0.total(), p.others.total());
  const double other_ckpt = p.checkpointing ? p.rank0.activations_full : p.rank0.activations_ckpt;
  t.add("  %-36s %14s\n", p.checkpointing ? "total without checkpointing" : "total with checkpointing",
      gib(p.rank0.total() - p.rank0.activations + other_ckpt).c_str());
  if (p.device.gpu) {
    const double total = std::max(p.rank0.total(), p.others.total());
    const double margin = p.device.memory_bytes - total;
    t.add("device memory: %s per GPU: %.0f%% used, %s %s%s\n", gib(p.device.memory_bytes).c_str(),
        100.0 * total / p.device.memory_bytes, gib(std::abs(margin)).c_str(), margin >= 0 ? "free" : "short",
        margin < 0 ? "  ** DOES NOT FIT **" : "");
  } else {
    const double node = p.rank0.total() + (p.device.ranks_per_node - 1) * p.others.total();
    t.add("node memory: %d rank(s) together %s of %s RAM (%.0f%%)%s\n", p.device.ranks_per_node, gib(node).c_str(),
        gib(p.device.memory_bytes).c_str(), 100.0 * node / p.device.memory_bytes,
        node > p.device.memory_bytes ? "  ** DOES NOT FIT **" : "");
  }
}

// The step time: compute, the TP and DP collectives; then the device's assumptions.
void plan_format_step(PlanText& t, const RunPlan& p) {
  const double tokens = static_cast<double>(p.global_batch * p.seq_len);
  t.add("\nstep: %.0f tokens, %.3g FLOP per token (flops.h), %.3g FLOP per rank\n", tokens, p.flops_per_token,
      p.flops_per_rank);
  if (p.device.gpu)
    t.add("  %-16s %10s  at %.0f%% of %.0f TFLOP/s\n", "compute", seconds(p.time.compute).c_str(),
        100.0 * p.device.efficiency, p.device.peak_flops / 1e12);
  else
    t.add("  %-16s %10s  at %.1f GFLOP/s per rank (f32 GEMM, measured)\n", "compute", seconds(p.time.compute).c_str(),
        p.device.peak_flops * p.device.efficiency / 1e9);
  auto link = [&](bool across) {
    return str_cat(across ? "between nodes " : "in the node ", (across ? p.device.inter_busbw : p.device.intra_busbw) / 1e9,
                   " GB/s");
  };
  t.add("  %-16s %10s  %.0f all-reduces, %s payload, %s moved per rank, %s\n", "TP collectives",
      seconds(p.time.tp).c_str(), p.tp_comm.count, decimal_bytes(p.tp_comm.payload).c_str(),
      decimal_bytes(p.tp_comm.moved).c_str(), link(p.tp_across_nodes).c_str());
  if (p.spec.is_moe())
    t.add("  %-16s %10s  %.0f all-to-alls, %s payload, %s sent per rank, %s\n", "EP all-to-alls",
        seconds(p.time.ep).c_str(), p.ep_comm.count, decimal_bytes(p.ep_comm.payload).c_str(),
        decimal_bytes(p.ep_comm.moved).c_str(), link(p.ep_across_nodes).c_str());
  t.add("  %-16s %10s  %.0f all-reduces, %s payload, %s moved per rank, %s\n", "DP collectives",
      seconds(p.time.dp).c_str(), p.dp_comm.count, decimal_bytes(p.dp_comm.payload).c_str(),
      decimal_bytes(p.dp_comm.moved).c_str(), link(p.dp_across_nodes).c_str());
  const double step = p.time.total();
  t.add("  %-16s %10s  %.0f tokens/s, %.0f per rank\n", "step", seconds(step).c_str(), step > 0 ? tokens / step : 0.0,
      step > 0 ? tokens / step / p.world : 0.0);
  if (p.tp_across_nodes) t.add("warning: tp %d spans nodes; its all-reduces cross the network\n", p.tp);
  t.out += "\nassumptions:\n";
  std::size_t at = 0;
  while (at < p.device.notes.size()) {
    const std::size_t nl = p.device.notes.find('\n', at);
    t.out += "  " + p.device.notes.substr(at, nl - at) + "\n";
    at = nl == std::string::npos ? p.device.notes.size() : nl + 1;
  }
}

}  // namespace

std::string plan_format(const RunPlan& p) {
  PlanText t;
  plan_format_header(t, p);
  plan_format_memory(t, p);
  plan_format_step(t, p);
  return t.out;
}

std::string plan_format_choices(const std::vector<PlanChoice>& choices, const PlanDevice& device) {
  PlanText t;
  const PlanChoice* best = nullptr;
  for (const PlanChoice& c : choices)
    if (c.problem.empty() && (c.fits || !device.gpu) && (!best || c.step < best->step)) best = &c;
  if (choices.empty()) return {};
  t.add("layouts of %d x %s (memory: the largest rank's total):\n", choices.front().world, device.name.c_str());
  t.add("  %4s %4s %4s %14s %10s\n", "tp", "ep", "dp", "memory", "step");
  for (const PlanChoice& c : choices) {
    if (!c.problem.empty()) {
      t.add("  %4d %4d %4d  not possible: %s\n", c.tp, c.ep, c.dp, c.problem.c_str());
      continue;
    }
    const char* mark = &c == best ? "  <- fastest that fits" : device.gpu && !c.fits ? "  does not fit" : "";
    t.add("  %4d %4d %4d %14s %10s%s\n", c.tp, c.ep, c.dp, gib(c.memory).c_str(), seconds(c.step).c_str(), mark);
  }
  return t.out;
}

}  // namespace anvil::train
