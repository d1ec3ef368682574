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
#   4. With ANVIL_NUMA_BIND=1 (h200-nvl.sbatch sets it; for whole nodes, where every CPU is
#      the job's), it runs anvil on the CPUs and, preferably, the memory of its GPU's NUMA
#      node (numactl), so host buffers and data loading sit next to the GPU. The GPU is the
#      one anvil takes: the node-local rank's among those visible (src/runtime/placement.h);
#      its NUMA node comes from its PCI bus id (nvidia-smi) in sysfs. Where any of that is
#      missing the rank says so and runs unbound. Written for GPU nodes, run only against
#      stand-ins (e2e.anvil_task).
# Usage: anvil-task.sh MARKER_DIR COMMAND [ARGS...]
# Test stand-ins: NVIDIA_SMI, NUMACTL (commands), ANVIL_SYSFS (instead of /sys).
set -u
dir=$1
shift
rank=${OMPI_COMM_WORLD_RANK:-${SLURM_PROCID:-0}}
touch "$dir/task-$rank" || { echo "anvil-task.sh: cannot write $dir" >&2; exit 1; }

# The NUMA node of the GPU this rank will use, or nothing.
gpu_numa_node() {
  local local_rank=${SLURM_LOCALID:-${OMPI_COMM_WORLD_LOCAL_RANK:-0}} id bus node
  local -a visible=()
  [ -n "${CUDA_VISIBLE_DEVICES:-}" ] && IFS=, read -ra visible <<<"$CUDA_VISIBLE_DEVICES"
  if [ ${#visible[@]} -gt 0 ]; then id=${visible[$((local_rank % ${#visible[@]}))]}; else id=$local_rank; fi
  bus=$("${NVIDIA_SMI:-nvidia-smi}" --query-gpu=pci.bus_id --format=csv,noheader -i "$id" 2>/dev/null | head -n 1)
  bus=${bus,,}
  [ ${#bus} -eq 16 ] && bus=${bus:4}  # nvidia-smi's 8-digit PCI domain; sysfs has 4
  node=$(cat "${ANVIL_SYSFS:-/sys}/bus/pci/devices/$bus/numa_node" 2>/dev/null)
  [[ "$node" =~ ^[0-9]+$ ]] && echo "$node"
}
if [ "${ANVIL_NUMA_BIND:-0}" = 1 ]; then
  node=$(gpu_numa_node)
  numactl=${NUMACTL:-numactl}
  if [ -n "$node" ] && command -v "$numactl" >/dev/null; then
    set -- "$numactl" --cpunodebind="$node" --preferred="$node" "$@"
  else
    echo "anvil-task.sh: rank $rank: no NUMA binding (GPU's NUMA node: ${node:-unknown}; numactl: $(command -v "$numactl" || echo missing))" >&2
  fi
fi

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
