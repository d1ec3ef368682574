// Each anvil subcommand lives in its own cmd_<verb>.cpp and registers itself on the app.
// A command's callback runs inside main()'s error handling: it throws anvil::Error on
// failure and returns normally on success.
#pragma once

#include <CLI/CLI.hpp>

namespace anvil::cli {

void register_train(CLI::App& app);
void register_validate(CLI::App& app);
void register_export(CLI::App& app);
void register_inspect(CLI::App& app);
void register_init_model(CLI::App& app);
void register_import(CLI::App& app);
void register_tokenize(CLI::App& app);
void register_prepare(CLI::App& app);
void register_generate(CLI::App& app);
void register_eval(CLI::App& app);

}  // namespace anvil::cli
