// Verbs that later issues fill in. They are listed in --help already so the CLI surface
// is stable; running one says so and exits 2.
#include "cli/commands.h"
#include "core/error.h"

namespace anvil::cli {

void not_implemented(const char* verb) {
  throw_user_error("'anvil ", verb, "' is not implemented yet in this version of anvil");
}

namespace {
void add_pending(CLI::App& app, const char* verb, const char* description) {
  auto* cmd = app.add_subcommand(verb, description);
  cmd->allow_extras();
  cmd->callback([verb] { not_implemented(verb); });
}
}  // namespace

void register_prepare(CLI::App& app) {
  add_pending(app, "prepare", "Tokenize and pack a JSONL dataset into a token cache");
}

}  // namespace anvil::cli
