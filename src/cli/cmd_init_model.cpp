#include "cli/commands.h"
namespace anvil::cli {
void register_init_model(CLI::App& app) {
  auto* cmd = app.add_subcommand("init-model", "Write a randomly initialised HF model directory (presets or a config.json)");
  cmd->allow_extras();
  cmd->callback([] { not_implemented("init-model"); });
}
}  // namespace anvil::cli
