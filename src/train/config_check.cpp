#include "train/config_check.h"

#include <algorithm>
#include <filesystem>
#include <initializer_list>
#include <optional>

#include "backend/backend_support.h"
#include "core/error.h"
#include "core/log.h"
#include "data/chat_template.h"
#include "model/lora.h"
#include "model/model_spec.h"
#include "model/tp_shard.h"
#include "quant/quant_load.h"
#include "train/config_suggest.h"

namespace anvil::train {

namespace fs = std::filesystem;

std::vector<KeyProblem> batch_layout_check(const TrainConfig& cfg, int world_size, BatchLayout& layout) {
  const int tp = cfg.parallel.tp, ep = cfg.parallel.ep;
  const int world = world_size > 0 ? world_size : tp * ep * std::max(cfg.parallel.dp, 1);
  if (world % tp != 0) return {{"parallel.tp", str_cat(tp, " does not divide the world size ", world)}};
  if (world % (tp * ep) != 0)
    return {{"parallel.ep", str_cat("tp ", tp, " x ep ", ep, " = ", tp * ep, " does not divide the world size ",
                                    world)}};
  const int dp = cfg.parallel.dp > 0 ? cfg.parallel.dp : world / (tp * ep);
  if (tp * ep * dp != world)
    return {{"parallel.dp", ep > 1 ? str_cat("tp ", tp, " x ep ", ep, " x dp ", dp, " = ", tp * ep * dp,
                                             " ranks, but the world size is ", world, " (dp: auto fits any world)")
                                   : str_cat("tp ", tp, " x dp ", dp, " = ", tp * dp,
                                             " ranks, but the world size is ", world, " (dp: auto fits any world)")}};
  // Megatron's rule: every optimizer step sees exactly global_batch sequences, split into
  // micro-batches of the same size on every data-parallel rank. The ep ranks of a replica
  // are data-parallel for everything but the routed experts, so the batch splits over
  // ep × dp ranks.
  const int data_ranks = ep * dp;
  const long long per_pass = static_cast<long long>(cfg.train.micro_batch) * data_ranks;
  if (cfg.train.global_batch % per_pass != 0)
    return {{"train.global_batch", str_cat(cfg.train.global_batch, " is not a multiple of micro_batch x ",
                                           ep > 1 ? "ep x dp = " : "dp = ", cfg.train.micro_batch, " x ",
                                           ep > 1 ? str_cat(ep, " x ", dp) : str_cat(dp), " = ", per_pass)}};
  layout = BatchLayout{world, data_ranks, static_cast<int>(cfg.train.global_batch / per_pass)};
  return {};
}

namespace {

// A problem for `key` when `path` is not an existing regular file.
void check_file(const std::string& key, const std::string& path, std::vector<KeyProblem>& out) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st))
    out.push_back({key, str_cat("file '", path, "' does not exist")});
  else if (fs::is_directory(st))
    out.push_back({key, str_cat("'", path, "' is a directory, expected a JSONL file")});
}

// What `problem(kind)` (a backend_support.h check) says about the backend this config runs
// on: parallel.backend, with auto resolved as the Runtime will resolve it. auto is only
// resolved (which asks the CUDA driver) when the CUDA backend refuses the value; the CPU
// backend takes every shape.
template <typename Problem>
std::optional<std::string> backend_limit_problem(const TrainConfig& cfg, Problem problem) {
  if (!problem(BackendKind::backend_cuda)) return std::nullopt;
  if (cfg.parallel.backend != BackendKind::backend_auto) return problem(cfg.parallel.backend);
  const BackendKind resolved = backend::backend_auto();
  std::optional<std::string> p = problem(resolved);
  if (p) *p += str_cat(" (parallel.backend: auto picks ", enum_name(resolved), " on this machine)");
  return p;
}

