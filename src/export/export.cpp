// The export as one all-or-nothing step, and the PEFT format (model/lora.h writes it).
#include "export/export.h"

#include "core/error.h"
#include "export/staged_dir.h"

namespace anvil::exporting {

ExportFormat export_format_parse(const std::string& text, const std::string& what) {
  if (text == "hf") return ExportFormat::export_format_hf;
  if (text == "peft") return ExportFormat::export_format_peft;
  throw_user_error(what, ": unknown format '", text, "' (expected hf or peft)");
}

ExportSummary export_peft(const ExportAdapter& adapter, const std::string& dir) {
  ANVIL_CHECK(adapter.params != nullptr, "export: no adapter parameters");
  const model::LoraLayout layout(adapter.spec, adapter.lora);
  model::lora_save_peft(dir, layout, adapter.params, adapter.base_dir);
  ExportSummary summary;
  summary.out_dir = dir;
  summary.dtype = DType::dtype_f32;
  summary.tensors = 2 * layout.slots().size();
  summary.shards = 1;
  summary.bytes = static_cast<std::uint64_t>(layout.size()) * sizeof(float);
  return summary;
}

ExportSummary export_to_dir(const ExportAdapter& adapter, const std::string& out_dir, const ExportOptions& options,
                            const std::vector<std::string>& inputs) {
  std::vector<std::string> read = inputs;
  read.push_back(adapter.base_dir);
  StagedDir staged(out_dir, options.force, read);
  ExportSummary summary = options.format == ExportFormat::export_format_hf
                              ? export_hf_merged(adapter, staged.path(), options)
                              : export_peft(adapter, staged.path());
  staged.commit();
  summary.out_dir = staged.out();
  return summary;
}

}  // namespace anvil::exporting
