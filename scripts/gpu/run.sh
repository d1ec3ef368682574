#!/usr/bin/env bash
# The GPU validation from the pack alone (scripts/gpu/pack.sh made it on a build machine),
# on a GPU node with no development packages, in at most ~9 minutes:
#
#   scripts/gpu/run.sh OUT_DIR        (from the repository root of a copy of the tree)
#     ANVIL_GPU_PACK  the pack (default gpu-pack)
#     PYTHON          python3 with torch (+ transformers, peft) for the PyTorch side
#     ANVIL_GPU_BUDGET_S  the whole run's limit (default 530): a stage gets its own limit or
#                     what is left of this, whichever is less; none starts with < 10 s left
#
# Stages, each with its own time limit; a failing stage never stops the later ones:
#   facts      nvidia-smi, driver, the pack's MANIFEST
#   tests      every GPU test program (each kernel vs the CPU backend, the backend, a training
#              step, NCCL on one rank) and the host-staged comm over the pack's mpirun
#   train      gpu.train (cuda vs cpu losses, tp 2 on one GPU over host-staged MPI) and a short
#              fine-tune of the demo with parallel.backend: cuda
#   sanitizer  compute-sanitizer memcheck and racecheck on the attention and LoRA op tests
#   bench      bench_gpu_kernels --quick against PyTorch (gpu_reference.py), paired
# OUT_DIR gets at most 8 files, summary.md first. Without a GPU every GPU stage reports a clean
# skip and the CPU parts (the pack's loader path, its mpirun, the staged comm) still run: CI
# runs it that way (e2e.gpu_pack), so the pack never rots. Exit 0 unless a stage failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
[ $# -eq 1 ] || { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
out=$1
mkdir -p "$out"
out=$(cd "$out" && pwd)
packed=${ANVIL_GPU_PACK:-gpu-pack}/bundle.tar.gz
[ -f "$packed" ] || { echo "run.sh: no $packed (make it with scripts/gpu/pack.sh)" >&2; exit 2; }
py=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xzf "$packed" -C "$work"
pack=$work/bundle
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export GTEST_COLOR=no

# The CUDA runtime, cuBLAS(Lt) and NCCL: the toolkit's, else those of PyTorch's wheels.
cuda_dirs=()
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do [ -d "$d" ] && cuda_dirs+=("$d"); done
site=$("$py" -c 'import nvidia, os; print(list(nvidia.__path__)[0])' 2>/dev/null || true)
if [ -n "$site" ]; then for d in "$site"/*/lib; do [ -d "$d" ] && cuda_dirs+=("$d"); done; fi
cuda_path=$(IFS=:; echo "${cuda_dirs[*]}")
export LD_LIBRARY_PATH="$pack/lib${cuda_path:+:$cuda_path}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

summary=$out/summary.md
status=0
deadline=$((SECONDS + ${ANVIL_GPU_BUDGET_S:-530}))
gpu=0
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then gpu=1; fi
line() { echo "$*" >> "$summary"; echo "$*"; }
# stage NAME LIMIT_S LOG CMD...: runs CMD with a time limit, appends its output to LOG and a
# row to the summary. Exit 77 from CMD is a skip.
stage() {
  local name=$1 limit=$2 log=$3; shift 3
  local t0=$SECONDS rc left=$((deadline - SECONDS))
  if [ $left -lt 10 ]; then
    line "| $name | not run: the run's time budget is spent | 0 s |"
    status=1
    return
  fi
  [ "$limit" -le "$left" ] || limit=$left
  echo "=== $name: $*" >> "$log"
  timeout --kill-after=10 "$limit" "$@" >> "$log" 2>&1
  rc=$?
  local verdict=pass
  if [ $rc = 77 ]; then verdict="skipped"
  elif [ $rc = 124 ] || [ $rc = 137 ]; then verdict="FAIL (timed out after ${limit}s)"; status=1
  elif [ $rc != 0 ]; then verdict="FAIL (exit $rc)"; status=1
  fi
  line "| $name | $verdict | $((SECONDS - t0)) s |"
}
# A gtest program: pass/fail, and how many of its cases ran and were skipped.
gtest_stage() {
  local name=$1 limit=$2 log=$3; shift 3
  local before
  before=$(wc -l < "$log" 2>/dev/null || echo 0)
  stage "$name" "$limit" "$log" "$@"
  local ran skipped
  ran=$(tail -n +"$((before + 1))" "$log" | grep -c '^\[       OK \]\|^\[  FAILED  \] .*(')
  skipped=$(tail -n +"$((before + 1))" "$log" | grep -c '^\[  SKIPPED \]')
  # Every case skipped (no GPU): the program is a skip, not a pass.
  [ "$ran" -gt 0 ] || [ "$skipped" -eq 0 ] || sed -i '$ s/| pass |/| skipped |/' "$summary"
  sed -i '$ s/ |$/ | '"$ran run, $skipped skipped"' |/' "$summary"
}

: > "$summary"
line "# GPU validation: $(date -u +%Y-%m-%dT%H:%MZ)"
line ""
if [ $gpu = 1 ]; then
  line "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
else
  line "device: none (no nvidia-smi or no GPU): GPU stages skip, CPU parts run"
fi
line "pack: $(tail -1 "$pack/MANIFEST")"
line ""
line "| stage | verdict | time | cases |"
line "|---|---|---|---|"

# ---- facts --------------------------------------------------------------------------------
facts=$out/facts.txt
{ nvidia-smi 2>&1 || true; nvidia-smi -q 2>/dev/null | head -60 || true; echo; cat "$pack/MANIFEST"
  echo; echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"; } > "$facts"
stage "pack loads (anvil --version)" 30 "$facts" "$pack/anvil" --version

# ---- tests --------------------------------------------------------------------------------
tests=$out/tests.log
: > "$tests"
for t in test_gpu_kernels test_gpu_attention test_gpu_ops test_gpu_loss_optim test_gpu_backend \
         test_gpu_nccl test_gpu_train_step test_gpu_moe test_gpu_llama4; do
  gtest_stage "$t" 90 "$tests" env ANVIL_SOURCE_DIR="$root" "$pack/bin/$t"
done
gtest_stage "staged comm, 2 ranks (pack's mpirun)" 60 "$tests" \
  "$pack/mpirun" -np 2 "$pack/bin/test_mpi_staged_comm"

# ---- train --------------------------------------------------------------------------------
train=$out/train.log
: > "$train"
stage "gpu.train (cuda vs cpu, tp 2 on one GPU)" 150 "$train" env ANVIL_BIN="$pack/anvil" \
  ANVIL_SOURCE_DIR="$root" ANVIL_MPIEXEC="$pack/mpirun" "$py" tests/gpu/test_train_gpu.py
finetune() {
  [ $gpu = 1 ] || { echo "no GPU: skipped"; return 77; }
  "$pack/anvil" init-model --spec tests/gpu/finetune_spec.json --out "$work/model" --seed 1 \
    --init-std 0.1 || return 1
  "$pack/anvil" train configs/demo-cpu.yaml --set model.path="$work/model" \
    --set output_dir="$work/run" --set parallel.backend=cuda --set train.steps=60 \
    --set train.eval_every=30 --set checkpoint.every=0 || return 1
  cp "$work/run/metrics.jsonl" "$out/finetune-metrics.jsonl"
}
export -f finetune
export gpu pack work out py root
stage "fine-tune of the demo, backend cuda, 60 steps" 120 "$train" bash -c finetune

# ---- sanitizer ----------------------------------------------------------------------------
san=$out/sanitizer.log
: > "$san"
sanitize() {
  [ $gpu = 1 ] || { echo "no GPU: skipped"; return 77; }
  command -v compute-sanitizer >/dev/null || { echo "no compute-sanitizer"; return 1; }
  compute-sanitizer --tool "$1" --error-exitcode 1 "$pack/bin/$2" --gtest_filter="$3"
}
export -f sanitize
small_attention='*B1_T1_H8_Hkv2_D64_causal*:*B2_T17_H8_Hkv2_D64_causal_seg*:*B1_T1_H4_Hkv1_D128_full*'
small_lora='Shapes/GpuLora.MatchesCpu/0:Shapes/GpuLora.MatchesCpu/1:GpuLoraMask.*'
for tool in memcheck racecheck; do
  stage "$tool: attention (smallest shapes)" 90 "$san" \
    bash -c 'sanitize "$@"' _ "$tool" test_gpu_attention "$small_attention"
  stage "$tool: LoRA (smallest shapes)" 60 "$san" bash -c 'sanitize "$@"' _ "$tool" test_gpu_ops "$small_lora"
  stage "$tool: MoE routing and row moves" 60 "$san" bash -c 'sanitize "$@"' _ "$tool" test_gpu_moe 'GpuMoe.*'
  stage "$tool: Llama 4 ops" 60 "$san" bash -c 'sanitize "$@"' _ "$tool" test_gpu_llama4 'GpuLlama4.*'
done

# ---- bench --------------------------------------------------------------------------------
bench() {
  [ $gpu = 1 ] || { echo "no GPU: skipped"; return 77; }
  BENCH_BIN="$pack/bin/bench_gpu_kernels" ANVIL_BIN="$pack/anvil" PYTHON="$py" \
    scripts/bench/gpu_bench.sh --quick --skip-train --out "$work/bench" || return 1
  cp "$work/bench"/*.json "$out/bench.json" 2>/dev/null
  cat "$work/bench"/logs/*.log 2>/dev/null | tail -200
}
export -f bench
stage "kernels vs PyTorch (--quick)" 150 "$out/bench.log" bash -c bench

line ""
line "files: $(cd "$out" && ls | tr '\n' ' ')"
exit $status
