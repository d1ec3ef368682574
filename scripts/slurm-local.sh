#!/usr/bin/env bash
# A real, private Slurm cluster of one node on this machine, for the tests (label slurm) and
# for trying the batch scripts in slurm/ by hand: munged + slurmctld + slurmd with every
# file (config, keys, sockets, spool, state, logs, pid files) under one state directory,
# on free TCP ports, so it neither needs nor touches a system Slurm or munge.
#
#   scripts/slurm-local.sh start [STATE_DIR]   (default: build/slurm-local)
#   scripts/slurm-local.sh stop  [STATE_DIR]   cancels every job, stops the daemons
#   scripts/slurm-local.sh status [STATE_DIR]
#
# After start, `source STATE_DIR/env` points sbatch/srun/squeue/scancel at it (SLURM_CONF).
# Configuration: no cgroup.conf, ProctrackType=proctrack/linuxproc, TaskPlugin=task/none,
# one partition "local" with this machine's CPUs (at least 2), jobs requeueable.
# start installs Slurm and munge first (scripts/setup.sh) if they are missing. When the
# cluster cannot start here, it exits 77 and writes the reason to STATE_DIR/unavailable,
# which the tests (label slurm) read to skip with that message.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

cmd=${1:-}
state=${2:-build/slurm-local}
case "$cmd" in start|stop|status) ;; *) sed -n '6,10p' "$0"; exit 2 ;; esac
mkdir -p "$state"
state=$(cd "$state" && pwd)

node=anvil-local

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_daemon() {  # PIDFILE NAME: TERM, up to 10 s, then KILL; only the process we started
  local pidfile=$1 name=$2 pid
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "slurm-local: $name ($pid) did not stop; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

do_stop() {
  if [ -f "$state/env" ] && pid_alive "$state/slurmctld.pid"; then
    # Jobs first, while slurmd can still end their processes.
    SLURM_CONF="$state/slurm.conf" scancel --full --quiet --partition=local 2>/dev/null || true
    for _ in $(seq 50); do
      [ -z "$(SLURM_CONF="$state/slurm.conf" squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
  stop_daemon "$state/slurmd.pid" slurmd
  stop_daemon "$state/slurmctld.pid" slurmctld
  stop_daemon "$state/munged.pid" munged
  rm -f "$state/env"
  echo "slurm-local: stopped ($state)"
}

unavailable() {
  echo "$*" > "$state/unavailable"
  echo "slurm-local: cannot start Slurm: $*" >&2
  do_stop >/dev/null 2>&1 || true
  echo "$*" > "$state/unavailable"
  exit 77
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

do_start() {
  rm -f "$state/unavailable"
  if pid_alive "$state/slurmctld.pid" && pid_alive "$state/slurmd.pid" && [ -f "$state/env" ]; then
    echo "slurm-local: already running ($state)"
    return 0
  fi
  do_stop >/dev/null 2>&1 || true
  local bin
  for bin in munged slurmctld slurmd sbatch srun scontrol; do
    if ! command -v "$bin" >/dev/null && [ ! -x "/usr/sbin/$bin" ]; then
      echo "slurm-local: $bin is missing; running scripts/setup.sh"
      scripts/setup.sh >/dev/null 2>&1 || unavailable "Slurm is not installed and scripts/setup.sh could not install it"
      break
    fi
  done
  export PATH="$PATH:/usr/sbin"
  for bin in munged slurmctld slurmd sbatch srun scontrol; do
    command -v "$bin" >/dev/null || unavailable "$bin is not installed (Debian: slurmctld slurmd slurm-client munge)"
  done
  [ "$(id -u)" -eq 0 ] || unavailable "slurmd must run as root to start jobs (this is $(id -un))"

  mkdir -p "$state/munge" "$state/ctld" "$state/spool" "$state/log"
  chmod 700 "$state/munge"
  # munge: a private key and socket. munged refuses keys and directories others can write.
  [ -s "$state/munge/munge.key" ] || dd if=/dev/urandom of="$state/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$state/munge/munge.key"
  munged --force --socket="$state/munge/munge.socket" --key-file="$state/munge/munge.key" \
    --pid-file="$state/munged.pid" --log-file="$state/log/munged.log" --seed-file="$state/munge/seed" \
    || unavailable "munged did not start (see $state/log/munged.log)"

  local cpus ctld_port d_port user
  cpus=$(nproc)
  [ "$cpus" -ge 2 ] || cpus=2
  ctld_port=$(free_port)
  d_port=$(free_port)
  while [ "$d_port" = "$ctld_port" ]; do d_port=$(free_port); done
  user=$(id -un)
  cat > "$state/slurm.conf" <<EOF
# Written by scripts/slurm-local.sh: a one-node cluster for tests; every path under $state.
ClusterName=anvil-local
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=$user
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$state/munge/munge.socket
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool/%n
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# Look at the queue every 2 s: a requeued job released by scontrol update StartTime starts
# without waiting for the default 60 s scheduling pass.
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=600
KillWait=10
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$node NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF="$state/slurm.conf"
  slurmctld -i || unavailable "slurmctld did not start (see $state/log/slurmctld.log)"
  slurmd -N "$node" || unavailable "slurmd did not start (see $state/log/slurmd.log)"
  local ready=0
  for _ in $(seq 100); do
    if sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then ready=1; break; fi
    sleep 0.2
  done
  [ "$ready" = 1 ] || unavailable "the node did not come up: $(sinfo -h -N -o '%T %E' 2>&1 | head -1) (logs in $state/log)"
  echo "export SLURM_CONF=$state/slurm.conf" > "$state/env"
  echo "export PATH=\$PATH:/usr/sbin" >> "$state/env"
  echo "slurm-local: running; node $node with $cpus CPUs, partition local (source $state/env)"
}

case "$cmd" in
  start) do_start ;;
  stop) do_stop ;;
  status)
    if [ -f "$state/env" ] && pid_alive "$state/slurmctld.pid"; then
      SLURM_CONF="$state/slurm.conf" sinfo
    else
      echo "slurm-local: not running ($state)"; exit 1
    fi ;;
esac
