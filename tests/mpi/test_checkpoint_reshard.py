"""Resharding: a checkpoint written at (tp, dp) = (2, 2) after step 4 resumes at (1, 1),
(4, 1) and (1, 2), and the continued losses (steps 5-8) and final adapters match the
un-resharded continuation at (2, 2) within relative 1e-5.

Usage: test_checkpoint_reshard.py MPIEXEC   (ANVIL_BIN, ANVIL_SOURCE_DIR from the environment)"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file

ANVIL = os.environ["ANVIL_BIN"]
SRC = os.environ["ANVIL_SOURCE_DIR"]
MPIEXEC = sys.argv[1]
CONFIG = os.path.join(SRC, "configs", "demo-cpu.yaml")
TOLERANCE = 1e-5


def train(model, out, tp, dp, *extra):
    sets = [f"output_dir={out}", f"model.path={model}", "train.steps=8", "train.warmup_steps=2",
            "train.eval_every=0", "checkpoint.every=4", "lora.dropout=0.1", f"parallel.tp={tp}"]
    cmd = [MPIEXEC, "--oversubscribe", "-np", str(tp * dp), ANVIL, "train", CONFIG]
    for s in sets:
        cmd += ["--set", s]
    p = subprocess.run(cmd + list(extra), capture_output=True, text=True, cwd=SRC, timeout=300)
    assert p.returncode == 0, f"tp {tp} dp {dp}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout + p.stderr


def losses(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [(r["step"], r["loss"]) for r in map(json.loads, f) if "loss" in r]


def main():
    with tempfile.TemporaryDirectory(prefix="anvil_mpi_reshard_") as tmp:
        check(tmp)


def check(tmp):
    model = os.path.join(tmp, "model")
    subprocess.run([ANVIL, "init-model", "--preset", "tiny", "--out", model, "--seed", "1", "--init-std", "0.1"],
                   check=True, capture_output=True)
    first = os.path.join(tmp, "first")
    train(model, first, 2, 2, "--stop-after", "4")
    assert os.path.exists(os.path.join(first, "checkpoints", "step_4.h5"))

    runs = {}
    for tp, dp in [(2, 2), (1, 1), (4, 1), (1, 2)]:
        out = os.path.join(tmp, f"tp{tp}_dp{dp}")
        shutil.copytree(first, out)
        log = train(model, out, tp, dp)
        assert "after step 4" in log, log
        runs[(tp, dp)] = (losses(out), load_file(os.path.join(out, "adapter", "adapter_model.safetensors")))

    ref_losses, ref_adapter = runs[(2, 2)]
    assert [s for s, _ in ref_losses] == list(range(1, 9)), ref_losses
    worst = 0.0
    for grid, (got, adapter) in runs.items():
        assert [s for s, _ in got] == list(range(1, 9)), (grid, got)
        for (step, a), (_, b) in zip(got[4:], ref_losses[4:]):
            err = abs(a - b) / abs(b)
            worst = max(worst, err)
            assert err <= TOLERANCE, f"{grid} step {step}: {a} vs {b} (rel {err:.1e})"
        for name, want in ref_adapter.items():
            err = float(np.linalg.norm(adapter[name].astype(np.float64) - want) / np.linalg.norm(want))
            worst = max(worst, err)
            assert err <= TOLERANCE, f"{grid} {name}: rel {err:.1e}"
        print(f"resumed at tp {grid[0]} dp {grid[1]}: losses of steps 5-8 {[f'{l:.6f}' for _, l in got[4:]]}")
    print(f"every grid continues the (2, 2) checkpoint like (2, 2) does; worst relative difference {worst:.1e}")


if __name__ == "__main__":
    main()
