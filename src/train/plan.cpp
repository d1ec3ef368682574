#include "train/plan.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"
#include "model/llama.h"
#include "model/lora.h"
#include "quant/quant_load.h"
#include "train/config_check.h"
#include "train/flops.h"

namespace anvil::train {

namespace fs = std::filesystem;

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr double kMiB = 1024.0 * 1024.0;
// The CPU backend's cross-entropy row block (cpu_backend.h kLossRows): two small
// all-reduces per block under TP. The GPU projection assumes the same block.
constexpr std::int64_t kLossRows = 64;
// LoRA dropout rows of the backend scratch (cpu_backend.h kLoraRows), for the GPU projection.
constexpr std::int64_t kLoraRows = 256;

// Measured on this 2-core VM (tests/bench/RESULTS.md, "Planner"): the peak RSS of
// `anvil train` minus every planned buffer, for the tiny model, on 1 rank and per rank of 2:
// the executable and its libraries (libstdc++, yaml-cpp, HDF5, Open MPI with its
// shared-memory transport) and OpenBLAS's per-thread GEMM buffers.
constexpr double kCpuRuntimeBytes = 28.0 * kMiB;
// Assumed for a GPU rank: the CUDA context, cuBLAS(Lt) workspaces and the kernels' modules.
constexpr double kGpuRuntimeBytes = 1.0 * kGiB;
// Assumed per NCCL communicator: channel buffers (NCCL_BUFFSIZE 4 MiB x channels x peers).
constexpr double kNcclGroupBytes = 0.5 * kGiB;

double align64(double bytes) { return std::ceil(bytes / 64.0) * 64.0; }

double ring_factor(int p) { return p > 1 ? 2.0 * (p - 1) / p : 0.0; }

DType weight_storage(const TrainConfig& cfg, bool gpu) {
  // model.dtype auto: bf16 on CUDA, f32 on CPU (config.h).
  if (cfg.model.dtype == WeightDtype::weight_bf16) return DType::dtype_bf16;
  if (cfg.model.dtype == WeightDtype::weight_f32) return DType::dtype_f32;
  return gpu ? DType::dtype_bf16 : DType::dtype_f32;
}


}  // namespace

std::optional<PlanDeviceKind> plan_device_from_name(const std::string& name) {
  if (name == "h200") return PlanDeviceKind::plan_h200;
  if (name == "h200-nvl") return PlanDeviceKind::plan_h200_nvl;
  if (name == "h100") return PlanDeviceKind::plan_h100;
  if (name == "cpu") return PlanDeviceKind::plan_cpu;
  return std::nullopt;
}

void PlanCollectives::add(double bytes, double calls, int group) {
  if (group <= 1 || calls <= 0) return;
  payload += bytes;
  count += calls;
  moved += ring_factor(group) * bytes;
}

void PlanCollectives::add_all_to_all(double bytes, double calls, int group) {
  if (group <= 1 || calls <= 0) return;
  payload += bytes;
  count += calls;
  moved += (group - 1.0) / group * bytes;
}