// lora.targets against the model: a target that adapts no layer (a dense MLP name when every
// layer is sparse, 'experts' on a dense model) is a mistake unless others adapt something;
// routed experts take no dropout (neither does PEFT's LoRA on transformers' fused experts).
void check_lora_targets(const TrainConfig& cfg, const model::ModelSpec& spec, std::vector<KeyProblem>& out) {
  model::LoraSpec lora;
  try {
    lora.targets = model::lora_targets_from_names(cfg.lora.targets, "lora.targets");
  } catch (const Error&) {
    return;  // reported by the key's own check
  }
  lora.rank = 1;
  std::array<bool, model::kProjCount> used{};
  const model::LoraLayout layout(spec, lora);
  for (const auto& s : layout.slots()) used[static_cast<std::size_t>(s.proj)] = true;
  std::string idle;  // the targets that adapt nothing, comma-separated
  bool any = false, experts = false;
  for (int p = 0; p < model::kProjCount; ++p) {
    if (!lora.targets[static_cast<std::size_t>(p)]) continue;
    any = any || used[static_cast<std::size_t>(p)];
    experts = experts || (used[static_cast<std::size_t>(p)] && model::proj_is_expert(static_cast<model::Proj>(p)));
    if (!used[static_cast<std::size_t>(p)])
      idle += str_cat(idle.empty() ? "" : ", ", model::proj_name(static_cast<model::Proj>(p)));
  }
  if (!any && !idle.empty())
    out.push_back({"lora.targets", str_cat("no layer of the model (", spec.model_type, ") has ", idle,
                                           spec.is_moe() ? "; name 'experts' to adapt the routed experts"
                                                         : "; 'experts' needs a mixture-of-experts model")});
  else if (!idle.empty())
    log_warn("lora.targets: ", idle, " adapt no layer of this ", spec.model_type, " model");
  if (experts && cfg.lora.dropout > 0)
    out.push_back({"lora.dropout", str_cat(cfg.lora.dropout, " with adapters on routed experts: expert adapters "
                                                             "take no dropout (set 0, or leave experts out of "
                                                             "lora.targets)")});
}

// data.chat_template: a template's name, or a .jinja file holding one that anvil can render.
void check_chat_template(const std::string& value, bool check_files, std::vector<KeyProblem>& out) {
  if (data::chat_template_from_name(value)) return;
  if (!value.ends_with(".jinja")) {
    out.push_back({"data.chat_template", str_cat("expected one of llama3, chatml, mistral or a path to a .jinja "
                                                 "file, got '", value, "'",
                                                 did_you_mean(value, data::chat_template_names()))});
    return;
  }
  if (!check_files) return;
  try {
    data::chat_template_check(value);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::user) throw;
    out.push_back({"data.chat_template", e.what()});
  }
}

// tp must split the model as model/tp_shard.h describes, and the backend must take its
// attention shape (`backend_ok`: parallel.backend parsed).
void check_model(const TrainConfig& cfg, bool tp_ok, bool backend_ok, std::vector<KeyProblem>& out) {
  const std::string& dir = cfg.model.path;
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (!fs::exists(st)) {
    out.push_back({"model.path", str_cat("directory '", dir, "' does not exist")});
    return;
  }
  if (!fs::is_directory(st)) {
    out.push_back(
        {"model.path", str_cat("'", dir, "' is not a directory (expected a Hugging Face model directory)")});
    return;
  }
  model::ModelSpec spec;
  try {
    spec = model::model_spec_from_dir(dir);
    model::model_spec_check_supported(spec, dir + "/config.json");
  } catch (const std::exception& e) {
    out.push_back({"model.path", e.what()});
    return;
  }
  try {
    const quant::QuantKind on_disk = quant::quant_format_of_model(dir);
    if (on_disk != quant::QuantKind::quant_none && static_cast<int>(cfg.model.quant) != static_cast<int>(on_disk))
      out.push_back({"model.quant", str_cat(dir, "/config.json: the weights are ", quant::quant_kind_name(on_disk),
                                            " on disk (quantization_config); set model.quant: ",
                                            quant::quant_kind_name(on_disk), " to train on them")});
  } catch (const std::exception& e) {
    out.push_back({"model.path", e.what()});
  }
  if (backend_ok) {
    const auto problem = backend_limit_problem(
        cfg, [&](BackendKind kind) { return backend::backend_head_dim_problem(kind, spec.head_dim); });
    if (problem) out.push_back({"model.path", str_cat(dir, "/config.json: ", *problem)});
  }
  check_lora_targets(cfg, spec, out);
  if (!tp_ok) return;
  for (std::string& problem : model::tp_shard_problems(spec, cfg.parallel.tp))
    out.push_back({"parallel.tp", std::move(problem)});
  const int ep = cfg.parallel.ep;
  if (ep > 1 && !spec.is_moe())
    out.push_back({"parallel.ep", str_cat(ep, " needs a mixture-of-experts model, but ", dir,
                                          " is a dense model (", spec.model_type, "); use ep: 1")});
  else if (ep > 1 && spec.moe.num_experts % ep != 0)
    out.push_back({"parallel.ep", str_cat(ep, " does not divide the model's num_experts (", spec.moe.num_experts,
                                          ")")});
}

}  // namespace

