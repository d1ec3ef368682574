// Preemption: SIGUSR1 or SIGTERM asks a training run to save a checkpoint and stop cleanly.
//
// The signal handler only sets a flag (async-signal-safe, so a second signal in the middle
// of a checkpoint write changes nothing). At each step boundary the ranks agree on the
// flag with one max all-reduce, so a signal that reached a single rank stops them all at
// the same step; they save that step's checkpoint together and `anvil train` exits with
// exit_preempted, which slurm/train.sbatch turns into a requeue.
#pragma once

#include "comm/comm.h"

namespace anvil::train {

// EX_TEMPFAIL (sysexits.h): "preempted, the checkpoint is saved, run me again". The same
// command (checkpoint.resume: auto) continues from the checkpoint exactly.
inline constexpr int exit_preempted = 75;

// Makes SIGUSR1 and SIGTERM set this process's preemption flag instead of ending it.
// Called once by `anvil train`, before anything slow; calling it again changes nothing.
void preemption_install();

// Whether a preemption signal has reached this process.
bool preemption_requested();

// Whether a preemption signal has reached any rank of `world`: a max all-reduce of the
// flag, so every rank of `world` must call it at the same point and gets the same answer.
bool preemption_agreed(comm::Comm& world);

// Set by the trainer when it stops on an agreed preemption (after the checkpoint is
// written); main() then exits with exit_preempted instead of 0.
void preemption_note_stopped();
bool preemption_stopped();

}  // namespace anvil::train