namespace {

// A GPU profile: what every one shares (50% of peak, one 400 Gb/s NIC per GPU between nodes
// at 40 GB/s, the runtime and NCCL reserves) around the card's own figures; `card` and
// `links` are its lines of notes.
struct GpuCard {
  const char* name;
  double memory_bytes, memory_bw, peak_flops;
  int per_node;
  double intra_busbw, intra_alpha;
  const char* card;
  const char* links;
};
PlanDevice gpu_device(const GpuCard& c) {
  PlanDevice d;
  d.name = c.name;
  d.gpu = true;
  d.memory_bytes = c.memory_bytes;
  d.memory_bw = c.memory_bw;
  d.peak_flops = c.peak_flops;
  d.efficiency = 0.5;
  d.ranks_per_node = c.per_node;
  d.intra_busbw = c.intra_busbw;
  d.intra_alpha = c.intra_alpha;
  d.inter_busbw = 40e9;
  d.inter_alpha = 20e-6;
  d.runtime_bytes = kGpuRuntimeBytes;
  d.comm_group_bytes = kNcclGroupBytes;
  d.notes = str_cat(c.card, "\n", "compute: 50% of peak (GEMMs only, flops.h)\n", c.links,
                    "between nodes: one 400 Gb/s InfiniBand NDR HCA (or NIC) per GPU (50 GB/s), 40 GB/s achieved, "
                    "20 us each\n"
                    "activations bf16 and backend scratch: a projection of the CPU layout (the CUDA backend keeps f32 "
                    "activations today)\n"
                    "runtime 1 GiB per GPU (CUDA context, cuBLAS workspaces), NCCL 0.5 GiB per communicator: assumed\n");
  return d;
}

constexpr const char* kNvlinkSwitch =
    "NVLink: 900 GB/s per GPU (both directions): all-reduce bus bandwidth 450 GB/s, 10 us each\n";
// The target server's card: four H200 NVL joined by a 4-way NVLink bridge (no NVSwitch, so
// no NVLS in-network reduction), lower clocks than the SXM part.
constexpr GpuCard kH200Nvl{
    "H200 NVL", 141e9, 4.8e12, 835e12, 4, 300e9, 15e-6,
    "H200 NVL (PCIe card): 141 GB HBM3e, 4.8 TB/s, 835 TFLOP/s dense bf16 (NVIDIA's 1,671 with sparsity), 4 per "
    "server",
    "NVLink bridge, 4-way: 900 GB/s per GPU in both directions, split over 3 peers, no NVSwitch (no NVLS):\n"
    "  all-reduce bus bandwidth 300 GB/s assumed (not measured), 15 us each; without a bridge (PCIe Gen5\n"
    "  only, 128 GB/s) expect about 20-25 GB/s\n"};
constexpr GpuCard kH200Sxm{"H200 SXM", 141e9, 4.8e12, 989e12, 8, 450e9, 10e-6,
                           "H200 SXM: 141 GB HBM3e, 4.8 TB/s, 989 TFLOP/s dense bf16, 8 per node", kNvlinkSwitch};
constexpr GpuCard kH100Sxm{"H100 SXM", 80e9, 3.35e12, 989e12, 8, 450e9, 10e-6,
                           "H100 SXM: 80 GB HBM3, 3.35 TB/s, 989 TFLOP/s dense bf16, 8 per node", kNvlinkSwitch};

}  // namespace

PlanDevice plan_device(PlanDeviceKind kind, int world) {
  PlanDevice d;
  if (kind == PlanDeviceKind::plan_cpu) {
    d.name = "CPU (this machine)";
    d.memory_bytes = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGESIZE));
    d.efficiency = 1.0;
    d.ranks_per_node = std::max(world, 1);
    d.intra_busbw = d.inter_busbw = 5e9;
    d.intra_alpha = d.inter_alpha = 5e-6;
    d.runtime_bytes = kCpuRuntimeBytes;
    d.notes =
        "all ranks on this machine, sharing its RAM and cores (threads per rank = cores / ranks)\n"
        "compute: the f32 GEMM rate measured just now on a projection of this model (norms, softmax and\n"
        "  the cross-entropy's exponentials are not counted: the prediction is a lower bound)\n"
        "collectives: MPI over shared memory, assumed 5 GB/s bus bandwidth and 5 us each\n"
        "runtime: 28 MiB per process (libraries, MPI, OpenBLAS buffers; measured, tests/bench/RESULTS.md)\n";
    return d;
  }
  if (kind == PlanDeviceKind::plan_h200_nvl) return gpu_device(kH200Nvl);
  return gpu_device(kind == PlanDeviceKind::plan_h200 ? kH200Sxm : kH100Sxm);
}

