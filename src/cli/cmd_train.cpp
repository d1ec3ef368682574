#include "cli/commands.h"
namespace anvil::cli {
void register_train(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Fine-tune a model as a YAML config describes");
  cmd->allow_extras();
  cmd->callback([] { not_implemented("train"); });
}
void register_validate(CLI::App& app) {
  auto* cmd = app.add_subcommand("validate", "Check a training config and report every problem at once");
  cmd->allow_extras();
  cmd->callback([] { not_implemented("validate"); });
}
}  // namespace anvil::cli
