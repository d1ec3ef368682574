#!/usr/bin/env bash
# Pre-flight of a GPU server before its first anvil job (written for the target server: 4 x
# H200 NVL on NVLink bridges, no NVSwitch; slurm/h200-nvl.sbatch). Run it on the server, in
# an allocation of its GPUs (`srun -N1 --gres=gpu:4 --exclusive slurm/preflight.sh`, or
# directly when it is not under Slurm), from the repository root:
#
#   slurm/preflight.sh [--gpus N] [--min-busbw GBPS] [--mib MIB] [--bench PATH] [--backend cuda|cpu]
#     --gpus N          GPUs expected (default 4); also the ranks of the all-reduce test
#     --min-busbw GBPS  the all-reduce bus bandwidth the node must reach (default 100 GB/s;
#                       NCCL over a 4-way NVLink bridge should give well above that, PCIe Gen5
#                       around 40); 0: report only
#     --mib MIB         the largest all-reduce (default 256 MiB)
#     --bench PATH      the all-reduce benchmark (default $ANVIL_BENCH_ALLREDUCE, else
#                       build/tests/unit/bench_allreduce; tests/bench/bench_allreduce.cpp)
#     --backend cpu     run the benchmark on CPU ranks (MPI): tests this script's wiring on a
#                       machine without GPUs; the GPU checks still count as not checked
#
# Checks, each PASS, FAIL or NOT CHECKED (with the reason):
#   1. nvidia-smi: the driver answers and shows N GPUs (and the driver version);
#   2. topology (`nvidia-smi topo -m`, printed): every GPU has an NVLink (NV#) to another;
#   3. PCIe ACS: no bridge/switch with ACS redirection or source validation on (`lspci
#      -vvv`, ACSCtl lines; needs root to read): ACS sends GPU peer-to-peer traffic through
#      the root complex, which makes NCCL slow or hang;
#   4. an all-reduce over N ranks, one per GPU, through anvil's own Runtime and NCCL: the
#      sum is checked and the bus bandwidth judged against --min-busbw.
# Exit: 0 every check passed; 1 a check failed; 3 none failed but some could not be checked
# (e.g. no GPU here); 2 bad arguments. Test override: NVIDIA_SMI=PATH (the nvidia-smi to
# run) and LSPCI=PATH.
#
# Written and tested without a GPU (tests/e2e/test_preflight.sh): the GPU paths are unrun.
set -uo pipefail

usage() { sed -n '7,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
gpus=4
min_busbw=100
mib=256
bench=${ANVIL_BENCH_ALLREDUCE:-build/tests/unit/bench_allreduce}
backend=cuda
while [ $# -gt 0 ]; do
  case "$1" in
    --gpus|--min-busbw|--mib|--bench|--backend)
      [ $# -ge 2 ] || { echo "preflight: $1 needs a value" >&2; usage; }
      case "$1" in
        --gpus) gpus=$2 ;; --min-busbw) min_busbw=$2 ;; --mib) mib=$2 ;; --bench) bench=$2 ;; --backend) backend=$2 ;;
      esac
      shift ;;
    -h|--help) usage ;;
    *) echo "preflight: unknown argument $1" >&2; usage ;;
  esac
  shift
done
[[ $gpus =~ ^[1-9][0-9]*$ ]] || { echo "preflight: --gpus: a positive integer, got '$gpus'" >&2; exit 2; }
[[ $min_busbw =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "preflight: --min-busbw: a number of GB/s, got '$min_busbw'" >&2; exit 2; }
[[ $mib =~ ^[1-9][0-9]*$ ]] || { echo "preflight: --mib: a positive integer, got '$mib'" >&2; exit 2; }
case "$backend" in cuda|cpu) ;; *) echo "preflight: --backend: cuda or cpu, got '$backend'" >&2; exit 2 ;; esac
smi=${NVIDIA_SMI:-nvidia-smi}
lspci=${LSPCI:-lspci}

results=()
failed=0
unchecked=0
report() {  # report STATUS NAME DETAIL
  results+=("$(printf '%-12s %-10s %s' "$1" "$2" "$3")")
  case "$1" in FAIL) failed=1 ;; "NOT CHECKED") unchecked=1 ;; esac
}

# 1. The driver and its GPUs.
have_gpus=0
if ! command -v "$smi" >/dev/null 2>&1; then
  report "NOT CHECKED" driver "no nvidia-smi ($smi): no NVIDIA driver on this machine"
elif ! listing=$("$smi" -L 2>&1); then
  report FAIL driver "nvidia-smi -L failed: $(head -1 <<<"$listing")"
else
  found=$(grep -c '^GPU ' <<<"$listing")
  driver=$("$smi" --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)
  if [ "$found" -ne "$gpus" ]; then
    report FAIL driver "$found GPU(s) visible, $gpus expected (CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset}); driver ${driver:-?}"
  else
    report PASS driver "$found GPUs, driver ${driver:-?}"
    have_gpus=1
  fi
