#!/usr/bin/env bash
# `anvil inspect` on the corpus of tests/fuzz/make_corpus.py: every malformed file and
# model directory is rejected with exit code 2 and one "error: " line that names it; the
# valid ones are listed.
set -u
src=${ANVIL_SOURCE_DIR:?} bin=${ANVIL_BIN:?} python=${ANVIL_PYTHON:-python3}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$python" "$src/tests/fuzz/make_corpus.py" --dirs "$dir" || exit 1

fails=0 count=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

for input in "$dir"/bad_*.safetensors "$dir"/baddir_*; do
  count=$((count + 1))
  name=$(basename "$input")
  out=$("$bin" inspect "$input" 2>&1); rc=$?
  if [ $rc -ne 2 ]; then
    fail "$name: exit $rc (expected 2), output: $out"
  elif ! grep -q "^error: .*$name" <<<"$out"; then
    fail "$name: no 'error: ' line naming the input, output: $out"
  else
    echo "ok   $name: $(head -c 200 <<<"$out")"
  fi
done

expect_listing() {  # PATH PATTERN: inspect succeeds and prints PATTERN
  local out rc
  out=$("$bin" inspect "$1" 2>&1); rc=$?
  if [ $rc -ne 0 ] || ! grep -q "$2" <<<"$out"; then fail "$(basename "$1"): exit $rc, output: $out"; fi
}
expect_listing "$dir/valid_small.safetensors" "^3 tensors in 1 file, 9 parameters, 24 bytes"
expect_listing "$dir/valid_small.safetensors" "^b  *BF16  *\[3\]$"
expect_listing "$dir/valid_every_dtype.safetensors" "^t_BOOL  *BOOL  *\[2\]$"
expect_listing "$dir/valid_empty_and_scalar.safetensors" "^s  *F64  *\[\]$"
expect_listing "$dir/valid_no_tensors.safetensors" "^0 tensors"
expect_listing "$dir/validdir_sharded" "^3 tensors in 2 shards, 6 parameters, 24 bytes"
expect_listing "$dir/validdir_sharded/model.safetensors.index.json" "^c  *F32  *\[2\]  *model-00002-of-00002"

echo "$count malformed inputs checked, $fails failures"
[ "$count" -ge 15 ] && [ "$fails" -eq 0 ]
