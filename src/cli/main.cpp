// anvil: the one entry point. Only this file turns errors into messages and exit codes:
// 0 ok, 2 user error (config, input, usage), 1 internal error, 75 a training run stopped
// by SIGUSR1/SIGTERM after saving a checkpoint (train/preemption.h: run it again to
// continue). Under MPI a failing rank aborts the whole job so that no other rank is left
// waiting in a collective.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <exception>

#include "backend/backend.h"
#include "cli/commands.h"
#include "comm/mpi_session.h"
#include "core/error.h"
#include "core/version.h"
#include "train/preemption.h"

int main(int argc, char** argv) {
  // Before anything else (and before MPI_Init): restart with fast BLAS kernels if OpenBLAS
  // chose generic ones (backend/cpu/cpu_blas_core.cpp). The pid stays, so mpirun and
  // Slurm see the same process.
  if (const std::string core = anvil::backend::blas_core_override(); !core.empty()) {
    ::setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
    ::execv("/proc/self/exe", argv);  // returns only on failure: then run on as we are
  }
  CLI::App app{"anvil: fine-tune Llama-family LLMs with LoRA on your own GPUs (or CPUs)", "anvil"};
  app.set_version_flag("--version", std::string("anvil ") + anvil::version_string());
  app.require_subcommand(1);
  app.fallthrough(false);
  anvil::cli::register_train(app);
  anvil::cli::register_validate(app);
  anvil::cli::register_export(app);
  anvil::cli::register_inspect(app);
  anvil::cli::register_init_model(app);
  anvil::cli::register_import(app);
  anvil::cli::register_tokenize(app);
  anvil::cli::register_prepare(app);
  anvil::cli::register_generate(app);
  anvil::cli::register_eval(app);
  // Only a training run turns SIGUSR1/SIGTERM into "checkpoint and stop"; installed before
  // the config is read, so that a signal during the set-up is not lost either.
  app.get_subcommand("train")->preparse_callback([](std::size_t) { anvil::train::preemption_install(); });

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // Usage errors: CLI11 prints its own message; anvil's convention is exit code 2.
    app.exit(e);
    anvil::comm::abort_job_if_distributed(2);
    return 2;
  } catch (const std::exception& e) {
    return anvil::comm::exit_after_error(e);
  }
  return anvil::train::preemption_stopped() ? anvil::train::exit_preempted : 0;
}