double plan_measure_cpu_gemm(const model::ModelSpec& local, std::int64_t tokens, int threads) {
  const std::int64_t m = std::clamp<std::int64_t>(tokens, 1, 512);
  const std::int64_t k = local.hidden_size, n = local.intermediate_size;
  std::vector<float> a(static_cast<std::size_t>(m * k)), b(static_cast<std::size_t>(k * n)),
      c(static_cast<std::size_t>(m * n));
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i % 17) * 0.01f;
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i % 13) * 0.01f;
  backend::cpu_threads_set(threads);
  auto be = backend::make_cpu_backend();
  auto once = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    // y(m, n) = x(m, k) W^T with W (n, k): the forward of a gate projection.
    be->gemm(false, true, m, n, k, 1.0f, a.data(), k, b.data(), k, 0.0f, c.data(), n);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  once();  // warm-up: BLAS threads and buffers
  double best = once();
  const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  for (double spent = best; spent < 0.3;) {
    const double t = once();
    spent += t;
    best = std::min(best, t);
  }
  return flops / std::max(best, 1e-9);
}

namespace {

// One of Llama 4's fused expert tensors, "model.layers.{l}.feed_forward.experts.gate_up_proj"
// (E, C, 2F) or "...experts.down_proj" (E, F, C): this rank's bytes of it.
// {l} of "model.layers.{l}. ...".
std::int64_t layer_of(const std::string& n) {
  const std::size_t at = std::string("model.layers.").size();
  return std::stoll(n.substr(at, n.find('.', at) - at));
}

double plan_fused_expert_bytes(const model::ModelSpec& spec, const model::TpShard& shard, double st,
                               const quant::QuantPolicy& quant, const model::WeightInfo& w, int ep) {
  const std::string& n = w.name;
  const std::int64_t layer = layer_of(n);
  const bool down = n.ends_with(".down_proj");
  const std::int64_t in = w.shape[1] / (down ? shard.size : 1);
  const std::int64_t out = w.shape[2] / (down ? 1 : 2 * shard.size);  // gate_up: one of the two halves
  const std::vector<model::Proj> projs =
      down ? std::vector{model::Proj::proj_expert_down}
           : std::vector{model::Proj::proj_expert_gate, model::Proj::proj_expert_up};
  double bytes = 0;
  for (std::int64_t e = 0; e < w.shape[0]; ++e)
    for (const model::Proj p : projs)
      bytes += quant.applies(model::proj_module_path(spec, layer, p, e) + ".weight")
                   ? static_cast<double>(quant::quant_bytes(quant.kind, out, in))
                   : static_cast<double>(in * out) * st;
  return bytes / ep;  // this rank's E/ep of them
}

// A linear weight (out, in) that is bitsandbytes NF4 on disk: what the loader keeps of this
// rank's slice of it (quant::nf4_load_slice).
double plan_bnb4_bytes(const model::ModelSpec& spec, const model::TpShard& shard,
                       const quant::QuantPolicy::Bnb4OnDisk& form, const model::WeightInfo& w, model::Proj p) {
  const std::int64_t out = w.shape[0], in = w.shape[1];
  const model::WeightSlice s = model::tp_proj_slice_at(spec, shard, layer_of(w.name), p);
  const bool by_rows = s.axis == model::SplitAxis::split_rows;
  const std::int64_t row0 = by_rows ? s.start : 0, rows = by_rows ? s.count : out;
  const std::int64_t col0 = by_rows ? 0 : s.start, cols = by_rows ? in : s.count;  // all columns: tp 1, whole
  return static_cast<double>(quant::nf4_slice_bytes(form, out, in, row0, rows, col0, cols));
}

}  // namespace

