#!/usr/bin/env bash
# `anvil tokenize` against Hugging Face `tokenizers`: for every fixture family (written by
# scripts/fixtures/make_tokenizers.py, the CTest fixture tokenizer_fixtures), the ids of
# each line must be HF's, byte for byte in the same JSON form, and --decode must give the
# lines back where the family keeps text unchanged.
#   test_tokenizer.sh FIXTURES_DIR
set -u
fail() { echo "FAIL: $*"; exit 1; }
bin=${ANVIL_BIN:?}
fixtures=${1:?usage: test_tokenizer.sh FIXTURES_DIR}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for family in gpt2 gpt2_prefix gpt2_unk gpt2_drop llama3 qwen2 smollm2 splits llama2 mistral \
  metaspace_split; do
  dir=$fixtures/$family
  [ -f "$dir/lines.txt" ] || fail "$dir/lines.txt missing (run the tokenizer_fixtures test)"
  "$bin" tokenize "$dir" --file "$dir/lines.txt" >"$work/ids.jsonl" || fail "$family: encode exited $?"
  cmp -s "$work/ids.jsonl" "$dir/lines_expected.jsonl" ||
    fail "$family: ids differ from HF: $(diff "$work/ids.jsonl" "$dir/lines_expected.jsonl" | head -5)"
  "$bin" tokenize "$dir" --add-special <"$dir/lines.txt" >"$work/ids_special.jsonl" ||
    fail "$family: encode --add-special exited $?"
  cmp -s "$work/ids_special.jsonl" "$dir/lines_expected_special.jsonl" ||
    fail "$family: --add-special ids differ from HF"
  echo "$family: $(wc -l <"$work/ids.jsonl") lines match HF"
done

# Round trip where nothing is normalized or stripped (and no added token is non-ASCII:
# HF decodes those wrongly, and anvil does as HF does).
for family in llama3; do
  dir=$fixtures/$family
  "$bin" tokenize "$dir" --file "$dir/lines.txt" | "$bin" tokenize "$dir" --decode >"$work/text.txt" ||
    fail "$family: decode exited non-zero"
  cmp -s "$work/text.txt" "$dir/lines.txt" || fail "$family: decode(encode(lines)) != lines"
done
# Llama-3's template puts BOS first; --skip-special drops it (and the special tokens the
# lines hold) again.
dir=$fixtures/llama3
"$bin" tokenize "$dir" --add-special --file "$dir/lines.txt" | "$bin" tokenize "$dir" --decode >"$work/text.txt"
cmp -s "$work/text.txt" <(sed 's/^/<|begin_of_text|>/' "$dir/lines.txt") || fail "llama3: BOS round trip"
"$bin" tokenize "$dir" --add-special --file "$dir/lines.txt" |
  "$bin" tokenize "$dir" --decode --skip-special >"$work/text.txt"
cmp -s "$work/text.txt" <(sed -E 's/<\|(begin_of_text|end_of_text|eot_id|start_header_id|end_header_id)\|>//g' "$dir/lines.txt") ||
  fail "llama3: --skip-special round trip"

# User errors exit 2 and say what is wrong.
out=$("$bin" tokenize "$work" 2>&1 </dev/null); rc=$?
[ $rc -eq 2 ] || fail "a directory without tokenizer.json must exit 2 (got $rc)"
grep -q "has no tokenizer.json" <<<"$out" || fail "message for a missing tokenizer.json: $out"
echo sentencepiece >"$work/tokenizer.model"
out=$("$bin" tokenize "$work" 2>&1 </dev/null); rc=$?
[ $rc -eq 2 ] || fail "a directory with only tokenizer.model must exit 2 (got $rc)"
grep -q "convert it to tokenizer.json" <<<"$out" || fail "message for tokenizer.model only: $out"
rm "$work/tokenizer.model"
out=$(printf 'ok\n\xff\n' | "$bin" tokenize "$fixtures/gpt2" 2>&1); rc=$?
[ $rc -eq 2 ] || fail "invalid UTF-8 must exit 2 (got $rc)"
grep -q "<stdin>:2: .*not valid UTF-8" <<<"$out" || fail "message for invalid UTF-8: $out"
echo ok
