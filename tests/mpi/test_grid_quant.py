"""`anvil train` with a quantized base (model.quant: nf4) under mpirun on the grids
(tp, dp) = (1,1), (1,2), (2,1), (2,2).

Each TP rank quantizes its own slice of every linear weight (NF4 blocks and the
double-quantization offset are taken over the slice, as a rank holding only its slice must),
so the quantized base is a function of tp, not of dp:
- (1,2) gives the losses and adapter of (1,1), and (2,2) those of (2,1), within relative
  1e-5 (the equivalence rule of DESIGN.md at a fixed tp);
- (2,1) stays within 3% of (1,1) on the mean loss of the last 4 steps (the QLoRA tolerance
  of e2e.qlora): a different quantization of the same weights, not a different model.

Usage: test_grid_quant.py MPIEXEC   (ANVIL_BIN, ANVIL_SOURCE_DIR from the environment)"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file

ANVIL = os.environ["ANVIL_BIN"]
SRC = os.environ["ANVIL_SOURCE_DIR"]
MPIEXEC = sys.argv[1]
CONFIG = os.path.join(SRC, "configs", "demo-cpu.yaml")
STEPS = 12
TOLERANCE = 1e-5
ACROSS_TP = 0.03


def train(model, out, tp, dp):
    sets = [f"output_dir={out}", f"model.path={model}", f"train.steps={STEPS}", "train.warmup_steps=3",
            "train.eval_every=0", "checkpoint.every=0", f"parallel.tp={tp}", "log.every=4", "model.quant=nf4"]
    cmd = [MPIEXEC, "--oversubscribe", "-np", str(tp * dp), ANVIL, "train", CONFIG]
    for s in sets:
        cmd += ["--set", s]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=SRC, timeout=300)
    assert p.returncode == 0, f"tp {tp} dp {dp}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    with open(os.path.join(out, "metrics.jsonl")) as f:
        losses = np.array([r["loss"] for r in map(json.loads, f) if "loss" in r])
    adapter = load_file(os.path.join(out, "adapter", "adapter_model.safetensors"))
    return losses, adapter


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main():
    with tempfile.TemporaryDirectory(prefix="anvil_mpi_grid_quant_") as tmp:
        model = os.path.join(tmp, "model")
        p = subprocess.run([ANVIL, "init-model", "--preset", "tiny", "--out", model, "--seed", "1", "--init-std",
                            "0.1"], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        runs = {g: train(model, os.path.join(tmp, f"run_{g[0]}_{g[1]}"), *g) for g in [(1, 1), (1, 2), (2, 1), (2, 2)]}
        for same, ref in [((1, 2), (1, 1)), ((2, 2), (2, 1))]:
            (loss, adapter), (loss_ref, adapter_ref) = runs[same], runs[ref]
            assert len(loss) == STEPS and rel(loss, loss_ref) <= TOLERANCE, (same, loss, loss_ref)
            worst = max(rel(adapter[k], adapter_ref[k]) for k in adapter_ref)
            assert worst <= TOLERANCE, (same, worst)
            print(f"tp {same[0]} dp {same[1]} = tp {ref[0]} dp {ref[1]}: losses {rel(loss, loss_ref):.1e}, "
                  f"adapter {worst:.1e}")
        a, b = runs[(2, 1)][0][-4:].mean(), runs[(1, 1)][0][-4:].mean()
        assert abs(a - b) / b <= ACROSS_TP, (a, b)
        assert not np.array_equal(runs[(2, 1)][0], runs[(1, 1)][0]), "tp 2 should quantize per slice"
        print(f"tp 2 vs tp 1 (each rank quantizes its slice): last-4 mean loss {a:.4f} vs {b:.4f} "
              f"({abs(a - b) / b:.2%}, tolerance {ACROSS_TP:.0%})")


if __name__ == "__main__":
    main()