double plan_weight_bytes(const model::ModelSpec& spec, const model::TpShard& shard, DType storage,
                         const quant::QuantPolicy& quant, int ep) {
  const double st = static_cast<double>(dtype_size(storage));
  const auto C = static_cast<double>(spec.hidden_size);
  double bytes = 0;
  for (const model::WeightInfo& w : model::model_weight_list(spec)) {
    const std::string& n = w.name;
    if (n == "lm_head.weight" && quant.applies(n)) {
      bytes += static_cast<double>(quant::quant_bytes(quant.kind, shard.vocab, spec.hidden_size));
      continue;
    }
    if (n == "model.embed_tokens.weight" || n == "lm_head.weight") {
      bytes += static_cast<double>(shard.vocab) * C * st;
      continue;
    }
    // Llama 4's routed experts fused in two 3-D tensors (E, in, out): this rank's E/ep of them,
    // each split over TP by its width (gate_up's out, down's in) as an expert's projections are,
    // and each projection quantized or not as the loader decides it: by the name
    // model.quant_skip matches, ...feed_forward.experts.{e}.{gate|up|down}_proj.weight.
    if (w.shape.rank() == 3) {
      bytes += plan_fused_expert_bytes(spec, shard, st, quant, w, ep);
      continue;
    }
    // model.layers.{l}.{module}.{proj}.{weight|bias} (a routed expert's: ...experts.{e}.{proj}),
    // or a norm or a router (f32, replicated).
    const std::size_t dot = n.rfind('.');
    const std::size_t prev = n.rfind('.', dot - 1);
    const std::string leaf = n.substr(prev + 1, dot - prev - 1);
    const bool routed = n.find(".experts.") != std::string::npos;
    const std::optional<model::Proj> p = routed ? model::expert_proj_from_leaf(spec, leaf) : model::proj_from_name(leaf);
    const double share = routed ? 1.0 / ep : 1.0;  // this rank's E/ep experts
    if (!p) {
      bytes += static_cast<double>(w.shape.numel()) * 4.0;
      continue;
    }
    auto local = model::tp_proj_shape(spec, shard, *p);  // (out, in)
    if (spec.is_llama4() && (*p == model::Proj::proj_gate || *p == model::Proj::proj_up || *p == model::Proj::proj_down)) {
      // Llama 4's dense MLPs and shared experts differ in width: the tensor's own, split over TP.
      const bool rows = model::proj_row_parallel(*p);
      local = {w.shape[0] / (rows ? 1 : shard.size), w.shape[1] / (rows ? shard.size : 1)};
    }
    if (n.ends_with(".bias"))  // f32, split with the output rows of a column-parallel layer
      bytes += share * 4.0 * static_cast<double>(model::proj_row_parallel(*p) ? w.shape.numel() : local[0]);
    else if (quant.applies(n) && quant.bnb && quant.bnb->packed(n))
      bytes += share * plan_bnb4_bytes(spec, shard, *quant.bnb, w, *p);
    else if (quant.applies(n))
      bytes += share * static_cast<double>(quant::quant_bytes(quant.kind, local[0], local[1]));
    else
      bytes += share * static_cast<double>(local[0] * local[1]) * st;
  }
  return bytes;
}

