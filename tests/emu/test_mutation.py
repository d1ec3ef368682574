#!/usr/bin/env python3
"""Mutation test of the emulation tier: with a barrier of the attention kernels removed,
the emulated attention tests must fail.

Each `__syncthreads();  // every warp is done with the previous ...` at the top of the
attention kernels' tile loops (forward, dq, dkv) is dropped in turn through
ANVIL_EMU_DROP_BARRIER=attention.cu:LINE (the line found in the source now, so edits do not
break the test). The emulated attention tests then run on shapes with several tiles, under
each schedule until one fails; a mutant that no schedule catches fails this test. The same
tests without a dropped barrier must pass (the control).

The same check serves other kernels through the optional arguments: the gtest filter to run,
the regex of the barrier lines to drop and how many there must be (kernels/moe.cu: every
barrier of its sort).

Usage: test_mutation.py EMU_BINARY KERNEL_CU [FILTER SITE_REGEX SITES]
"""
import os
import re
import subprocess
import sys

SCHEDULES = ["warp0-first", "last-warp-first", "random", "forward", "reverse"]
# Shapes with several key and query tiles, one per head dim.
FILTER = "*B1_T100_H4_Hkv4_D128_causal*:*B2_T65_H2_Hkv1_D64_full_seg*"
SITE_REGEX = r"__syncthreads\(\);\s*// every warp is done with the previous"
SITES = 3


def run(binary, schedule, filt, drop=None):
    env = dict(os.environ, ANVIL_EMU_SCHEDULE=schedule, ANVIL_EMU_SEED="7", OMP_NUM_THREADS="1")
    env.pop("ANVIL_EMU_DROP_BARRIER", None)
    if drop:
        env["ANVIL_EMU_DROP_BARRIER"] = drop
    p = subprocess.run([binary, f"--gtest_filter={filt}"], env=env, capture_output=True,
                       text=True, timeout=600)
    return p.returncode, p.stdout + p.stderr


def main():
    binary, source = sys.argv[1], sys.argv[2]
    filt, site_regex, expected = FILTER, SITE_REGEX, SITES
    if len(sys.argv) == 6:
        filt, site_regex, expected = sys.argv[3], sys.argv[4], int(sys.argv[5])
    with open(source, encoding="utf-8") as f:
        lines = f.read().splitlines()
    sites = [i + 1 for i, line in enumerate(lines) if re.search(site_regex, line)]
    if len(sites) != expected:
        print(f"expected {expected} barriers /{site_regex}/ in {source}, found lines {sites}")
        return 1
    code, out = run(binary, "forward", filt)
    if code != 0 or "PASSED" not in out:
        print("control run (no barrier dropped) failed:\n" + out[-3000:])
        return 1
    print("control: the tests pass with every barrier in place")
    failures = 0
    for line in sites:
        drop = f"{os.path.basename(source)}:{line}"
        caught = None
        for schedule in SCHEDULES:
            code, out = run(binary, schedule, filt, drop)
            if code != 0 and "FAILED" in out:
                caught = schedule
                break
        if caught:
            print(f"barrier {drop} dropped: caught under schedule '{caught}'")
        else:
            print(f"barrier {drop} dropped: NOT caught by any schedule")
            failures += 1
    print(f"{len(sites) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
