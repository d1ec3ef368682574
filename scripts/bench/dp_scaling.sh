#!/usr/bin/env bash
# Data-parallel scaling of `anvil train` on the CPU ranks of one 2-core machine, the same
# global batch (4 x 256 tokens, smollm2-135m shape, LoRA r 16) three ways:
#   dp 1, 1 thread     the serial baseline t1
#   dp 1, 2 threads    one rank using both cores through OpenMP/OpenBLAS threads
#   dp 2, 1 thread     two ranks, one core each, gradients all-reduced once per step
# Parallel efficiency of dp 2 = t1 / (2 t(dp 2)); the threads' efficiency likewise.
#
# Usage: scripts/bench/dp_scaling.sh [MODEL_DIR]   (default /tmp/bench/smollm2, made if missing)
# Ranks are not bound to cores (--bind-to none), so that every run uses the whole machine:
# anvil gives each of the node's ranks CPUs / ranks threads.
# Env: ANVIL (default build/src/cli/anvil), STEPS (default 4; the first is not timed).
set -euo pipefail
cd "$(dirname "$0")/../.."
anvil=${ANVIL:-build/src/cli/anvil}
model=${1:-/tmp/bench/smollm2}
steps=${STEPS:-4}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
[ -f "$model/config.json" ] || "$anvil" init-model --preset smollm2-135m --out "$model" --seed 1 >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

run() {  # run NP TP THREADS (0: anvil's default, CPUs / ranks on the node)
  local np=$1 tp=$2 threads=$3 out="$tmp/np$1_tp$2_t$3" env=()
  [ "$threads" -gt 0 ] && env=(-x OMP_NUM_THREADS="$threads")
  mpirun --oversubscribe --bind-to none "${env[@]}" -np "$np" "$anvil" train configs/demo-cpu.yaml \
    --set model.path="$model" --set output_dir="$out" --set data.seq_len=256 \
    --set train.global_batch=4 --set train.micro_batch=1 --set train.steps="$steps" \
    --set train.warmup_steps=1 --set train.eval_every=0 --set checkpoint.every=0 \
    --set lora.rank=16 --set lora.alpha=32 --set parallel.tp="$tp" --set log.every=1000 >/dev/null 2>&1
  python3 - "$out/metrics.jsonl" "$np" "$tp" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
times = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(rows, rows[1:])]
print(json.dumps({"np": int(sys.argv[2]), "tp": int(sys.argv[3]), "step_s": statistics.median(times),
                  "loss": rows[-1]["loss"]}))
PY
}

serial=$(run 1 1 1)
threads=$(run 1 1 0)
ranks=$(run 2 1 0)
python3 - "$serial" "$threads" "$ranks" <<'PY'
import json, sys
s, t, r = (json.loads(a) for a in sys.argv[1:])
print(f"dp 1, 1 thread:  {s['step_s']:.2f} s/step")
print(f"dp 1, 2 threads: {t['step_s']:.2f} s/step, efficiency {s['step_s'] / (2 * t['step_s']):.0%}")
print(f"dp 2, 1 thread:  {r['step_s']:.2f} s/step, efficiency {s['step_s'] / (2 * r['step_s']):.0%}")
print(f"final loss {s['loss']:.6f} / {t['loss']:.6f} / {r['loss']:.6f}")
PY
