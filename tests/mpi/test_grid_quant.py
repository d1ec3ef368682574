"""`anvil train` with a quantized base (model.quant: nf4) under mpirun on the grids
(tp, dp) = (1,1), (1,2), (2,1), (2,2).

Each TP rank quantizes its own slice of every linear weight (NF4 blocks and the
double-quantization offset are taken over the slice, as a rank holding only its slice must),
so the quantized base is a function of tp, not of dp:
- (1,2) gives the losses and adapter of (1,1), and (2,2) those of (2,1), within relative
  1e-5 (the equivalence rule of DESIGN.md at a fixed tp);
- (2,1) stays within 3% of (1,1) on the mean loss of the last 4 steps (the QLoRA tolerance
  of e2e.qlora): a different quantization of the same weights, not a different model.

With --bnb the base is a bitsandbytes NF4 checkpoint (scripts/fixtures/quant_checkpoint.py:
bitsandbytes' own quantize_4bit, double quantization, packed state as transformers saves
it). Each TP rank then cuts its slice out of the on-disk blocks without requantizing
(quant::nf4_load_slice; the tiny model's slices start mid-block: down_proj's columns at
88, o_proj's at 32), so the quantized base no longer depends on tp:
- (2,1) gives the losses and adapter of (1,1) within relative 1e-5, like a dense base;
- (2,1) on the NF4 checkpoint gives those of (2,1) on its dense f32 twin (the same values)
  within 1e-5: the slices hold exactly the whole tensor's values.
Skipped (exit 77) where torch or bitsandbytes is not installed.

Usage: test_grid_quant.py MPIEXEC [--bnb]   (ANVIL_BIN, ANVIL_SOURCE_DIR from the environment)"""
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
BNB = "--bnb" in sys.argv[2:]
CONFIG = os.path.join(SRC, "configs", "demo-cpu.yaml")
STEPS = 12
TOLERANCE = 1e-5
ACROSS_TP = 0.03


def train(model, out, tp, dp, quant="nf4"):
    sets = [f"output_dir={out}", f"model.path={model}", f"train.steps={STEPS}", "train.warmup_steps=3",
            "train.eval_every=0", "checkpoint.every=0", f"parallel.tp={tp}", "log.every=4", f"model.quant={quant}"]
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


def init_model(model):
    p = subprocess.run([ANVIL, "init-model", "--preset", "tiny", "--out", model, "--seed", "1", "--init-std", "0.1"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def check_same(name, got, want, tolerance):
    (loss, adapter), (loss_ref, adapter_ref) = got, want
    assert len(loss) == STEPS and rel(loss, loss_ref) <= tolerance, (name, loss, loss_ref)
    worst = max(rel(adapter[k], adapter_ref[k]) for k in adapter_ref)
    assert worst <= tolerance, (name, worst)
    print(f"{name}: losses {rel(loss, loss_ref):.1e}, adapter {worst:.1e} (tolerance {tolerance:.0e})")


def main_bnb():
    try:
        import bitsandbytes  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        print(f"skipped: {e} (the NF4 checkpoint is written by bitsandbytes)")
        return 77
    sys.path.insert(0, os.path.join(SRC, "scripts", "fixtures"))
    from quant_checkpoint import write_quantized_checkpoint
    with tempfile.TemporaryDirectory(prefix="anvil_mpi_grid_quant_bnb_") as tmp:
        model, bnb, dense = (os.path.join(tmp, d) for d in ("model", "bnb", "dense"))
        init_model(model)
        write_quantized_checkpoint("nf4", model, bnb, dense)
        tp1, tp2 = train(bnb, os.path.join(tmp, "bnb_1"), 1, 1), train(bnb, os.path.join(tmp, "bnb_2"), 2, 1)
        dense2 = train(dense, os.path.join(tmp, "dense_2"), 2, 1, quant="none")
        check_same("bnb NF4 checkpoint, tp 2 vs tp 1", tp2, tp1, TOLERANCE)
        check_same("bnb NF4 checkpoint at tp 2 vs its dense f32 values at tp 2", tp2, dense2, TOLERANCE)
    return 0


def main():
    if BNB:
        return main_bnb()
    with tempfile.TemporaryDirectory(prefix="anvil_mpi_grid_quant_") as tmp:
        model = os.path.join(tmp, "model")
        init_model(model)
        runs = {g: train(model, os.path.join(tmp, f"run_{g[0]}_{g[1]}"), *g) for g in [(1, 1), (1, 2), (2, 1), (2, 2)]}
        for same, ref in [((1, 2), (1, 1)), ((2, 2), (2, 1))]:
            check_same(f"tp {same[0]} dp {same[1]} = tp {ref[0]} dp {ref[1]}", runs[same], runs[ref], TOLERANCE)
        a, b = runs[(2, 1)][0][-4:].mean(), runs[(1, 1)][0][-4:].mean()
        assert abs(a - b) / b <= ACROSS_TP, (a, b)
        assert not np.array_equal(runs[(2, 1)][0], runs[(1, 1)][0]), "tp 2 should quantize per slice"
        print(f"tp 2 vs tp 1 (each rank quantizes its slice): last-4 mean loss {a:.4f} vs {b:.4f} "
              f"({abs(a - b) / b:.2%}, tolerance {ACROSS_TP:.0%})")


if __name__ == "__main__":
    sys.exit(main())
