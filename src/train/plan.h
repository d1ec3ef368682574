// The run planner behind `anvil validate CONFIG --world N --gpu h200|h100|cpu`: what one
// rank will hold in memory, how long an optimizer step should take and how many bytes its
// collectives move, from the config and the model's config.json alone (nothing is loaded).
//
// Memory per rank, each part counted from the code that allocates it:
//   base weights       this rank's TP slice of every tensor (tp_shard.h) in the storage
//                      dtype, norms f32, a tied head once; under model.quant the linear
//                      weights it applies to as NF4 / FP8 codes and scales. On CPU a row slice is a view of
//                      the mapped file and a column slice a copy: resident either way.
//                      (Measured gap: with tp > 1 and weights used in place from an f32
//                      file, ranks keep up to ~15% more of the file resident than their
//                      slices; tests/bench/RESULTS.md, "Planner".)
//   adapter            LoRA parameters and gradients, f32, in the model's arena
//   optimizer          AdamW m and v, f32
//   activations        the rest of the arena: LlamaModel::arena_bytes_for, the model's own
//                      carving, with and without activation checkpointing (the config's
//                      choice counts in the total). f32 on CPU; bf16 on GPU is a projection
//                      until the CUDA backend exists.
//   backend scratch    CPU: cpu_scratch_bytes (attention (128, T) twice per thread, the LM-head logits
//                      block, LoRA dropout rows, bf16 weight conversion). GPU (projected):
//                      the logits block and LoRA rows; fused attention keeps no (T, T).
//   communication      the TP partial-gradient staging buffer, the adapter gathered at the
//                      end of the run (host memory: counted on CPU only), NCCL buffers (GPU)
//   runtime            a fixed per-process amount (PlanDevice::runtime_bytes) plus the
//                      micro-batch's token buffers
//
// Mixture-of-experts models: routed experts are split over `ep` ranks (weights, adapters,
// optimizer state: each rank E/ep of them); the tokens travel to their experts by all-to-all
// (plan_experts.cpp): per sparse layer and micro-batch the forward exchanges the token counts,
// dispatches the N·k routed rows (N·k·C) and brings the expert outputs back, the backward
// does the same with their gradients, and a recompute repeats the forward. A rank's expert
// activations are sized for every ep rank's rows (dropless: any expert may get them all),
// as LlamaModel carves them.
//
// Step time = compute + TP collectives + EP all-to-alls + DP collectives, none overlapped: LoRA has no
// weight-gradient GEMMs to hide the TP all-reduces behind (each sits on the critical path),
// and the DP all-reduce is one buffer after the last micro-batch. Compute is
// train_flops_per_token (flops.h) x tokens / ranks at an assumed fraction of the device's
// peak (CPU: a measured GEMM rate). A collective of S payload bytes over p ranks costs
// alpha + 2(p-1)/p S / busbw (ring all-reduce), as scripts/bench/comm_model.py counts them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "model/lora.h"
#include "model/model_spec.h"
#include "model/tp_shard.h"
#include "train/config.h"

