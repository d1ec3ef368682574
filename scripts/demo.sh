#!/usr/bin/env bash
# The demo, set-up included: install, build, make a tiny random Llama model, inspect it.
# Usage: scripts/demo.sh [WORK_DIR]   (default: build/demo)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target anvil

work=${1:-build/demo}
anvil=build/src/cli/anvil
mkdir -p "$work"

echo "== anvil init-model --preset tiny"
"$anvil" init-model --preset tiny --out "$work/tiny" --seed 1 --force
echo
echo "== anvil inspect $work/tiny"
"$anvil" inspect "$work/tiny"
echo
echo "== anvil init-model --preset llama3-8b --dry-run (shapes only, nothing written)"
"$anvil" init-model --preset llama3-8b --dry-run
