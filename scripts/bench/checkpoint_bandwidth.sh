#!/usr/bin/env bash
# Checkpoint save and load bandwidth against dd on the same disk: bench_checkpoint saves
# and loads the adapter + AdamW state of a LoRA run (llama3-8b shapes, r 16: 504 MB) the
# way training does; dd writes (with fdatasync, as the save's MPI_File_sync) and reads a
# file of the same size in the same directory. Reads are measured cold (the file evicted
# from the page cache with posix_fadvise first, on both sides) and warm (right after).
#
# Usage: scripts/bench/checkpoint_bandwidth.sh [DIR] [RANKS]   (default /tmp/bench_ckpt, 1)
# Env: BENCH (default build/tests/unit/bench_checkpoint), PRESET (llama3-8b), RANK (16).
set -euo pipefail
cd "$(dirname "$0")/../.."
bench=${BENCH:-build/tests/unit/bench_checkpoint}
dir=${1:-/tmp/bench_ckpt}
ranks=${2:-1}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
rm -rf "$dir" && mkdir -p "$dir"
ours=$(mpirun --oversubscribe -np "$ranks" "$bench" "$dir" --preset "${PRESET:-llama3-8b}" --rank "${RANK:-16}" --reps 3)
bytes=$(python3 -c "import json,sys; print(int(json.loads(sys.argv[1])['file_bytes']))" "$ours")
mb=$(( (bytes + (1 << 20) - 1) >> 20 ))
rm -rf "$dir/checkpoints"
evict() { python3 -c "import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)" "$1"; }
best_w=0 best_r=0 best_c=0
for _ in 1 2 3; do
  w=$( { dd if=/dev/zero of="$dir/dd.bin" bs=1M count="$mb" conv=fdatasync 2>&1 >/dev/null; } | tail -1)
  evict "$dir/dd.bin"
  c=$( { dd if="$dir/dd.bin" of=/dev/null bs=1M 2>&1 >/dev/null; } | tail -1)
  best_c=$(python3 -c "import re,sys; s=sys.argv[1]; m=re.search(r'copied, ([0-9.]+) s', s); print(max(float(sys.argv[2]), $mb*1.048576/float(m.group(1))))" "$c" "$best_c")
  r=$( { dd if="$dir/dd.bin" of=/dev/null bs=1M 2>&1 >/dev/null; } | tail -1)
  best_w=$(python3 -c "import re,sys; s=sys.argv[1]; m=re.search(r'copied, ([0-9.]+) s', s); print(max(float(sys.argv[2]), $mb*1.048576/float(m.group(1))))" "$w" "$best_w")
  best_r=$(python3 -c "import re,sys; s=sys.argv[1]; m=re.search(r'copied, ([0-9.]+) s', s); print(max(float(sys.argv[2]), $mb*1.048576/float(m.group(1))))" "$r" "$best_r")
done
rm -rf "$dir"
python3 - "$ours" "$best_w" "$best_r" "$best_c" <<'PY'
import json, sys
o = json.loads(sys.argv[1]); w, r, c = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
print(f"state {o['state_bytes'] / 1e6:.0f} MB on {o['ranks']} rank(s) (file {o['file_bytes'] / 1e6:.0f} MB)")
print(f"save {o['save_s']:.2f} s = {o['save_mb_s']:.0f} MB/s   dd write {w:.0f} MB/s   -> {o['save_mb_s'] / w:.0%}")
print(f"load cold {o['load_cold_s']:.2f} s = {o['load_cold_mb_s']:.0f} MB/s   dd read cold {c:.0f} MB/s   -> {o['load_cold_mb_s'] / c:.0%}")
print(f"load warm {o['load_s']:.2f} s = {o['load_mb_s']:.0f} MB/s   dd read warm {r:.0f} MB/s   -> {o['load_mb_s'] / r:.0%}")
PY