std::vector<KeyProblem> config_check_rules(const TrainConfig& cfg, const ConfigContext& ctx,
                                           const std::function<bool(std::string_view)>& parsed) {
  const auto ok = [&](std::initializer_list<std::string_view> keys) {
    for (std::string_view k : keys)
      if (!parsed(k)) return false;
    return true;
  };
  std::vector<KeyProblem> out;

  if (ok({"train.steps", "train.warmup_steps"}) && cfg.train.steps > 0 &&
      cfg.train.warmup_steps > cfg.train.steps)
    out.push_back({"train.warmup_steps",
                   str_cat(cfg.train.warmup_steps, " is more than train.steps (", cfg.train.steps, ")")});
  if (ok({"train.eval_every", "data.eval", "data.eval_fraction"}) && cfg.train.eval_every > 0 && !cfg.data.eval &&
      cfg.data.eval_fraction == 0)
    out.push_back({"train.eval_every", str_cat(cfg.train.eval_every,
                                               " needs an evaluation set: set data.eval or data.eval_fraction")});
  if (ok({"data.eval", "data.eval_fraction"}) && cfg.data.eval && cfg.data.eval_fraction > 0)
    out.push_back({"data.eval_fraction", "set data.eval or data.eval_fraction, not both"});
  if (ok({"parallel.backend", "parallel.comm"}) && cfg.parallel.backend == BackendKind::backend_cpu &&
      cfg.parallel.comm == CommKind::comm_nccl)
    out.push_back({"parallel.comm", "nccl needs GPUs, but parallel.backend is cpu (use mpi or auto)"});
  if (ok({"lora.rank", "parallel.backend"})) {
    const auto problem = backend_limit_problem(
        cfg, [&](BackendKind kind) { return backend::backend_lora_rank_problem(kind, cfg.lora.rank); });
    if (problem) out.push_back({"lora.rank", *problem});
  }
  if (ok({"model.quant", "parallel.backend"}) && cfg.model.quant != QuantMode::quant_none) {
    const auto problem = backend_limit_problem(cfg, [&](BackendKind kind) -> std::optional<std::string> {
      // The CUDA backend dequantizes linear weights (UNRUN on a GPU so far); its LM-head
      // loss reads a bf16 head, so the head stays dense there.
      const auto& skip = cfg.model.quant_skip;
      if (kind != BackendKind::backend_cuda || std::find(skip.begin(), skip.end(), "lm_head") != skip.end())
        return std::nullopt;
      return str_cat(enum_name(cfg.model.quant), " base weights on the CUDA backend need lm_head in "
                     "model.quant_skip (its LM-head loss reads a dense head), or parallel.backend: cpu");
    });
    if (problem) out.push_back({"model.quant", *problem});
  }
  if (ok({"checkpoint.resume"}) && cfg.checkpoint.resume.empty())
    out.push_back({"checkpoint.resume", "expected auto, never or a checkpoint path, got ''"});

  if (ok({"data.chat_template"}) && cfg.data.chat_template)
    check_chat_template(*cfg.data.chat_template, ctx.check_files, out);

  const bool layout_ok = ok({"parallel.tp", "parallel.ep", "parallel.dp"});
  if (layout_ok && ok({"train.global_batch", "train.micro_batch"})) {
    BatchLayout layout;
    for (KeyProblem& p : batch_layout_check(cfg, ctx.world_size, layout)) out.push_back(std::move(p));
  }

  if (!ctx.check_files) return out;
  if (ok({"output_dir"})) {
    std::error_code ec;
    const fs::file_status st = fs::status(cfg.output_dir, ec);
    if (fs::exists(st) && !fs::is_directory(st))
      out.push_back({"output_dir", str_cat("'", cfg.output_dir, "' exists and is not a directory")});
  }
  if (ok({"model.path"})) check_model(cfg, layout_ok, ok({"parallel.backend"}), out);
  if (ok({"data.train"}))
    for (const DataSource& s : cfg.data.train) check_file("data.train", s.path, out);
  if (ok({"data.eval"}) && cfg.data.eval) check_file("data.eval", *cfg.data.eval, out);
  const std::string& resume = cfg.checkpoint.resume;
  if (ok({"checkpoint.resume"}) && !resume.empty() && resume != "auto" && resume != "never") {
    std::error_code ec;
    if (!fs::exists(resume, ec))
      out.push_back(
          {"checkpoint.resume",
           str_cat("checkpoint '", resume, "' does not exist (expected auto, never or a checkpoint path)")});
  }
  return out;
}

namespace {
BatchLayout layout_or_throw(const TrainConfig& cfg, int world_size) {
  BatchLayout layout;
  const std::vector<KeyProblem> problems = batch_layout_check(cfg, world_size, layout);
  if (!problems.empty()) throw_user_error(problems.front().key, ": ", problems.front().message);
  return layout;
}
}  // namespace

int config_world_size(const TrainConfig& cfg, int world_size) {
  return layout_or_throw(cfg, world_size).world_size;
}
int config_data_parallel(const TrainConfig& cfg, int world_size) {
  return layout_or_throw(cfg, world_size).dp;
}
int config_grad_accumulation(const TrainConfig& cfg, int world_size) {
  return layout_or_throw(cfg, world_size).grad_accumulation;
}

}  // namespace anvil::train