namespace anvil::train {

enum class PlanDeviceKind { plan_cpu, plan_h100, plan_h200, plan_h200_nvl };

// "h200", "h200-nvl", "h100", "cpu"; nullopt for anything else.
std::optional<PlanDeviceKind> plan_device_from_name(const std::string& name);

// A device and the links between devices; every rate an assumption stated in `notes`,
// except the CPU's GEMM rate and memory, which are measured on this machine.
struct PlanDevice {
  std::string name;
  bool gpu = false;
  double memory_bytes = 0;      // one device's memory; CPU: the node's RAM, shared by its ranks
  double memory_bw = 0;         // bytes/s (reported; the step time counts GEMMs only)
  double peak_flops = 0;        // dense bf16 (GPU); CPU: measured f32 GEMM rate of one rank
  double efficiency = 1.0;      // the achieved fraction of peak_flops assumed
  int ranks_per_node = 8;       // TP stays inside a node when tp <= this
  double intra_busbw = 0;       // all-reduce bus bandwidth in a node, bytes/s
  double intra_alpha = 0;       // seconds per collective in a node
  double inter_busbw = 0;       // across nodes, per rank
  double inter_alpha = 0;
  double runtime_bytes = 0;     // per process: libraries, MPI, BLAS threads / CUDA context
  double comm_group_bytes = 0;  // per communicator a rank belongs to (NCCL buffers)
  std::string notes;            // the assumptions, one per line
};

// The device table. For the CPU, `world` ranks share this machine: memory is its RAM and
// peak_flops is left 0 (plan_measure_cpu_gemm fills it in).
PlanDevice plan_device(PlanDeviceKind kind, int world);

// f32 GEMM rate (FLOP/s) of the CPU backend with `threads` threads on one (tokens, C) x
// (C, F) projection of `local` (tokens capped at 512), timed for well under a second.
double plan_measure_cpu_gemm(const model::ModelSpec& local, std::int64_t tokens, int threads);

// Bytes of the base weights rank `shard` holds in `storage` (norms and biases f32); the
// linear weights `quant` applies to count their codes and scales (quant::quant_bytes of
// the rank's slice) instead.
// Under expert parallelism a rank holds E/ep of the routed experts.
double plan_weight_bytes(const model::ModelSpec& spec, const model::TpShard& shard, DType storage,
                         const quant::QuantPolicy& quant = {}, int ep = 1);

struct PlanMemory {
  double weights = 0, adapter = 0, optimizer = 0;
  double activations = 0;        // with the config's activation checkpointing
  double activations_ckpt = 0;   // checkpointing on
  double activations_full = 0;   // checkpointing off
  double scratch = 0, comm = 0, runtime = 0;
  double total() const { return weights + adapter + optimizer + activations + scratch + comm + runtime; }
};

// Collectives of one optimizer step on one rank: payload bytes summed over the calls, the
// calls, and the bytes a ring all-reduce moves per rank, 2(p-1)/p x payload.
struct PlanCollectives {
  double payload = 0, count = 0, moved = 0;
  void add(double bytes, double calls, int group);
  // An all-to-all: each rank keeps 1/p of its payload and sends the rest, (p-1)/p x payload.
  void add_all_to_all(double bytes, double calls, int group);
};

struct PlanTime {
  double compute = 0, tp = 0, ep = 0, dp = 0;
  double total() const { return compute + tp + ep + dp; }
};

struct RunPlan {
  PlanDevice device;
  model::ModelSpec spec;
  int world = 1, tp = 1, ep = 1, dp = 1, accumulation = 1;
  std::int64_t micro_batch = 1, seq_len = 0, global_batch = 1, lora_rank = 0;
  bool checkpointing = false;
  DType weights_dtype = DType::dtype_f32, activations_dtype = DType::dtype_f32;
  quant::QuantPolicy quant;  // model.quant: the linear weights it applies to are quantized
  std::int64_t lora_local = 0, lora_full = 0;  // adapter parameters: one rank's, the model's
  PlanMemory rank0;   // world rank 0 (it also gathers the adapter at the end)
  PlanMemory others;  // every other rank
  double flops_per_token = 0;  // the whole model (flops.h)
  double flops_per_rank = 0;   // one optimizer step
  PlanCollectives tp_comm, ep_comm, dp_comm;  // ep_comm: the all-to-alls (payload = rows sent and kept)
  bool tp_across_nodes = false, ep_across_nodes = false, dp_across_nodes = false;
  PlanTime time;
};

// The plan of `cfg` on `world` ranks of `device` for a model of shape `spec`. The config
// must have passed config_load with this world size (tp divides the model, the batch splits).
// The adapter that cfg.lora describes (the trainer's and the planner's).
model::LoraSpec lora_spec_from_config(const TrainConfig& cfg);

RunPlan plan_run(const TrainConfig& cfg, const model::ModelSpec& spec, int world, const PlanDevice& device);

// The per-rank table, the step time's parts and the assumptions, as anvil validate prints it.
std::string plan_format(const RunPlan& plan);

// One way to lay out `world` ranks for a run: its grid, and either the plan's largest
// per-rank memory and step time, or why the config or the model cannot take it.
struct PlanChoice {
  int world = 0, tp = 1, ep = 1, dp = 1;
  double memory = 0;  // the larger of rank 0's and the other ranks' totals
  double step = 0;    // seconds
  bool fits = false;  // memory within one device's (GPU plans)
  std::string problem;  // non-empty: not a valid layout (the config key and why)
};
// Every (tp, ep, dp) with tp x ep x dp = world, tp innermost, for cfg's batch and model
// (ep > 1 only for mixture-of-experts models), planned on `device`.
std::vector<PlanChoice> plan_grid_choices(const TrainConfig& cfg, const model::ModelSpec& spec, int world,
                                          const PlanDevice& device);
// The choices as a table, the fastest layout that fits marked.
std::string plan_format_choices(const std::vector<PlanChoice>& choices, const PlanDevice& device);

}  // namespace anvil::train
