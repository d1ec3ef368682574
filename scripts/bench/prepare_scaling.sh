#!/usr/bin/env bash
# `anvil prepare` on 1 and 2 ranks (this machine's 2 cores): the token cache built from
# text records of real text (the tokenizer benchmark's corpus: Python sources, licences,
# multilingual lines) with a Llama-3-style BPE of 32k tokens trained on it. Prints the
# wall time, input MB/s and the speed-up of 2 ranks, and checks that both caches are the
# same bytes.
#
# Usage: scripts/bench/prepare_scaling.sh [MB]   (default 40 MB of JSONL)
# Env: ANVIL (default build/src/cli/anvil), FIXTURES (a make_tokenizers.py --bench-mb
# output dir; default: made under /tmp/bench/prepare_fixtures, a few minutes once).
set -euo pipefail
cd "$(dirname "$0")/../.."
anvil=${ANVIL:-build/src/cli/anvil}
mb=${1:-40}
fixtures=${FIXTURES:-/tmp/bench/prepare_fixtures}
py=.venv/bin/python
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
[ -f "$fixtures/bench/llama3/tokenizer.json" ] ||
  "$py" scripts/fixtures/make_tokenizers.py --out "$fixtures" --bench-mb 20 >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$anvil" init-model --preset tiny --out "$tmp/model" --seed 1 >/dev/null
rm -f "$tmp/model/tokenizer_config.json" "$tmp/model/special_tokens_map.json"
cp "$fixtures/bench/llama3/tokenizer.json" "$tmp/model/"
[ -f "$fixtures/bench/llama3/tokenizer_config.json" ] && cp "$fixtures/bench/llama3/tokenizer_config.json" "$tmp/model/"
# Records of 16 corpus lines each, repeated up to MB megabytes.
"$py" - "$fixtures/bench/corpus.txt" "$tmp/train.jsonl" "$mb" <<'PY'
import json, sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
budget, size, i = float(sys.argv[3]) * 1e6, 0, 0
with open(sys.argv[2], "w", encoding="utf-8") as f:
    while size < budget:
        rec = json.dumps({"text": "\n".join(lines[(i + k) % len(lines)] for k in range(16))}, ensure_ascii=False) + "\n"
        f.write(rec)
        size += len(rec.encode())
        i += 16
PY
bytes=$(stat -c %s "$tmp/train.jsonl")

prepare() {  # prepare NP
  local np=$1 t0 t1
  t0=$(date +%s.%N)
  if ! mpirun --oversubscribe --bind-to none -np "$np" "$anvil" prepare configs/demo-cpu.yaml \
    --set model.path="$tmp/model" --set output_dir="$tmp/run$np" --set data.train="$tmp/train.jsonl" \
    --set data.eval=null --set train.eval_every=0 --set data.seq_len=2048 --set data.cache_dir="$tmp/cache$np" \
    >"$tmp/out$np" 2>"$tmp/log$np"; then
    echo "prepare on $np rank(s) failed:" >&2
    tail -n 20 "$tmp/log$np" >&2
    exit 1
  fi
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}

echo "input: $(echo "$bytes / 1000000" | bc -l | xargs printf '%.1f') MB of JSONL, $(wc -l <"$tmp/train.jsonl") records; $(nproc) cores"
t1=$(prepare 1) || exit 1
t2=$(prepare 2) || exit 1
grep -h "packing efficiency" "$tmp/log1" | sed "s/^/  /"
grep -h "tokenized on" "$tmp/log1" "$tmp/log2" | sed "s/^/  /"
cmp -s "$(tail -n1 "$tmp/out1")" "$(tail -n1 "$tmp/out2")" && same=yes || same=NO
printf '1 rank : %6.2f s  %6.1f MB/s\n' "$t1" "$(echo "$bytes / 1000000 / $t1" | bc -l)"
printf '2 ranks: %6.2f s  %6.1f MB/s  speed-up %.2fx (same cache bytes: %s)\n' "$t2" \
  "$(echo "$bytes / 1000000 / $t2" | bc -l)" "$(echo "$t1 / $t2" | bc -l)" "$same"
