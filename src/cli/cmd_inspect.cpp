#include "cli/commands.h"
namespace anvil::cli {
void register_inspect(CLI::App& app) {
  auto* cmd = app.add_subcommand("inspect", "List the tensors of a safetensors file or HF model directory");
  cmd->allow_extras();
  cmd->callback([] { not_implemented("inspect"); });
}
}  // namespace anvil::cli
