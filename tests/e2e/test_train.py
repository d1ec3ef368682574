"""`anvil train` end to end on the demo data with the tiny model: metrics.jsonl as specified,
the eval loss falls, the adapter is written in PEFT's layout and `anvil eval` / `anvil
generate` read it; a non-finite loss stops the run naming the step, or is skipped; the
loss spike detector flags (and skips) a jump of the loss; scripts/plot_metrics.py plots
the run."""
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
    with tempfile.TemporaryDirectory(prefix="anvil_e2e_train_") as tmp:
        model = os.path.join(tmp, "model")
        anvil("init-model", "--preset", "tiny", "--out", model, "--seed", "1")

        out = os.path.join(tmp, "run")
        log = train(model, out, "log.peak_tflops=0.5")
        rows = read_metrics(out)
        steps = [r for r in rows if "loss" in r]
        evals = [r for r in rows if "eval_loss" in r]
        assert [r["step"] for r in steps] == list(range(1, 25)), rows
        for r in steps:
            for key in ("step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "elapsed_s"):
                assert key in r and r[key] is not None, (key, r)
            assert r["tokens"] > 0 and r["tokens_per_s"] > 0 and np.isfinite(r["loss"])
            # MFU against the configured peak, the largest peak RSS, the time shares.
            assert 0 < r["mfu"] < 1 and 5 < r["peak_rss_mib"] < 4096, r
            assert 0 <= r["comm_share"] <= 1 and 0 <= r["data_share"] < 1, r
        end = [r for r in rows if r.get("end")]
        assert len(end) == 1 and end[0]["steps"] == 24 and len(end[0]["peak_rss_mib_per_rank"]) == 1, end
        assert end[0]["peak_rss_mib_per_rank"][0] >= steps[-1]["peak_rss_mib"], end
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
        # The base model alone: its embedding rows past the tokenizer (320 > 262) are never chosen.
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
        skipped = [r for r in read_metrics(os.path.join(tmp, "nan_skip")) if "loss" in r]
        assert all(r["skipped"] for r in skipped) and skipped[-1]["skipped_total"] == 3, skipped

        # A loss spike: 400 easy records, then hard ones, in file order. The jump is flagged and
        # its updates skipped, until it lasts: then it is the new level and training goes on.
        data = os.path.join(tmp, "spike.jsonl")
        with open(data, "w") as f:
            for i in range(400):
                f.write(json.dumps({"text": "ab" * 9}) + "\n")
            for i in range(200):
                f.write(json.dumps({"text": "".join("qwertyuiopzxcvbnm0123456789"[(i * 7 + k * 13) % 27] for k in range(18))}) + "\n")
        spike_run = os.path.join(tmp, "spike")
        log = train(model, spike_run, f"data.train={data}", "data.eval=null", "data.shuffle=false", "train.steps=30",
                    "train.eval_every=0", "train.lr=0.01", "train.warmup_steps=0", "train.loss_spike_factor=1.15",
                    "train.loss_spike_window=6", "train.skip_loss_spikes=true")
        rows = [r for r in read_metrics(spike_run) if "loss" in r]
        flagged = [r["step"] for r in rows if r.get("spike")]
        assert flagged and all(r["skipped"] for r in rows if r.get("spike")), rows
        assert rows[-1]["skipped_total"] == len(flagged) and len(flagged) <= 3, flagged
        first = flagged[0]
        window = [r["loss"] for r in rows[first - 7:first - 1]]
        assert rows[first - 1]["loss"] > 1.15 * sum(window) / len(window), rows
        assert "loss spike" in log and "new level" in log, log

        # The plot of a run.
        plot = subprocess.run([sys.executable, os.path.join(SRC, "scripts", "plot_metrics.py"), spike_run],
                              capture_output=True, text=True)
        assert plot.returncode == 0, plot.stderr
        with open(os.path.join(spike_run, "metrics.png"), "rb") as f:
            png = f.read()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20000, len(png)
        print("e2e.train: OK")


if __name__ == "__main__":
    main()
