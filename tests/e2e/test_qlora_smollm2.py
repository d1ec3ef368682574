"""QLoRA on the SmolLM2-135M shape: `anvil train` with model.quant nf4 and fp8 against the
unquantized run of the same random-init model, 50 steps on the demo data.

The model is `anvil init-model --preset smollm2-135m` (hidden 576, intermediate 1536,
9 heads / 3 KV heads of 64, vocab 49152, tied embeddings) with random weights (std 0.02,
the preset's initializer range), trained on 2 demo sequences of 64 tokens a step; as a
test it keeps --layers 2 of its 30 layers (the 49152-row LM head is most of a step), so
the three runs take about 3 minutes on 2 shared cores. `--layers 30` is the whole shape
(a benchmark run: tests/bench/RESULTS.md, "QLoRA loss on the SmolLM2-135M shape").

Asserted: every run's loss falls (last-10 mean under 80% of the first 5), the quantized
runs are not the unquantized one, and the mean loss of the last 10 steps is within
relative 2% (nf4) / 1% (fp8) of the unquantized run's, at any depth (measured: 0.33% / 0.04%
at 2 layers, 0.97% / 0.57% at all 30; e2e.qlora allows 3% / 1% on the tiny model).

Usage: test_qlora_smollm2.py [--layers N] [--steps N] [--json PATH]
       (ANVIL_BIN, ANVIL_SOURCE_DIR from the environment)"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ANVIL = os.environ["ANVIL_BIN"]
SRC = os.environ["ANVIL_SOURCE_DIR"]
CONFIG = os.path.join(SRC, "configs", "demo-cpu.yaml")
TOLERANCE = {"nf4": 0.02, "fp8": 0.01}  # relative, on the mean loss of the last 10 steps


def run(args):
    p = subprocess.run(args, capture_output=True, text=True, cwd=SRC)
    assert p.returncode == 0, f"{' '.join(args)}: exit {p.returncode}\n{p.stdout}{p.stderr}"
    return p.stdout + p.stderr


def make_model(tmp, layers):
    shape = os.path.join(tmp, "shape")
    run([ANVIL, "init-model", "--preset", "smollm2-135m", "--out", shape, "--config-only"])
    cfg = json.load(open(os.path.join(shape, "config.json")))
    cfg["num_hidden_layers"] = layers
    spec = os.path.join(tmp, "spec.json")
    json.dump(cfg, open(spec, "w"))
    model = os.path.join(tmp, "model")
    run([ANVIL, "init-model", "--spec", spec, "--out", model, "--seed", "1", "--init-std", "0.02"])
    return model


def train(model, out, quant, steps):
    sets = [f"output_dir={out}", f"model.path={model}", f"train.steps={steps}", "train.warmup_steps=5",
            "train.global_batch=2", "train.micro_batch=2", "train.eval_every=0", "checkpoint.every=0",
            "log.every=100", f"model.quant={quant}"]
    args = [ANVIL, "train", CONFIG]
    for s in sets:
        args += ["--set", s]
    start = time.time()
    log = run(args)
    seconds = time.time() - start
    if quant != "none":
        assert f"linear weights {quant}" in log, log
    with open(os.path.join(out, "metrics.jsonl")) as f:
        losses = np.array([r["loss"] for r in map(json.loads, f) if "loss" in r])
    assert len(losses) == steps and np.all(np.isfinite(losses)), losses
    assert losses[-10:].mean() < 0.8 * losses[:5].mean(), (quant, losses)
    return losses, seconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--json", help="write the losses and times here")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="anvil_e2e_qlora_smollm2_") as tmp:
        model = make_model(tmp, a.layers)
        runs = {q: train(model, os.path.join(tmp, q), q, a.steps) for q in ("none", "nf4", "fp8")}
    base = runs["none"][0]
    report = {"layers": a.layers, "steps": a.steps}
    print(f"smollm2-135m shape, {a.layers} layers, {a.steps} steps: unquantized last-10 mean loss "
          f"{base[-10:].mean():.4f} (first {base[0]:.4f}), {runs['none'][1]:.0f} s")
    for q in ("nf4", "fp8"):
        got, seconds = runs[q]
        rel = abs(got[-10:].mean() - base[-10:].mean()) / base[-10:].mean()
        print(f"{q}: last-10 mean loss {got[-10:].mean():.4f} ({rel:.3%} from unquantized; tolerance "
              f"{TOLERANCE[q]:.1%}), largest per-step gap {np.max(np.abs(got - base) / base):.3%}, {seconds:.0f} s")
        report[q] = {"last10": float(got[-10:].mean()), "rel": float(rel), "seconds": seconds}
        assert not np.array_equal(got, base), f"{q}: the quantized run is the unquantized one"
        assert rel <= TOLERANCE[q], (q, rel)
    report["none"] = {"last10": float(base[-10:].mean()), "seconds": runs["none"][1]}
    if a.json:
        json.dump(report, open(a.json, "w"), indent=1)
    print("qlora_smollm2: ok")


if __name__ == "__main__":
    sys.exit(main())
