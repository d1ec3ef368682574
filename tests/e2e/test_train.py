"""`anvil train` end to end on the demo data with the tiny model: metrics.jsonl as specified,
the eval loss falls, the adapter is written in PEFT's layout and `anvil eval` / `anvil
generate` read it; a non-finite loss stops the run naming the step, or is skipped."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file, save_file

ANVIL = os.environ["ANVIL_BIN"]
SRC = os.environ["ANVIL_SOURCE_DIR"]
CONFIG = os.path.join(SRC, "configs", "demo-cpu.yaml")


def anvil(*args, expect=0):
    p = subprocess.run([ANVIL, *args], capture_output=True, text=True, cwd=SRC)
    assert p.returncode == expect, f"anvil {' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout + p.stderr


def train(model, out, *sets, expect=0):
    overrides = [f"output_dir={out}", f"model.path={model}", "train.steps=24", "train.eval_every=12",
                 "train.warmup_steps=4", "data.seq_len=64", "log.every=6", *sets]
    args = ["train", CONFIG]
    for o in overrides:
        args += ["--set", o]
    return anvil(*args, expect=expect)


def read_metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def main():
    tmp = tempfile.mkdtemp(prefix="anvil_e2e_train_")
    model = os.path.join(tmp, "model")
    anvil("init-model", "--preset", "tiny", "--out", model, "--seed", "1")

    out = os.path.join(tmp, "run")
    log = train(model, out)
    rows = read_metrics(out)
    steps = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 25)), rows
    for r in steps:
        for key in ("step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "elapsed_s"):
            assert key in r and r[key] is not None, (key, r)
        assert r["tokens"] > 0 and r["tokens_per_s"] > 0 and np.isfinite(r["loss"])
    assert [e["step"] for e in evals] == [0, 12, 24], evals
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"], evals
    # warm-up then cosine decay: rises for 4 steps, then falls
    lrs = [r["lr"] for r in steps]
    assert lrs[0] < lrs[3] and abs(lrs[3] - 1e-3) < 1e-12 and lrs[-1] < lrs[4], lrs
    assert "eval loss" in log and "adapter written" in log, log

    # The adapter: PEFT names and shapes, read back by eval and generate.
    adapter = os.path.join(out, "adapter")
    cfg = json.load(open(os.path.join(adapter, "adapter_config.json")))
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 8 and cfg["lora_alpha"] == 16, cfg
    tensors = load_file(os.path.join(adapter, "adapter_model.safetensors"))
    assert len(tensors) == 2 * 7 * 2, sorted(tensors)
    a = tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    b = tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    assert a.shape == (8, 64) and b.shape == (64, 8) and np.abs(b).max() > 0
    # The base model alone: its embedding rows past the tokenizer (320 > 259) are never chosen.
    base = json.loads(anvil("eval", model, "--data", os.path.join(SRC, "data/demo/eval.jsonl"),
                            "--max-new-tokens", "8", "--json").strip())
    assert base["total"] == 200 and base["exact_match"] == 0, base
    anvil("generate", model, "--prompt", "abcd=", "--max-new-tokens", "20")
    res = json.loads(anvil("eval", model, "--adapter", adapter, "--data",
                           os.path.join(SRC, "data/demo/eval.jsonl"), "--max-new-tokens", "8", "--json").strip())
    assert res["total"] == 200 and 0 <= res["exact_match"] <= 1, res
    gen = anvil("generate", model, "--adapter", adapter, "--prompt", "abcd=", "--max-new-tokens", "6")
    assert len(gen.strip("\n")) <= 6 * 4, gen

    # Same seed, same run: the losses repeat bit for bit.
    out2 = os.path.join(tmp, "run2")
    train(model, out2)
    assert [r.get("loss") for r in read_metrics(out2)] == [r.get("loss") for r in rows]

    # A NaN weight: the run stops at step 1 naming it, or skips every step when asked.
    bad = os.path.join(tmp, "bad")
    anvil("init-model", "--preset", "tiny", "--out", bad, "--seed", "1")
    path = os.path.join(bad, "model.safetensors")
    w = load_file(path)
    w["model.norm.weight"][0] = np.nan
    save_file(w, path, metadata={"format": "pt"})
    msg = train(bad, os.path.join(tmp, "nan"), expect=2)
    assert "step 1" in msg and "not finite" in msg, msg
    train(bad, os.path.join(tmp, "nan_skip"), "train.skip_nonfinite=true", "train.steps=3", "train.warmup_steps=0",
          "train.eval_every=0")
    skipped = read_metrics(os.path.join(tmp, "nan_skip"))
    assert all(r["skipped"] for r in skipped) and skipped[-1]["skipped_total"] == 3, skipped
    print("e2e.train: OK")


if __name__ == "__main__":
    main()