fi

# 2. Topology: each GPU row of `topo -m` must have an NV# entry (an NVLink to a peer).
if [ $have_gpus -eq 0 ]; then
  report "NOT CHECKED" topology "no GPUs to inspect"
elif ! topo=$("$smi" topo -m 2>&1); then
  report FAIL topology "nvidia-smi topo -m failed: $(head -1 <<<"$topo")"
else
  echo "nvidia-smi topo -m:"
  echo "$topo"
  lonely=$(awk '/^GPU[0-9]+[ \t]/ { nv = 0; for (i = 2; i <= NF; ++i) if ($i ~ /^NV[0-9]+$/) nv = 1; if (!nv) printf "%s ", $1 }' <<<"$topo")
  if [ -n "$lonely" ]; then
    report FAIL topology "no NVLink from ${lonely% } (bridge missing or down: peers go over PCIe)"
  else
    report PASS topology "every GPU has an NVLink peer"
  fi
fi

# 3. PCIe ACS. lspci shows the ACS control bits only to root.
if ! command -v "$lspci" >/dev/null 2>&1; then
  report "NOT CHECKED" acs "no lspci (pciutils)"
elif ! pci=$("$lspci" -vvv 2>/dev/null); then
  report "NOT CHECKED" acs "lspci -vvv failed"
elif ! grep -q 'ACSCtl:' <<<"$pci"; then
  if grep -q 'access denied' <<<"$pci"; then report "NOT CHECKED" acs "lspci needs root to show ACS (run as root)"
  else report PASS acs "no device exposes ACS controls"
  fi
else
  on=$(awk '/^[0-9a-f]/ { dev = $1 } /ACSCtl:/ && /(SrcValid|ReqRedir|CmpltRedir)\+/ { printf "%s ", dev }' <<<"$pci")
  if [ -n "$on" ]; then
    report FAIL acs "ACS redirection/source validation on at ${on% } (disable it in the BIOS or with setpci; NCCL's troubleshooting guide)"
  else
    report PASS acs "ACS redirection off on every bridge"
  fi
fi

# 4. The all-reduce, one rank per GPU, through anvil's Runtime (NCCL on GPUs).
run_bench() {
  local args=(--backend "$backend" --mib "$mib" --min-busbw "$min_busbw")
  if [ -n "${SLURM_JOB_ID:-}" ] && command -v srun >/dev/null; then
    srun --mpi=pmix --ntasks="$gpus" --nodes=1 "$bench" "${args[@]}"
  else
    mpirun --oversubscribe -np "$gpus" "$bench" "${args[@]}"
  fi
}
if [ "$backend" = cuda ] && [ $have_gpus -eq 0 ]; then
  report "NOT CHECKED" allreduce "no GPUs to run it on"
elif [ "$gpus" -lt 2 ]; then
  report "NOT CHECKED" allreduce "one GPU: nothing to all-reduce with"
elif [ ! -x "$bench" ]; then
  report "NOT CHECKED" allreduce "no benchmark at $bench (cmake --build build --target bench_allreduce, or --bench)"
else
  out=$(run_bench 2>&1)
  rc=$?
  echo "all-reduce ($gpus ranks, --backend $backend):"
  echo "$out"
  last=$(grep '^{' <<<"$out" | tail -1)
  busbw=$(sed -n 's/.*"busbw_gbps":\([0-9.e+-]*\).*/\1/p' <<<"$last")
  if [ -z "$busbw" ]; then
    report FAIL allreduce "the benchmark gave no result (exit $rc)"
  elif grep -q 'below --min-busbw' <<<"$out"; then
    report FAIL allreduce "bus bandwidth $(printf '%.1f' "$busbw") GB/s at $mib MiB, below --min-busbw $min_busbw"
  elif [ $rc -ne 0 ]; then
    report FAIL allreduce "the benchmark exited $rc"
  elif [ "$backend" = cpu ]; then
    report "NOT CHECKED" allreduce "ran on CPU ranks (--backend cpu): $(printf '%.2f' "$busbw") GB/s over MPI, says nothing of the GPUs"
  else
    report PASS allreduce "bus bandwidth $(printf '%.1f' "$busbw") GB/s at $mib MiB (at least $min_busbw)"
  fi
fi

echo "preflight on $(hostname):"
printf '  %s\n' "${results[@]}"
if [ $failed -eq 1 ]; then echo "preflight: FAILED: fix the above before the first job" >&2; exit 1; fi
if [ $unchecked -eq 1 ]; then echo "preflight: INCOMPLETE: some checks could not run here (see NOT CHECKED)" >&2; exit 3; fi
echo "preflight: every check passed"