namespace {

// What one TP rank holds, shared by the memory, collective and time estimates.
struct RankShapes {
  model::LoraSpec lora;
  model::TpShard shard;
  model::ModelSpec local;
  model::LoraLayout layout;
  double lora_bytes = 0;         // this rank's adapter, f32 (its E/ep experts' under ep)
  double expert_lora_bytes = 0;  // of which the routed experts'
  std::int64_t tokens = 0;  // N = micro_batch x seq_len
  double staged_tp = 0, staged_kv = 0;  // TP partial gradients reduced once per step, bytes
};

RankShapes rank_shapes(const TrainConfig& cfg, const model::ModelSpec& spec, const RunPlan& p) {
  RankShapes r;
  r.lora = lora_spec_from_config(cfg);
  r.shard = model::tp_shard(spec, 0, p.tp);  // every TP rank has these shapes
  if (p.ep > 1) model::ep_shard_set(r.shard, spec, 0, p.ep);  // and every ep rank
  r.local = model::tp_local_spec(spec, r.shard);
  r.layout = model::LoraLayout(r.local, r.lora);
  r.tokens = p.micro_batch * p.seq_len;
  for (const model::LoraSlot& s : r.layout.slots())
    if (s.expert >= 0) r.expert_lora_bytes += 4.0 * static_cast<double>(r.lora.rank * (s.in + s.out));
  r.lora_bytes = 4.0 * static_cast<double>(r.layout.size());
  for (const model::LoraPart& part : model::lora_tp_parts(r.shard, r.layout)) {
    if (part.grad == model::GradReduce::grad_reduce_none) continue;
    (part.grad == model::GradReduce::grad_reduce_tp ? r.staged_tp : r.staged_kv) += 4.0 * static_cast<double>(part.count);
  }
  return r;
}

// ---- memory per rank ------------------------------------------------------------------
void plan_memory(RunPlan& p, const model::ModelSpec& spec, const RankShapes& r) {
  const PlanDevice& device = p.device;
  model::ModelLimits limits;
  limits.micro_batch = p.micro_batch;
  limits.seq_len = p.seq_len;
  auto activations = [&](bool ckpt) {
    limits.activation_checkpointing = ckpt;
    return static_cast<double>(model::LlamaModel::arena_bytes_for(r.local, r.layout, limits, p.activations_dtype)) -
           2.0 * align64(r.lora_bytes);
  };
  PlanMemory m;
  m.weights = plan_weight_bytes(spec, r.shard, p.weights_dtype, p.quant, p.ep);
  // A bitsandbytes NF4 base on disk costs a TP rank by where its slices start
  // (quant::nf4_load_slice): the other ranks are planned as the largest of them.
  double other_weights = m.weights;
  for (int t = 1; p.quant.bnb && t < p.tp; ++t) {
    model::TpShard shard = model::tp_shard(spec, t, p.tp);
    if (p.ep > 1) model::ep_shard_set(shard, spec, 0, p.ep);
    other_weights = std::max(other_weights, plan_weight_bytes(spec, shard, p.weights_dtype, p.quant, p.ep));
  }
  m.adapter = 2.0 * align64(r.lora_bytes);  // parameters and gradients, in the arena
  m.optimizer = 2.0 * r.lora_bytes;         // AdamW m, v
  m.activations_ckpt = activations(true);
  m.activations_full = activations(false);
  m.activations = p.checkpointing ? m.activations_ckpt : m.activations_full;
  limits.activation_checkpointing = p.checkpointing;
  const std::int64_t N = r.tokens;
  if (device.gpu) {
    const double width = static_cast<double>(
        std::max({r.local.hidden_size, r.local.intermediate_size, r.local.num_attention_heads * r.local.head_dim}));
    m.scratch = 4.0 * (static_cast<double>(kLossRows * r.local.vocab_size) +
                       2.0 * static_cast<double>(std::min(kLoraRows, N)) * width);
  } else {
    m.scratch = static_cast<double>(backend::cpu_scratch_bytes(model::LlamaModel::backend_limits_for(r.local, limits)));
  }
  m.comm = r.staged_tp + r.staged_kv;  // the TP partial gradients, packed for one all-reduce (LlamaModel)
  if (device.gpu) {
    const int groups = (p.tp > 1 ? 1 : 0) + (p.ep > 1 ? 1 : 0) + (p.dp > 1 ? 1 : 0);
    m.comm += groups * device.comm_group_bytes;
  }
  m.runtime = device.runtime_bytes + 4.0 * 4.0 * static_cast<double>(N);  // + ids, targets, positions, segments
  p.others = m;
  p.others.weights = other_weights;
  p.rank0 = m;
  if (!device.gpu) {
    // The end of the run gathers the adapter: every rank the TP group's slices, rank 0 also
    // the full layout (AdapterState::gather_full), while the model is still alive.
    p.others.comm += r.lora_bytes * p.tp;
    p.rank0.comm += r.lora_bytes * p.tp + 4.0 * static_cast<double>(p.lora_full);
  }
}

// ---- collectives of one optimizer step --------------------------------------------------
void plan_collectives(RunPlan& p, const model::ModelSpec& spec, const RankShapes& r) {
  const double e = static_cast<double>(dtype_size(p.activations_dtype));
  const std::int64_t N = r.tokens;
  const double act = static_cast<double>(N) * static_cast<double>(spec.hidden_size) * e;  // one (N, C)
  const double L = static_cast<double>(spec.num_hidden_layers);
  const double blocks = std::ceil(static_cast<double>(N) / kLossRows);
  const double a = p.accumulation;
  // Per micro-batch: the embedding; per layer o and down forward, the attention and MLP
  // input gradients backward, o again in the recompute; the cross-entropy's row max and
  // (sum, target) per block, and the LM head's input gradient.
  const double per_layer = p.checkpointing ? 5.0 : 4.0;
  p.tp_comm.add(a * act * (1.0 + L * per_layer + 1.0), a * (2.0 + L * per_layer), p.tp);
  p.tp_comm.add(a * static_cast<double>(N) * (4.0 + 16.0), a * 2.0 * blocks, p.tp);
  // Per step: the replicated adapter matrices' partial gradients and the gradient norm.
  p.tp_comm.add(r.staged_tp, r.staged_tp > 0 ? 1 : 0, p.tp);
  p.tp_comm.add(r.staged_kv, r.staged_kv > 0 ? 1 : 0, static_cast<int>(r.shard.kv_replicas));
  p.tp_comm.add(8.0, 1, p.tp);
  // EP, per sparse layer and micro-batch: the forward's token counts (E per rank), routed
  // rows out and expert outputs back; the backward's two; the recompute's three again.
  if (p.ep > 1) {
    double sparse = 0;
    for (std::int64_t l = 0; l < spec.num_hidden_layers; ++l) sparse += spec.layer_is_moe(l) ? 1.0 : 0.0;
    const double rows = a * sparse * static_cast<double>(N * spec.moe.top_k) * static_cast<double>(spec.hidden_size) * e;
    const double counts = a * sparse * 8.0 * static_cast<double>(spec.moe.num_experts);
    const double passes = p.checkpointing ? 2.0 : 1.0;  // forwards per micro-batch
    p.ep_comm.add_all_to_all(passes * counts, passes * a * sparse, p.ep);
    p.ep_comm.add_all_to_all((2.0 * passes + 2.0) * rows, (2.0 * passes + 2.0) * a * sparse, p.ep);
  }
  // DP: the rank's flat adapter gradient and the loss; the preemption flag over the world.
  // Under ep the ep x dp ranks that hold a TP slice are all data-parallel for the rest of
  // the model; a routed expert's adapter lives on one rank of each ep group, so it is
  // reduced over dp only.
  const double expert_local = p.ep > 1 ? r.expert_lora_bytes : 0.0;
  p.dp_comm.add(r.lora_bytes - expert_local + 8.0, 2, p.ep * p.dp);
  p.dp_comm.add(expert_local, expert_local > 0 ? 1 : 0, p.dp);
  p.dp_comm.add(4.0, 1, p.world);
  p.tp_across_nodes = p.tp > p.device.ranks_per_node;
  p.ep_across_nodes = p.tp * p.ep > p.device.ranks_per_node;
  p.dp_across_nodes = p.world > p.device.ranks_per_node;
}

// ---- step time ----------------------------------------------------------------------------
void plan_time(RunPlan& p, const model::ModelSpec& spec, const RankShapes& r) {
  const PlanDevice& device = p.device;
  p.flops_per_token = train_flops_per_token(spec, r.lora, p.seq_len, p.checkpointing).total();
  p.flops_per_rank = p.flops_per_token * static_cast<double>(p.global_batch * p.seq_len) / p.world;
  const double rate = device.peak_flops * device.efficiency;
  p.time.compute = rate > 0 ? p.flops_per_rank / rate : 0.0;
  auto link_time = [&](const PlanCollectives& c, bool across) {
    return c.count * (across ? device.inter_alpha : device.intra_alpha) +
           c.moved / (across ? device.inter_busbw : device.intra_busbw);
  };
  p.time.tp = link_time(p.tp_comm, p.tp_across_nodes);
  p.time.ep = link_time(p.ep_comm, p.ep_across_nodes);
  p.time.dp = link_time(p.dp_comm, p.dp_across_nodes);
}

}  // namespace

