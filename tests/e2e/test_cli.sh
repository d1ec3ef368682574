#!/usr/bin/env bash
# The CLI surface: help lists every verb, --version works, usage errors exit 2, a launch that
# MPI did not wire up is refused.
set -u
fail() { echo "FAIL: $*"; exit 1; }
bin=${ANVIL_BIN:?}
help=$("$bin" --help) || fail "--help exited non-zero"
for verb in train validate export inspect init-model tokenize prepare generate eval; do
  grep -qE "^  $verb " <<<"$help" || fail "--help does not list '$verb'"
done
"$bin" --version | grep -qE '^anvil [0-9]+\.[0-9]+\.[0-9]+$' || fail "--version"
"$bin" >/dev/null 2>&1; [ $? -eq 2 ] || fail "no subcommand must exit 2"
"$bin" frobnicate >/dev/null 2>&1; [ $? -eq 2 ] || fail "unknown verb must exit 2"
out=$("$bin" prepare 2>&1); rc=$?
[ $rc -eq 2 ] || fail "prepare without a config must exit 2 (got $rc)"
grep -q "config is required" <<<"$out" || fail "prepare without a config: $out"
out=$("$bin" prepare /nonexistent.yaml 2>&1); rc=$?
[ $rc -eq 2 ] || fail "prepare of a missing config must exit 2 (got $rc)"
grep -q "/nonexistent.yaml" <<<"$out" || fail "prepare of a missing config must name it: $out"

# srun without PMIx: the task sees a world of one while srun started three. train refuses
# (exit 2, naming the fix) before it writes anything.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bin" init-model --preset tiny --out "$tmp/model" --seed 1 >/dev/null || fail "init-model"
out=$(cd "${ANVIL_SOURCE_DIR:?}" && env -u OMPI_COMM_WORLD_SIZE SLURM_STEP_NUM_TASKS=3 "$bin" train \
  configs/demo-cpu.yaml --set model.path="$tmp/model" --set output_dir="$tmp/run" 2>&1); rc=$?
[ $rc -eq 2 ] || fail "a world of 1 under an srun of 3 tasks must exit 2 (got $rc): $out"
grep -q "srun started 3 tasks, but MPI's world has 1 rank" <<<"$out" || fail "launch check: $out"
grep -q "srun --mpi=pmix" <<<"$out" || fail "the launch check must name the fix: $out"
[ ! -e "$tmp/run/checkpoints" ] || fail "a refused launch wrote checkpoints"
echo ok
