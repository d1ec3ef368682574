#!/usr/bin/env bash
# The CLI surface: help lists every verb, --version works, usage errors exit 2.
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
echo ok