RunPlan plan_run(const TrainConfig& cfg, const model::ModelSpec& spec, int world, const PlanDevice& device) {
  RunPlan p;
  p.device = device;
  p.spec = spec;
  p.world = world;
  p.tp = cfg.parallel.tp;
  p.ep = std::max(cfg.parallel.ep, 1);
  p.dp = config_data_parallel(cfg, world) / p.ep;  // the config's data ranks are ep x dp
  p.accumulation = config_grad_accumulation(cfg, world);
  p.micro_batch = cfg.train.micro_batch;
  p.seq_len = cfg.data.seq_len;
  p.global_batch = cfg.train.global_batch;
  p.lora_rank = cfg.lora.rank;
  p.checkpointing = cfg.train.activation_checkpointing;
  p.weights_dtype = weight_storage(cfg, device.gpu);
  p.quant = quant_policy_from_config(cfg);
  if (p.quant.kind == quant::QuantKind::quant_nf4 && fs::is_regular_file(fs::path(cfg.model.path) / "config.json"))
    p.quant.bnb = quant::bnb4_on_disk_of_model(cfg.model.path);
  p.activations_dtype = device.gpu ? DType::dtype_bf16 : DType::dtype_f32;
  const RankShapes r = rank_shapes(cfg, spec, p);
  p.lora_local = static_cast<std::int64_t>(r.lora_bytes / 4.0);  // its E/ep experts' adapters under ep
  p.lora_full = model::LoraLayout(spec, r.lora).size();
  plan_memory(p, spec, r);
  plan_collectives(p, spec, r);
  plan_time(p, spec, r);
  return p;
}

