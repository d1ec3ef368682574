#!/usr/bin/env bash
# slurm/preflight.sh without a GPU: bad arguments exit 2; with no driver every check says
# NOT CHECKED and it exits 3; with a stand-in nvidia-smi and lspci (NVIDIA_SMI, LSPCI) the
# topology and ACS parsers pass a bridged pair and fail a GPU without NVLink and a bridge
# with ACS redirection (exit 1); the all-reduce step runs tests/bench/bench_allreduce on 2
# CPU ranks (--backend cpu): its rows are shown, it stays NOT CHECKED for the GPUs, and a
# --min-busbw above what it measured fails. slurm/h200-nvl.sbatch hands over to train.sbatch
# and stops on a failed pre-flight (stand-ins for both). The real GPU path is unrun.
# Usage: test_preflight.sh BENCH_ALLREDUCE   (ANVIL_SOURCE_DIR from the environment)
set -u
bench=${1:?usage: test_preflight.sh BENCH_ALLREDUCE}
src=${ANVIL_SOURCE_DIR:?}
pre=$src/slurm/preflight.sh
failures=0
fail() { printf 'FAIL: %s\n' "$*"; failures=$((failures + 1)); }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unset SLURM_JOB_ID
run() { out=$("$pre" "$@" 2>&1); rc=$?; }
expect() {  # expect RC TEXT...: the last run's exit code and output
  local want=$1; shift
  [ "$rc" = "$want" ] || fail "preflight ${args[*]}: exit $rc, expected $want: $out"
  for t in "$@"; do grep -qF -- "$t" <<<"$out" || fail "preflight ${args[*]}: no '$t' in: $out"; done
}

# ---- arguments
for bad in "--bogus" "--gpus 0" "--gpus" "--min-busbw fast" "--backend rocm" "--mib -1"; do
  read -ra args <<<"$bad"
  run "${args[@]}"
  expect 2
done

# ---- no driver here
args=(no-driver)
NVIDIA_SMI=$work/none LSPCI=$work/none run --bench "$bench"
expect 3 "NOT CHECKED  driver     no nvidia-smi" "NOT CHECKED  topology" "NOT CHECKED  acs" \
  "NOT CHECKED  allreduce  no GPUs to run it on" "INCOMPLETE"

# ---- stand-ins: 2 GPUs; a topology and an lspci listing chosen by $TOPO / $ACS
cat >"$work/nvidia-smi" <<'SMI'
#!/bin/sh
case "$1" in
  -L) echo "GPU 0: NVIDIA H200 NVL (UUID: GPU-a)"; echo "GPU 1: NVIDIA H200 NVL (UUID: GPU-b)" ;;
  --query-gpu=driver_version) echo 580.65 ;;
  topo) printf '\tGPU0\tGPU1\tCPU Affinity\n'
        if [ "$TOPO" = bridged ]; then printf 'GPU0\t X \tNV18\t0-31\nGPU1\tNV18\t X \t0-31\n'
        else printf 'GPU0\t X \tSYS\t0-31\nGPU1\tSYS\t X \t0-31\n'; fi ;;
esac
SMI
cat >"$work/lspci" <<'PCI'
#!/bin/sh
echo "00:01.0 PCI bridge: Intel Corporation Device 0001"
echo "	Capabilities: [220 v1] Access Control Services"
echo "		ACSCap:	SrcValid+ TransBlk+ ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans-"
if [ "$ACS" = on ]; then echo "		ACSCtl:	SrcValid+ TransBlk- ReqRedir+ CmpltRedir+ UpstreamFwd- EgressCtrl- DirectTrans-"
else echo "		ACSCtl:	SrcValid- TransBlk- ReqRedir- CmpltRedir- UpstreamFwd- EgressCtrl- DirectTrans-"; fi
echo "17:00.0 3D controller: NVIDIA Corporation Device 233b"
PCI
chmod +x "$work/nvidia-smi" "$work/lspci"
export NVIDIA_SMI=$work/nvidia-smi LSPCI=$work/lspci

