#!/usr/bin/env bash
# e2e.gpu_pack: the GPU validation pack never rots. scripts/gpu/pack.sh packs this build's
# programs; scripts/gpu/run.sh runs from that pack alone. Here, without a GPU, every GPU stage
# must report a clean skip, the CPU parts (the pack's loader path, its mpirun, the staged
# comm over 2 ranks) must pass, and nothing may fail.
# Usage: test_gpu_pack.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1
build=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$src"
scripts/gpu/pack.sh --build "$build" --no-build --out "$tmp/pack" | tee "$tmp/pack.log"
grep -q "^pack: .* MiB (limit 48 MiB)$" "$tmp/pack.log"
rc=0
ANVIL_GPU_PACK="$tmp/pack" scripts/gpu/run.sh "$tmp/out" > "$tmp/run.log" 2>&1 || rc=$?
summary=$tmp/out/summary.md
cat "$summary"
fail() { echo "e2e.gpu_pack: $*"; exit 1; }
[ $rc = 0 ] || fail "run.sh exited $rc"
! grep -q "| FAIL" "$summary" || fail "a stage failed"
grep -q "^| pack loads (anvil --version) | pass |" "$summary" || fail "the pack's anvil did not load"
grep -q "^| staged comm, 2 ranks (pack's mpirun) | pass | .* | [1-9][0-9]* run, 0 skipped |" "$summary" ||
  fail "the staged comm did not run over the pack's mpirun"
if ! nvidia-smi -L >/dev/null 2>&1; then
  for row in "gpu.train" "fine-tune" "memcheck: attention" "racecheck: LoRA" "kernels vs PyTorch" \
             "test_gpu_nccl"; do
    grep -q "^| $row.* | skipped |" "$summary" || fail "'$row' did not report a clean skip"
  done
fi
files=$(ls "$tmp/out" | wc -l)
[ "$files" -le 8 ] || fail "$files files in OUT_DIR (at most 8)"
head -1 "$tmp/out/summary.md" | grep -q "^# GPU validation" || fail "summary.md does not lead"
echo "e2e.gpu_pack: ok"
