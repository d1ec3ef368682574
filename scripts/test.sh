#!/usr/bin/env bash
# The whole test suite, set-up included: installs dependencies, builds three trees and runs
#   1. the libFuzzer targets for a bounded time (clang, build-fuzz/),
#   2. the unit tests under ASan + UBSan (build-asan/),
#   3. every test, labels unit, mpi, e2e, gpu (skipped without a GPU), slurm (build/).
# Usage: scripts/test.sh [extra ctest arguments for step 3, e.g. -L unit]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scripts/setup.sh

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
jobs=$(nproc)
fuzz_seconds=${ANVIL_FUZZ_SECONDS:-30}

echo "== fuzz (clang + libFuzzer, ${fuzz_seconds}s per target)"
cmake -S . -B build-fuzz -G Ninja -DANVIL_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DANVIL_FUZZ_SECONDS="$fuzz_seconds" >/dev/null
cmake --build build-fuzz -j "$jobs"
ctest --test-dir build-fuzz --output-on-failure

echo "== unit tests under ASan + UBSan"
cmake -S . -B build-asan -G Ninja -DANVIL_SANITIZE=ON -DANVIL_CUDA=OFF -DANVIL_WERROR=ON \
  -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan -L unit -j "$jobs" --output-on-failure

echo "== full suite"
cmake -S . -B build -G Ninja -DANVIL_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$jobs"
ctest --test-dir build -j "$jobs" --output-on-failure "$@"