args=(bridged, acs off, cpu all-reduce)
TOPO=bridged ACS=off run --gpus 2 --backend cpu --bench "$bench" --mib 4 --min-busbw 0
expect 3 "PASS         driver     2 GPUs, driver 580.65" "PASS         topology   every GPU has an NVLink peer" \
  "PASS         acs" "NOT CHECKED  allreduce  ran on CPU ranks (--backend cpu)" '"busbw_gbps":' '"ranks":2'

args=(wrong count)
TOPO=bridged ACS=off run --gpus 4 --backend cpu --bench "$bench" --mib 1
expect 1 "FAIL         driver     2 GPU(s) visible, 4 expected" "FAILED"

args=(no nvlink, acs on)
TOPO=pcie ACS=on run --gpus 2 --backend cpu --bench "$bench" --mib 1 --min-busbw 0
expect 1 "FAIL         topology   no NVLink from GPU0 GPU1" "FAIL         acs        ACS redirection/source validation on at 00:01.0"

args=(min-busbw)
TOPO=bridged ACS=off run --gpus 2 --backend cpu --bench "$bench" --mib 1 --min-busbw 1000000
expect 1 "FAIL         allreduce  bus bandwidth" "below --min-busbw 1000000"

args=(no bench)
TOPO=bridged ACS=off run --gpus 2 --backend cpu --bench "$work/none"
expect 3 "NOT CHECKED  allreduce  no benchmark at $work/none"

# ---- the benchmark's own argument check
mpirun --oversubscribe -np 2 "$bench" --backend cpu --reps 0 >"$work/b.log" 2>&1
brc=$?
[ $brc = 2 ] && grep -q -- "--reps must be positive" "$work/b.log" || fail "bench_allreduce --reps 0: exit $brc: $(cat "$work/b.log")"

# ---- slurm/h200-nvl.sbatch hands its allocation to train.sbatch, after the pre-flight when
# ANVIL_PREFLIGHT=1 (stand-ins for both in ANVIL_SLURM_DIR)
stub=$work/slurm
mkdir -p "$stub"
echo 'echo "train.sbatch $* NCCL_NVLS_ENABLE=$NCCL_NVLS_ENABLE"' >"$stub/train.sbatch"
printf '#!/bin/sh\necho "preflight $*"\nexit "$PREFLIGHT_RC"\n' >"$stub/preflight.sh"
chmod +x "$stub/preflight.sh"
h200() { out=$(cd "$work" && SLURM_SUBMIT_DIR=$work ANVIL_SLURM_DIR=$stub bash "$src/slurm/h200-nvl.sbatch" "$@" 2>&1); rc=$?; }
args=(h200-nvl.sbatch)
h200 cfg.yaml --set a=b
expect 0 "train.sbatch cfg.yaml --set a=b NCCL_NVLS_ENABLE=0"
grep -q "^preflight" <<<"$out" && fail "h200-nvl.sbatch ran the pre-flight unasked: $out"
args=(h200-nvl.sbatch, a failed pre-flight)
ANVIL_PREFLIGHT=1 PREFLIGHT_RC=1 h200 cfg.yaml
expect 1 "preflight --gpus 4" "the pre-flight failed (above); not training"
grep -q "^train.sbatch" <<<"$out" && fail "h200-nvl.sbatch trained after a failed pre-flight: $out"
args=(h200-nvl.sbatch, an incomplete pre-flight)
ANVIL_PREFLIGHT=1 PREFLIGHT_RC=3 h200 cfg.yaml
expect 0 "could not check everything (above); training anyway" "train.sbatch cfg.yaml"
args=(h200-nvl.sbatch, no train.sbatch)
out=$(cd "$work" && SLURM_SUBMIT_DIR=$work ANVIL_SLURM_DIR=$work/none bash "$src/slurm/h200-nvl.sbatch" cfg.yaml 2>&1)
rc=$?
expect 2 "no $work/none/train.sbatch"

[ $failures -eq 0 ] && echo "preflight: arguments, no-driver, topology, ACS, all-reduce wiring as expected"
exit $((failures > 0))
