#!/usr/bin/env bash
# Checkpoint save and load bandwidth against dd on the same disk: bench_checkpoint saves
# and resumes the adapter + AdamW state of a LoRA run (llama3-8b shapes, r 16: 504 MB) the
# way training does; dd writes a file of the same size (with fdatasync, as the save's
# MPI_File_sync) and reads it. Reads are cold (the file evicted from the page cache with
# posix_fadvise first, on both sides) and warm (right after).
#
# The dev VM's disk is cached by its host: the first read of newly written blocks, even
# evicted from the guest's page cache, comes from the storage behind it (0.6-1.0 s for 503
# MB, however long after the write), a second one from the host's cache (0.21-0.28 s), for
# dd as for us (tests/bench/RESULTS.md). So each side reads cold twice: "cold" (first read
# after the write) and "cold again" (evicted once more), each compared with its like. And
# the disk's speed drifts, so the two run in rounds, back to back, the order alternating
# from round to round, each ratio taken within its round; the summary is the median of the
# rounds and the number of rounds at or above 80%. A rank alone on its node resumes a file
# that is not in the page cache past it (io::DirectStream), so at 1 rank the page cache is
# still empty for the "warm" resume after the cold ones, which reads the disk again.
#
# Usage: scripts/bench/checkpoint_bandwidth.sh [DIR] [RANKS]   (default /tmp/bench_ckpt, 1)
# Env: BENCH (default build/tests/unit/bench_checkpoint), PRESET (llama3-8b), RANK (16),
#      ROUNDS (6).
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
exec python3 - "${BENCH:-build/tests/unit/bench_checkpoint}" "${1:-/tmp/bench_ckpt}" "${2:-1}" "${ROUNDS:-6}" \
  "${PRESET:-llama3-8b}" "${RANK:-16}" "${SETTLE:-0}" <<'PY'
import json, os, re, shutil, statistics, subprocess, sys, time

bench, where, ranks, rounds, preset, lora_rank, settle = sys.argv[1:8]
ranks, rounds, settle = int(ranks), int(rounds), float(settle)


def evict(path):
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def dd_seconds(*args):
    err = subprocess.run(["dd", *args], capture_output=True, text=True, check=True).stderr
    return float(re.search(r"copied, ([0-9.]+) s", err).group(1))


def fresh_dir():
    shutil.rmtree(where, ignore_errors=True)
    os.makedirs(where)


def ours():
    """One save, one cold resume and one warm resume (MB/s of the state)."""
    fresh_dir()
    cmd = ["mpirun", "--oversubscribe", "-np", str(ranks), bench, where, "--preset", preset, "--rank", lora_rank,
           "--reps", "1", "--settle", str(settle)]
    o = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    shutil.rmtree(where)
    return o


def dd(nbytes):
    """dd writing (fdatasync), reading cold and warm a file of nbytes (MB/s)."""
    fresh_dir()
    mb = (nbytes + (1 << 20) - 1) >> 20
    path = os.path.join(where, "dd.bin")
    w = dd_seconds("if=/dev/zero", f"of={path}", "bs=1M", f"count={mb}", "conv=fdatasync")
    evict(path)
    time.sleep(settle)
    c = dd_seconds(f"if={path}", "of=/dev/null", "bs=1M")
    evict(path)
    a = dd_seconds(f"if={path}", "of=/dev/null", "bs=1M")
    r = dd_seconds(f"if={path}", "of=/dev/null", "bs=1M")
    shutil.rmtree(where)
    size = mb * 1048576 / 1e6
    return {"write": size / w, "cold": size / c, "again": size / a, "warm": size / r}


nbytes = int(ours()["file_bytes"])  # a first round to learn the size (and warm up), not counted
rows = []
for k in range(rounds):
    if k % 2 == 0:
        o = ours()
        d = dd(nbytes)
    else:
        d = dd(nbytes)
        o = ours()
    row = {"save": o["save_mb_s"] / d["write"], "cold": o["load_cold_mb_s"] / d["cold"],
           "again": o["load_cold_again_mb_s"] / d["again"], "warm": o["load_mb_s"] / d["warm"]}
    rows.append(row)
    first = "ours first" if k % 2 == 0 else "dd first"
    print(f"round {k + 1} ({first}): save {o['save_s']:.2f} s {o['save_mb_s']:.0f} MB/s, dd write {d['write']:.0f}"
          f" -> {row['save']:.0%} | cold resume {o['load_cold_s']:.2f} s {o['load_cold_mb_s']:.0f} MB/s, dd cold"
          f" {d['cold']:.0f} -> {row['cold']:.0%} | cold again {o['load_cold_again_s']:.2f} s"
          f" {o['load_cold_again_mb_s']:.0f} MB/s, dd {d['again']:.0f} -> {row['again']:.0%}"
          f" | warm {o['load_mb_s']:.0f}, dd warm {d['warm']:.0f}"
          f" -> {row['warm']:.0%}")
print(f"state {o['state_bytes'] / 1e6:.0f} MB on {o['ranks']} rank(s) (file {nbytes / 1e6:.0f} MB), {rounds} rounds")
for key, what in (("save", "save / dd write"), ("cold", "cold resume / dd cold read"),
                  ("again", "cold resume again / dd cold read again"), ("warm", "warm resume / dd warm")):
    v = [r[key] for r in rows]
    met = sum(x >= 0.8 for x in v)
    print(f"{what}: median {statistics.median(v):.0%} (min {min(v):.0%}, max {max(v):.0%}), >= 80% in {met} of {len(v)}")
PY
