// The export as one all-or-nothing step (over one rank or several), and the PEFT format
// (export/peft.h writes it).
#include "export/export.h"

#include <cstdint>
#include <exception>
#include <filesystem>
#include <optional>

#include "core/error.h"
#include "export/peft.h"
#include "export/staged_dir.h"
#include "io/safetensors.h"
#include "model/model_spec.h"

namespace anvil::exporting {

namespace {

// `text` of rank `root` on every rank.
void string_broadcast(comm::Comm& world, std::string& text, int root) {
  std::int64_t n = static_cast<std::int64_t>(text.size());
  world.broadcast(&n, 1, DType::dtype_i64, root);
  text.resize(static_cast<std::size_t>(n));
  world.broadcast(text.data(), n, DType::dtype_u8, root);
}

}  // namespace

ExportFormat export_format_parse(const std::string& text, const std::string& what) {
  if (text == "hf") return ExportFormat::export_format_hf;
  if (text == "peft") return ExportFormat::export_format_peft;
  if (text == "gguf") return ExportFormat::export_format_gguf;
  if (text == "gguf-lora") return ExportFormat::export_format_gguf_lora;
  if (text == "mlx") return ExportFormat::export_format_mlx;
  throw_user_error(what, ": unknown format '", text, "' (expected hf, peft, gguf, gguf-lora or mlx)");
}

bool export_format_is_file(ExportFormat f) {
  return f == ExportFormat::export_format_gguf || f == ExportFormat::export_format_gguf_lora;
}

ExportSummary export_peft(const ExportAdapter& adapter, const std::string& dir) {
  ANVIL_CHECK(adapter.params != nullptr, "export: no adapter parameters");
  const model::LoraLayout layout(adapter.spec, adapter.lora);
  // Llama 4's routed experts take PEFT's target_parameters form (export/peft_llama4.h); a
  // multimodal Llama 4 base has its text model under language_model. (A PEFT export needs no
  // base; when the recorded one is not there, the names are the text model's own.)
  std::error_code ec;
  const std::string prefix = std::filesystem::is_directory(adapter.base_dir, ec)
                                 ? model::model_weights_open(adapter.base_dir).prefix()
                                 : std::string();
  const std::size_t tensors = peft_save(dir, layout, adapter.params, adapter.base_dir, &adapter.spec, prefix);
  ExportSummary summary;
  summary.out_dir = dir;
  summary.dtype = DType::dtype_f32;
  summary.tensors = tensors;
  summary.shards = 1;
  summary.bytes = static_cast<std::uint64_t>(layout.size()) * sizeof(float);
  return summary;
}

ExportSummary export_to_dir(const ExportAdapter& adapter, const std::string& out_dir, const ExportOptions& options,
                            const std::vector<std::string>& inputs) {
  const auto self = comm::self_comm("world");
  return export_to_dir(adapter, out_dir, options, inputs, *self);
}

ExportSummary export_to_dir(const ExportAdapter& adapter, const std::string& out_dir, const ExportOptions& options,
                            const std::vector<std::string>& inputs, comm::Comm& world) {
  const bool hf = options.format == ExportFormat::export_format_hf;
  const bool mlx = options.format == ExportFormat::export_format_mlx;
  const bool gguf = options.format == ExportFormat::export_format_gguf;
  const bool one_file = export_format_is_file(options.format);
  // Rank 0 alone checks out_dir and creates the staging directory; if that fails it ends
  // the job from main() while the others wait in the broadcast, and nothing exists yet.
  std::optional<StagedDir> staged;
  std::optional<StagedFile> staged_file;
  std::string staging;
  if (world.rank() == 0) {
    std::vector<std::string> read = inputs;
    read.push_back(adapter.base_dir);
    if (one_file) {
      staged_file.emplace(out_dir, options.force, read);
      staging = staged_file->path();
    } else {
      staged.emplace(out_dir, options.force, read);
      staging = staged->path();
    }
  }
  string_broadcast(world, staging, 0);

  ExportSummary summary;
  summary.dtype = DType::dtype_f32;
  std::exception_ptr failure;
  std::string message;
  std::int32_t code = 0;
  try {
    const ShardRanks ranks{world.rank(), world.size()};
    if (hf)
      summary = export_hf_merged(adapter, staging, options, ranks);
    else if (mlx)
      summary = export_mlx_merged(adapter, staging, options, ranks);
    else if (gguf)
      summary = export_gguf(adapter, staging, options, ranks, &world);
    else if (world.rank() != 0)
      ;  // the adapter formats are one small file, written by rank 0
    else if (options.format == ExportFormat::export_format_gguf_lora)
      summary = export_gguf_lora(adapter, staging);
    else
      summary = export_peft(adapter, staging);
  } catch (const std::exception& e) {
    failure = std::current_exception();
    message = error_message(e);
    code = error_exit_code(e);
  }
  // Nothing is renamed unless every rank wrote its share. The ranks write independently,
  // so a failed one can still join these reductions: all learn of it and its message
  // (whichever rank's abort ends the job first, the cause is printed), rank 0 removes the
  // staging directory, and only then does anyone throw (and main() end the job).
  std::int32_t first_failed = failure ? world.size() - world.rank() : 0;  // max: the lowest failed rank
  world.allreduce(&first_failed, 1, DType::dtype_i32, comm::ReduceOp::reduce_max);
  first_failed = world.size() - first_failed;
  if (first_failed < world.size()) {
    world.allreduce(&code, 1, DType::dtype_i32, comm::ReduceOp::reduce_max);
    string_broadcast(world, message, first_failed);
    staged.reset();
    staged_file.reset();
    world.barrier();
    if (failure) std::rethrow_exception(failure);
    throw Error(code == 2 ? ErrorKind::user : ErrorKind::internal,
                str_cat("export failed on rank ", first_failed, " (nothing was written): ", message));
  }

  std::int64_t totals[4] = {static_cast<std::int64_t>(summary.tensors), static_cast<std::int64_t>(summary.merged),
                            static_cast<std::int64_t>(summary.shards), static_cast<std::int64_t>(summary.bytes)};
  world.allreduce(totals, 4, DType::dtype_i64, comm::ReduceOp::reduce_sum);
  summary.tensors = static_cast<std::size_t>(totals[0]);
  summary.merged = static_cast<std::size_t>(totals[1]);
  summary.shards = static_cast<std::size_t>(totals[2]);
  summary.bytes = static_cast<std::uint64_t>(totals[3]);
  if (hf || mlx || gguf) {
    const std::size_t slots = model::LoraLayout(adapter.spec, adapter.lora).slots().size();
    ANVIL_CHECK(summary.merged == slots, "export: merged ", summary.merged, " of ", slots, " adapted weights");
  }
  summary.out_dir = out_dir;
  if (staged) {
    staged->commit();
    summary.out_dir = staged->out();
  }
  if (staged_file) {
    staged_file->commit();
    summary.out_dir = staged_file->out();
  }
  // The others return once the export is in place (a failed rename ends the job here).
  world.barrier();
  return summary;
}

}  // namespace anvil::exporting