std::vector<PlanChoice> plan_grid_choices(const TrainConfig& cfg, const model::ModelSpec& spec, int world,
                                          const PlanDevice& device) {
  std::vector<PlanChoice> out;
  for (int tp = 1; tp <= world; ++tp) {
    if (world % tp != 0) continue;
    for (int ep = 1; tp * ep <= world; ++ep) {
      if ((world / tp) % ep != 0 || (ep > 1 && !spec.is_moe())) continue;
      PlanChoice c;
      c.world = world;
      c.tp = tp;
      c.ep = ep;
      c.dp = world / (tp * ep);
      TrainConfig at = cfg;
      at.parallel.tp = tp;
      at.parallel.ep = ep;
      at.parallel.dp = 0;
      const std::vector<std::string> split = model::tp_shard_problems(spec, tp);
      BatchLayout layout;
      if (!split.empty()) {
        c.problem = str_cat("parallel.tp: ", split.front());
      } else if (ep > 1 && spec.moe.num_experts % ep != 0) {
        c.problem = str_cat("parallel.ep: ", ep, " does not divide the ", spec.moe.num_experts, " experts");
      } else if (const std::vector<KeyProblem> batch = batch_layout_check(at, world, layout); !batch.empty()) {
        c.problem = str_cat(batch.front().key, ": ", batch.front().message);
      } else {
        const RunPlan p = plan_run(at, spec, world, device);
        c.memory = std::max(p.rank0.total(), p.others.total());
        c.step = p.time.total();
        c.fits = c.memory <= device.memory_bytes;
      }
      out.push_back(std::move(c));
    }
  }
  return out;
}

model::LoraSpec lora_spec_from_config(const TrainConfig& cfg) {
  model::LoraSpec s;
  s.rank = cfg.lora.rank;
  s.alpha = cfg.lora.alpha;
  s.dropout = cfg.lora.dropout;
  s.rslora = cfg.lora.rslora;
  s.targets = model::lora_targets_from_names(cfg.lora.targets, "lora.targets");
  return s;
}

}  // namespace anvil::train
