#!/usr/bin/env bash
# expect_abort.sh MPIEXEC PROBE: the job must fail (non-zero, not a timeout) within 30 s,
# and the failing rank's message must be printed.
set -u
mpiexec=$1 probe=$2
start=$(date +%s)
out=$(timeout 30 "$mpiexec" --oversubscribe -np 2 "$probe" 2>&1)
rc=$?
elapsed=$(( $(date +%s) - start ))
echo "$out"
echo "exit code $rc after ${elapsed}s"
if [ "$rc" -eq 124 ]; then echo "FAIL: job hung (killed by timeout)"; exit 1; fi
if [ "$rc" -eq 0 ]; then echo "FAIL: job succeeded although rank 1 failed"; exit 1; fi
grep -q "\[rank 1\] error: rank 1 fails on purpose" <<<"$out" || { echo "FAIL: rank 1's message missing"; exit 1; }
echo "ok"
