#!/usr/bin/env bash
# slurm/anvil-task.sh, the wrapper each batch-script task runs through, without Slurm: it
# leaves its start marker; anvil's exit 75 (preempted) becomes a marker and exit 0 (so that
# srun --kill-on-bad-exit=1 never ends a step being requeued), any other code passes
# through; a SIGUSR1 sent to the wrapper reaches the command; with ANVIL_NUMA_BIND=1 the
# command runs under numactl on the NUMA node of the rank's GPU, found from its PCI bus id
# (stand-ins for nvidia-smi, numactl and sysfs), for a node-local rank among all GPUs and
# for a CUDA_VISIBLE_DEVICES list, and runs unbound, saying why, when the node is unknown.
# Usage: test_anvil_task.sh   (ANVIL_SOURCE_DIR from the environment)
set -u
task=${ANVIL_SOURCE_DIR:?}/slurm/anvil-task.sh
failures=0
fail() { printf 'FAIL: %s\n' "$*"; failures=$((failures + 1)); }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unset SLURM_PROCID SLURM_LOCALID OMPI_COMM_WORLD_RANK OMPI_COMM_WORLD_LOCAL_RANK CUDA_VISIBLE_DEVICES ANVIL_NUMA_BIND

# ---- markers and exit codes
m=$work/m1 && mkdir -p "$m"
SLURM_PROCID=3 "$task" "$m" sh -c 'exit 75'; rc=$?
[ "$rc" = 0 ] || fail "exit 75: wrapper exited $rc, expected 0"
[ -f "$m/task-3" ] && [ -f "$m/preempted-3" ] || fail "exit 75: markers $(ls "$m")"
m=$work/m2 && mkdir -p "$m"
SLURM_PROCID=1 "$task" "$m" sh -c 'exit 3'; rc=$?
[ "$rc" = 3 ] || fail "exit 3: wrapper exited $rc"
[ -f "$m/task-1" ] && [ ! -e "$m/preempted-1" ] || fail "exit 3: markers $(ls "$m")"
"$task" "$work/missing-dir" true 2>/dev/null; rc=$?
[ "$rc" = 1 ] || fail "unwritable marker dir: exit $rc, expected 1"

# ---- a signal to the wrapper reaches the command (which exits 75 on SIGUSR1, as anvil)
m=$work/m3 && mkdir -p "$m"
SLURM_PROCID=0 "$task" "$m" bash -c 'trap "exit 75" USR1; touch '"$work"'/ready; while :; do sleep 0.05; done' &
pid=$!
for _ in $(seq 200); do [ -f "$work/ready" ] && break; sleep 0.05; done
kill -USR1 "$pid"
wait "$pid"; rc=$?
[ "$rc" = 0 ] && [ -f "$m/preempted-0" ] || fail "SIGUSR1: wrapper exit $rc, markers $(ls "$m")"

# ---- NUMA binding, with stand-ins: GPU i has bus id 00000000:1i:00.0 on NUMA node i % 2
mkdir -p "$work/bin"
cat >"$work/bin/nvidia-smi" <<'SMI'
#!/bin/bash
# --query-gpu=pci.bus_id --format=csv,noheader -i ID   (ID: an index or GPU-<n>)
id=${@: -1}; id=${id#GPU-}
echo "00000000:1${id}:00.0"
SMI
cat >"$work/bin/numactl" <<'NUMA'
#!/bin/bash
echo "$1 $2" >"$NUMA_LOG"
shift 2
exec "$@"
NUMA
chmod +x "$work/bin/nvidia-smi" "$work/bin/numactl"
for i in 0 1 2 3; do
  mkdir -p "$work/sys/bus/pci/devices/0000:1$i:00.0"
  echo $((i % 2)) >"$work/sys/bus/pci/devices/0000:1$i:00.0/numa_node"
done
bound() {  # bound ENV... : the numactl arguments the wrapper used, or "none"
  rm -f "$work/numa.log"
  env NVIDIA_SMI="$work/bin/nvidia-smi" NUMACTL="$work/bin/numactl" ANVIL_SYSFS="$work/sys" \
    NUMA_LOG="$work/numa.log" ANVIL_NUMA_BIND=1 "$@" "$task" "$work/m1" true 2>"$work/err" || fail "bound $*: exit $?"
  cat "$work/numa.log" 2>/dev/null || echo none
}
got=$(bound SLURM_LOCALID=1)
[ "$got" = "--cpunodebind=1 --preferred=1" ] || fail "local rank 1 of all GPUs: $got"
got=$(bound SLURM_LOCALID=2)
[ "$got" = "--cpunodebind=0 --preferred=0" ] || fail "local rank 2 of all GPUs: $got"
got=$(bound SLURM_LOCALID=1 CUDA_VISIBLE_DEVICES=2,3)
[ "$got" = "--cpunodebind=1 --preferred=1" ] || fail "local rank 1 of CUDA_VISIBLE_DEVICES=2,3: $got"
got=$(bound SLURM_LOCALID=0 CUDA_VISIBLE_DEVICES=GPU-2)
[ "$got" = "--cpunodebind=0 --preferred=0" ] || fail "CUDA_VISIBLE_DEVICES=GPU-2: $got"
got=$(bound SLURM_LOCALID=7)
[ "$got" = none ] && grep -q "no NUMA binding" "$work/err" || fail "no sysfs entry for GPU 7: $got, $(cat "$work/err")"
rm -f "$work/numa.log"
env NVIDIA_SMI="$work/bin/nvidia-smi" ANVIL_SYSFS="$work/sys" SLURM_LOCALID=1 "$task" "$work/m1" true 2>"$work/err"
[ ! -s "$work/err" ] && [ ! -e "$work/numa.log" ] || fail "without ANVIL_NUMA_BIND: bound or warned"

[ "$failures" = 0 ] && echo "anvil_task: ok" || { echo "anvil_task: $failures failure(s)"; exit 1; }
