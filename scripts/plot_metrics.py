#!/usr/bin/env python3
"""Plots a run's metrics.jsonl into one PNG: loss and eval loss, learning rate, throughput
(tokens/s, and MFU when recorded), and memory (the largest peak RSS of any rank), each
against the optimizer step. Skipped steps and loss spikes are marked.

    scripts/plot_metrics.py RUN_DIR [--out FILE]     (default RUN_DIR/metrics.png)

Needs matplotlib (scripts/setup.sh installs it into .venv); no display is used.
"""
import argparse
import json
import os
import sys


def read(path):
    steps, evals = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not JSON: {e}")
            if "loss" in row:
                steps.append(row)
            elif "eval_loss" in row:
                evals.append(row)
    return steps, evals


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--out", help="PNG to write (default RUN_DIR/metrics.png)")
    args = parser.parse_args()
    path = os.path.join(args.run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        sys.exit(f"{path}: no such file (is {args.run_dir} an anvil run directory?)")
    steps, evals = read(path)
    if not steps:
        sys.exit(f"{path}: no training steps recorded yet")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["step"] for r in steps]
    fig, ax = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    loss = ax[0][0]
    loss.plot(x, [r["loss"] for r in steps], lw=1, label="train loss")
    if evals:
        loss.plot([e["step"] for e in evals], [e["eval_loss"] for e in evals], "o-", ms=4, label="eval loss")
    marks = [(r["step"], r["loss"]) for r in steps if r.get("skipped") or r.get("spike")]
    if marks:
        loss.plot(*zip(*marks), "rx", label="spike / skipped")
    loss.set_ylabel("loss")
    loss.legend()

    lr = ax[0][1]
    lr.plot(x, [r["lr"] for r in steps], lw=1)
    lr.set_ylabel("learning rate")

    speed = ax[1][0]
    speed.plot(x, [r["tokens_per_s"] for r in steps], lw=1, label="tokens/s")
    speed.set_ylabel("tokens/s")
    if any("mfu" in r for r in steps):
        mfu = speed.twinx()
        mfu.plot([r["step"] for r in steps if "mfu" in r], [100 * r["mfu"] for r in steps if "mfu" in r],
                 color="tab:green", lw=1)
        mfu.set_ylabel("MFU %", color="tab:green")

    mem = ax[1][1]
    if any("peak_rss_mib" in r for r in steps):
        mem.plot([r["step"] for r in steps if "peak_rss_mib" in r],
                 [r["peak_rss_mib"] for r in steps if "peak_rss_mib" in r], lw=1)
    mem.set_ylabel("peak RSS, largest rank (MiB)")
    for a in ax[1]:
        a.set_xlabel("step")
    fig.suptitle(os.path.abspath(args.run_dir))
    fig.tight_layout()
    out = args.out or os.path.join(args.run_dir, "metrics.png")
    fig.savefig(out, dpi=100)
    print(out)


if __name__ == "__main__":
    main()
