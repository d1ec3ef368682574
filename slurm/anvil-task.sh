#!/bin/bash
# One task of a batch script's step: the launcher (srun or mpirun) runs one per rank.
#   1. It leaves a start marker first, so that the script can tell a step that never
#      launched (srun can exit 0 for it) from one that ran.
#   2. It runs anvil and passes SIGUSR1/SIGTERM on to it (the script's forwarded
#      preemption; anvil saves a checkpoint and exits 75).
#   3. It reports exit 75 (preempted, checkpoint saved) as a marker and exit 0, so that
#      `srun --kill-on-bad-exit=1` ends the step at once for a rank that really failed (a
#      segfault, an OOM kill) and never for a preemption: Slurm 22.05 terminating the step
#      on the ranks' exit 75 raced the requeued job's launch.
# Usage: anvil-task.sh MARKER_DIR COMMAND [ARGS...]
set -u
dir=$1
shift
rank=${OMPI_COMM_WORLD_RANK:-${SLURM_PROCID:-0}}
touch "$dir/task-$rank" || { echo "anvil-task.sh: cannot write $dir" >&2; exit 1; }

"$@" &
child=$!
trap 'kill -USR1 "$child" 2>/dev/null' USR1
trap 'kill -TERM "$child" 2>/dev/null' TERM
# `wait` returns early when a trapped signal arrives: wait again until anvil has ended.
while :; do
  wait "$child"
  rc=$?
  kill -0 "$child" 2>/dev/null || break
done
if [ "$rc" = 75 ]; then
  touch "$dir/preempted-$rank"
  exit 0
fi
exit "$rc"
