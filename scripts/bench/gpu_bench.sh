#!/usr/bin/env bash
# The GPU benchmarks of issue 8 in one command, anvil against PyTorch on the same GPU in the
# same run: ceilings (cuBLASLt bf16 GEMM, device copy), attention forward and backward, the
# LoRA layer, and the Llama-3-8B-shape LoRA training step. Writes
# OUT/<date>-<device>-<name>.json (the issue's records, scripts/bench/gpu_pair.py) and prints
# a table; the raw JSON lines and every log stay under OUT/raw and OUT/logs.
#
#   scripts/bench/gpu_bench.sh [--quick] [--out DIR] [--name NAME] [--skip-kernels] [--skip-train]
#
#   --quick        fewer shapes and calls, 3 timed training steps: a first run of about 5-8 min
#                  after the build (the build itself: ~2-4 min on 16 cores)
#   --out DIR      where results go (default tests/bench/results; on a lent machine use $OUT)
#   --name NAME    the file name's last part (default gpu-bench, gpu-bench-quick with --quick)
# Environment:
#   BENCH_BIN, ANVIL_BIN  prebuilt bench_gpu_kernels and anvil (then nothing is built)
#   BUILD                 build directory (default build-gpu-bench)
#   WORK                  model, data and run directory (default $BUILD/work; needs ~17 GB)
#   PYTHON                Python with torch, transformers, peft (default .venv/bin/python, else python3)
#   BATCH                 sequences per training step on both sides (default 1)
# A stage that fails or times out is logged and the others still run; the results file has
# whatever was measured (an unpaired measurement has reference/ratio null).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1
QUICK=0; OUTDIR=tests/bench/results; NAME=""; DO_KERNELS=1; DO_TRAIN=1
ARGS="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --out) OUTDIR=$2; shift ;;
    --name) NAME=$2; shift ;;
    --skip-kernels) DO_KERNELS=0 ;;
    --skip-train) DO_TRAIN=0 ;;
    -h|--help) sed -n 2,23p "$0"; exit 0 ;;
    *) echo "gpu_bench.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$NAME" ] || NAME=$([ $QUICK = 1 ] && echo gpu-bench-quick || echo gpu-bench)
BUILD=${BUILD:-build-gpu-bench}
WORK=${WORK:-$BUILD/work}
BATCH=${BATCH:-1}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
QFLAG=()
[ $QUICK = 0 ] || QFLAG=(--quick)
STEPS=$([ $QUICK = 1 ] && echo 4 || echo 11)   # anvil: step 1 is warm-up, the rest are timed
mkdir -p "$OUTDIR/raw" "$OUTDIR/logs" "$WORK"
RAW=$OUTDIR/raw; LOGS=$OUTDIR/logs
T0=$(date +%s)

say() { printf '[gpu_bench %4ss] %s\n' $(( $(date +%s) - T0 )) "$*"; }
# run_stage NAME TIMEOUT_S STDOUT_FILE CMD...: stdout to the file, stderr to LOGS/NAME.log.
run_stage() {
  local name=$1 limit=$2 out=$3; shift 3
  say "$name: $*"
  echo "$name: $*" >> "$LOGS/commands.txt"
  timeout --kill-after=10 "$limit" "$@" > "$out" 2> "$LOGS/$name.log"
  local rc=$?
  [ $rc = 0 ] || say "$name: FAILED (exit $rc; timeout = 124), see $LOGS/$name.log: $(tail -n 2 "$LOGS/$name.log" | tr '\n' ' ')"
  return $rc
}
# smi_start FILE / smi_stop: sample the device's memory.used every 200 ms.
SMI_PID=""
smi_start() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 200 > "$1" 2>/dev/null & SMI_PID=$!; }
smi_stop() { [ -z "$SMI_PID" ] || { kill "$SMI_PID" 2>/dev/null; wait "$SMI_PID" 2>/dev/null; SMI_PID=""; }; }
trap smi_stop EXIT

# ---- device and versions --------------------------------------------------------------------
if ! command -v nvidia-smi > /dev/null || ! nvidia-smi -L > /dev/null 2>&1; then
  echo "gpu_bench.sh: no GPU here (nvidia-smi -L fails); nothing to measure" >&2
  exit 77
fi
DEVICE=$(nvidia-smi --query-gpu=name --format=csv,noheader -i 0 | head -n 1)
SLUG=$(echo "$DEVICE" | tr '[:upper:]' '[:lower:]' | sed 's/[^a-z0-9]\+/-/g; s/^-//; s/-$//')
DATE=$(date +%F)
RESULT=$OUTDIR/$DATE-$SLUG-$NAME.json
{
  echo "date: $(date -u)"; echo "device: $DEVICE"; nvidia-smi; nproc; free -g
  command -v nvcc > /dev/null && nvcc --version
  "$PYTHON" -c 'import torch, transformers, peft; print("torch", torch.__version__, "cuda", torch.version.cuda,
"cudnn", torch.backends.cudnn.version(), "transformers", transformers.__version__, "peft", peft.__version__)'
  git -C "$ROOT" log -1 --format='commit %H %s' 2>/dev/null; git -C "$ROOT" status --short 2>/dev/null | head -n 50
} > "$LOGS/env.txt" 2>&1
say "device $DEVICE, results to $RESULT"

# ---- build ------------------------------------------------------------------------------------
if [ -n "${BENCH_BIN:-}" ] && [ -n "${ANVIL_BIN:-}" ]; then
  say "prebuilt: $BENCH_BIN, $ANVIL_BIN"
else
  say "building anvil and bench_gpu_kernels in $BUILD"
  if ! { cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DANVIL_TESTS=ON > "$LOGS/cmake.log" 2>&1 &&
         cmake --build "$BUILD" -j "$(nproc)" --target anvil bench_gpu_kernels >> "$LOGS/cmake.log" 2>&1; }; then
    say "build FAILED, see $LOGS/cmake.log:"; tail -n 30 "$LOGS/cmake.log"; exit 1
  fi
  BENCH_BIN=$BUILD/bench-gpu/bench_gpu_kernels
  ANVIL_BIN=$BUILD/src/cli/anvil
  say "build done"
fi

# ---- kernels: ceilings, attention, LoRA layer ----------------------------------------------
if [ $DO_KERNELS = 1 ]; then
  KT=$([ $QUICK = 1 ] && echo 150 || echo 600)
  run_stage ours-kernels "$KT" "$RAW/ours-kernels.jsonl" "$BENCH_BIN" all "${QFLAG[@]}"
  run_stage ref-kernels "$KT" "$RAW/ref-kernels.jsonl" "$PYTHON" scripts/bench/gpu_reference.py all "${QFLAG[@]}"
fi

# ---- training step: Llama-3-8B shape, LoRA r 16 on all projections, seq 4096, checkpointing --
if [ $DO_TRAIN = 1 ]; then
  MODEL=$WORK/llama3-8b
  SHAPE="{\"model\": \"llama3-8b\", \"seq\": 4096, \"batch\": $BATCH, \"rank\": 16, \"checkpointing\": true}"
  if [ -f "$MODEL/config.json" ] && { [ -f "$MODEL/model.safetensors" ] || [ -f "$MODEL/model.safetensors.index.json" ]; }; then
    say "model: reusing $MODEL"
  else
    run_stage init-model 600 "$LOGS/init-model.out" "$ANVIL_BIN" init-model --preset llama3-8b --dtype bf16 --seed 1 \
      --out "$MODEL" --force
  fi
  mkdir -p "$WORK/data"
  # Synthetic text, seeded, no downloads: ~6 MB of made-up words, far more than the run reads.
  "$PYTHON" - "$WORK/data/synthetic.jsonl" <<'PY'
import json, random, sys
rng = random.Random(8)
words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(5000)]
with open(sys.argv[1], "w") as f:
    for _ in range(3000):
        f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(rng.randint(200, 500)))}) + "\n")
PY
  rm -rf "$WORK/run-llama3-8b"
  smi_start "$RAW/smi-ours.txt"
  run_stage ours-train 900 "$LOGS/ours-train.out" "$ANVIL_BIN" train configs/bench/llama3-8b-lora.yaml \
    --set output_dir="$WORK/run-llama3-8b" --set model.path="$MODEL" --set data.train="$WORK/data/synthetic.jsonl" \
    --set train.steps="$STEPS" --set train.global_batch="$BATCH" --set train.micro_batch="$BATCH"
  smi_stop
  if [ -s "$WORK/run-llama3-8b/metrics.jsonl" ]; then
    cp "$WORK/run-llama3-8b/metrics.jsonl" "$RAW/ours-metrics.jsonl"
    "$PYTHON" scripts/bench/gpu_pair.py train-line --metrics "$RAW/ours-metrics.jsonl" --model-config "$MODEL/config.json" \
      --seq 4096 --batch "$BATCH" --rank 16 --skip 1 --checkpointing > "$RAW/ours-train.jsonl" 2>> "$LOGS/ours-train.log"
    "$PYTHON" scripts/bench/gpu_pair.py memory-line --side ours --smi-log "$RAW/smi-ours.txt" --shape "$SHAPE" \
      >> "$RAW/ours-train.jsonl" 2>> "$LOGS/ours-train.log"
  fi
  REF_STEPS=$([ $QUICK = 1 ] && echo 3 || echo 10)
  smi_start "$RAW/smi-ref.txt"
  run_stage ref-train 900 "$RAW/ref-train.jsonl" "$PYTHON" scripts/bench/gpu_reference.py train_step \
    --model-config "$MODEL/config.json" --seq 4096 --batch "$BATCH" --warmup-steps 1 --steps "$REF_STEPS"
  smi_stop
  [ -s "$RAW/ref-train.jsonl" ] && "$PYTHON" scripts/bench/gpu_pair.py memory-line --side reference \
    --smi-log "$RAW/smi-ref.txt" --shape "$SHAPE" >> "$RAW/ref-train.jsonl" 2>> "$LOGS/ref-train.log"
fi

# ---- pair, write, print -----------------------------------------------------------------------
shopt -s nullglob
LINES=("$RAW"/*.jsonl)
[ ${#LINES[@]} -gt 0 ] || { say "nothing was measured"; exit 1; }
"$PYTHON" scripts/bench/gpu_pair.py pair --lines "${LINES[@]}" --out "$RESULT" --date "$DATE" --device "$DEVICE" \
  --command "scripts/bench/gpu_bench.sh $ARGS"
say "done: $RESULT"
