#!/usr/bin/env python3
"""Pairs anvil's GPU benchmark lines with PyTorch's and writes the issue-8 results file.

Input: JSON lines, one measurement each, from `bench_gpu_kernels` ("side": "ours") and
`scripts/bench/gpu_reference.py` ("side": "reference"), plus the train-step and memory
lines this script makes itself (`train-line`, `memory-line`). Two lines pair when their
"benchmark" and "shape" are equal. Output: a JSON list of

    {"benchmark", "device", "date", "command", "ours", "reference", "ratio", "unit", "config"}

ratio = ours / reference for throughputs (TFLOP/s, GB/s, tokens/s, MFU), which for a timed
kernel is reference_ms / ours_ms (both sides count the same FLOPs); for memory it is
ours_MiB / reference_MiB (below 1: anvil holds less). Standard library only; nothing here
measures anything.

    gpu_pair.py pair --lines a.jsonl b.jsonl --out results/DATE-DEVICE-NAME.json --command "..."
    gpu_pair.py train-line --metrics run/metrics.jsonl --model-config model/config.json --seq 4096 --batch 1
    gpu_pair.py memory-line --side ours --smi-log smi.txt --shape '{"model": "llama3-8b", ...}'
"""
import argparse
import json
import statistics
import sys

PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# ---- FLOP counts ---------------------------------------------------------------------------
def attention_fwd_flops(batch, seq, heads, head_dim, causal, docs=None):
    """FlashAttention's count: 4 s^2 d h b (QK^T and PV), halved when causal; packed
    documents count the sum of their own s^2. The backward is 2.5x this."""
    sq = sum(d * d for d in docs) if docs else seq * seq
    return 4.0 * sq * head_dim * heads * batch * (0.5 if causal else 1.0)


def lora_layer_flops(tokens, n_in, n_out, rank, backward=True):
    """Frozen y = x W^T (2 n in out), its input gradient (the same again), and the adapter:
    forward 2 n r (in + out), backward 4 n r (in + out) (dB, dy B, dA, the dx term)."""
    base = 2.0 * tokens * n_in * n_out
    lora = 2.0 * tokens * rank * (n_in + n_out)
    return 2 * base + 3 * lora if backward else base + lora


def proj_shapes(cfg):
    """(in, out) of the seven projections of one Llama block, from an HF config.json dict."""
    c, f = cfg["hidden_size"], cfg["intermediate_size"]
    heads = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads", heads)
    d = cfg.get("head_dim") or c // heads
    return {"q_proj": (c, heads * d), "k_proj": (c, kv * d), "v_proj": (c, kv * d), "o_proj": (heads * d, c),
            "gate_proj": (c, f), "up_proj": (c, f), "down_proj": (f, c)}


def train_flops_per_token(cfg, seq, rank, targets=PROJ):
    """Model FLOPs of one LoRA training token (no recompute credit: MFU counts the model's
    work, not the checkpointing's): 4 N for the frozen linear layers and the LM head (forward
    and input gradient, no weight gradient), attention 12 L T H D (forward 4 L T H D, backward
    twice that; the full T x T as PaLM and src/train/flops.h count it), LoRA 6 r (in + out)
    per adapted layer."""
    layers = cfg["num_hidden_layers"]
    shapes = proj_shapes(cfg)
    n_linear = layers * sum(i * o for i, o in shapes.values()) + cfg["hidden_size"] * cfg["vocab_size"]
    heads = cfg["num_attention_heads"]
    d = cfg.get("head_dim") or cfg["hidden_size"] // heads
    parts = {
        "linear": 4.0 * n_linear,
        "attention": 12.0 * layers * seq * heads * d,
        "lora": 6.0 * layers * rank * sum(i + o for p, (i, o) in shapes.items() if p in targets),
    }
    parts["total"] = sum(parts.values())
    parts["linear_parameters"] = n_linear
    return parts


# ---- reading lines -----------------------------------------------------------------------
def read_lines(paths):
    """Every JSON object line of the files; other lines (logs, tracebacks) are skipped."""
    out = []
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(obj, dict) and "side" in obj and "benchmark" in obj:
                    out.append(obj)
    return out


def key(line):
    return line["benchmark"], json.dumps(line.get("shape", {}), sort_keys=True)


def display_name(benchmark, shape):
    """A readable unique name: the benchmark and its shape, e.g. attention_fwd_d128_s4096_causal."""
    s = shape
    if benchmark.startswith("attention"):
        name = f"{benchmark}_d{s['head_dim']}_s{s['seq']}_b{s['batch']}_{'causal' if s['causal'] else 'full'}"
        return name + ("_varlen" if s.get("docs") else "")
    if benchmark.startswith("lora_layer"):
        return f"{benchmark}_{s['in']}x{s['out']}_r{s['rank']}_n{s['tokens']}"
    if benchmark.startswith("ceiling_gemm"):
        return f"{benchmark}_{s['m']}x{s['n']}x{s['k']}"
    if benchmark.startswith("ceiling_copy"):
        return f"{benchmark}_{s['bytes'] >> 20}MiB"
    if benchmark.startswith("train_step"):
        return f"{benchmark}_{s['model']}_s{s['seq']}_b{s['batch']}"
    return benchmark


def throughput(line):
    """(value, unit) of a timed line: TFLOP/s when it counts FLOPs, else GB/s."""
    if "flops" in line:
        return line["flops"] / (line["median_ms"] * 1e-3) / 1e12, "TFLOP/s"
    return line["bytes"] / (line["median_ms"] * 1e-3) / 1e9, "GB/s"


def side_config(line):
    keep = ("median_ms", "min_ms", "max_ms", "reps", "steps", "peak_mib", "tokens_per_s", "flops_per_token")
    cfg = {k: line[k] for k in keep if k in line}
    cfg.update(line.get("config", {}))
    return cfg


def pair(lines, date, command, device=None):
    """The issue's result records for every benchmark either side measured (an unpaired one
    gets reference/ratio null), plus derived rows: attention fwd+bwd (sum of the two
    medians), train-step MFU over the measured GEMM ceiling."""
    ours = {key(l): l for l in lines if l["side"] == "ours"}
    refs = {key(l): l for l in lines if l["side"] == "reference"}
    device = device or next((l["device"] for l in lines if l.get("device")), "unknown")
    ceiling = max((throughput(l)[0] for l in ours.values() if l["benchmark"] == "ceiling_gemm_bf16"), default=None)
    records = []

    def record(benchmark, shape, o, r, unit, ratio, extra=None):
        config = {"shape": shape, "ours": extra[0] if extra else None, "reference": extra[1] if extra else None}
        records.append({"benchmark": display_name(benchmark, shape), "device": device, "date": date,
                        "command": command, "ours": o, "reference": r, "ratio": ratio, "unit": unit,
                        "config": config})

    for k in sorted(set(ours) | set(refs)):
        o, r = ours.get(k), refs.get(k)
        line = o or r
        bench, shape = line["benchmark"], line.get("shape", {})
        cfgs = (side_config(o) if o else None, side_config(r) if r else None)
        if "median_ms" in line and ("flops" in line or "bytes" in line) and not bench.startswith("train_step"):
            ov, unit = throughput(o) if o else (None, throughput(r)[1])
            rv = throughput(r)[0] if r else None
            ratio = r["median_ms"] / o["median_ms"] if o and r else None
            record(bench, shape, ov, rv, unit, ratio, cfgs)
        elif bench == "train_step":
            ov = o["tokens_per_s"] if o else None
            rv = r["tokens_per_s"] if r else None
            record(bench, shape, ov, rv, "tokens/s", ov / rv if o and r else None, cfgs)
            if ceiling:
                om = o["tokens_per_s"] * o["flops_per_token"] / (ceiling * 1e12) if o else None
                rm = r["tokens_per_s"] * r["flops_per_token"] / (ceiling * 1e12) if r else None
                note = {"ceiling_tflops": ceiling, "ceiling": "best ceiling_gemm_bf16 of anvil's cuBLASLt, same run",
                        "flops": "4 N + 12 L T H D + 6 r sum(in+out) per token (gpu_pair.train_flops_per_token)"}
                record("train_step_mfu", shape, om, rm, "fraction of measured GEMM ceiling",
                       om / rm if o and r else None, (note, note))
        elif bench.startswith("train_step_memory"):
            ov = o["peak_mib"] if o else None
            rv = r["peak_mib"] if r else None
            record(bench, shape, ov, rv, "MiB (ratio ours/reference: below 1 = anvil holds less)",
                   ov / rv if o and r else None, cfgs)

    # Forward + backward of attention: the sum of the two measured medians (derived, not a
    # third measurement), when both sides have both.
    for (bench, shape_key), o in sorted(ours.items()):
        if bench != "attention_fwd":
            continue
        ob, rf, rb = ours.get(("attention_bwd", shape_key)), refs.get(("attention_fwd", shape_key)), \
            refs.get(("attention_bwd", shape_key))
        if not (ob and rf and rb):
            continue
        flops = o["flops"] + ob["flops"]
        oms, rms = o["median_ms"] + ob["median_ms"], rf["median_ms"] + rb["median_ms"]
        note = "derived: the sum of the attention_fwd and attention_bwd medians"
        record("attention_fwd_bwd", o["shape"], flops / (oms * 1e-3) / 1e12, flops / (rms * 1e-3) / 1e12, "TFLOP/s",
               rms / oms, ({"median_ms": oms, "derived": note}, {"median_ms": rms, "derived": note}))
    records.sort(key=lambda r: r["benchmark"])
    return records


def table(records):
    rows = [("benchmark", "ours", "reference", "ratio", "unit")]
    fmt = lambda v: "-" if v is None else (f"{v:.3f}" if abs(v) < 10 else f"{v:,.1f}")
    for r in records:
        rows.append((r["benchmark"], fmt(r["ours"]), fmt(r["reference"]), fmt(r["ratio"]), r["unit"]))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


# ---- lines this script makes ---------------------------------------------------------------
def train_line_from_metrics(metrics_lines, cfg, seq, batch, rank, skip, model_name, checkpointing):
    """anvil's train-step line from metrics.jsonl: the median tokens/s of the steps after the
    first `skip` (warm-up), MFU's numerator from the model's config.json."""
    steps = [m for m in metrics_lines if "tokens_per_s" in m and "step" in m]
    timed = [m for m in steps if m["step"] > skip]
    if not timed:
        raise ValueError(f"metrics.jsonl has {len(steps)} steps, none after the {skip} warm-up step(s)")
    tps = statistics.median(m["tokens_per_s"] for m in timed)
    return {"side": "ours", "benchmark": "train_step",
            "shape": {"model": model_name, "seq": seq, "batch": batch, "rank": rank, "checkpointing": checkpointing},
            "tokens_per_s": tps, "median_ms": 1e3 * batch * seq / tps, "steps": len(timed),
            "flops_per_token": train_flops_per_token(cfg, seq, rank)["total"],
            "config": {"source": "metrics.jsonl tokens_per_s, median of the steps after the warm-up",
                       "peak_rss_mib (host)": max(m.get("peak_rss_mib", 0) for m in timed),
                       "peak_gpu_memory": "not logged by anvil (metrics.jsonl has host RSS only); "
                                          "see train_step_memory_smi"}}


def peak_from_smi(text):
    """The largest memory.used (MiB) of `nvidia-smi --query-gpu=memory.used
    --format=csv,noheader,nounits -lms N` output (one number per line)."""
    values = [float(t) for t in text.split() if t.replace(".", "", 1).isdigit()]
    if not values:
        raise ValueError("no nvidia-smi samples")
    return max(values)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pair", help="pair lines, write the results JSON, print a table")
    p.add_argument("--lines", nargs="+", required=True)
    p.add_argument("--out", required=True, help="results JSON path")
    p.add_argument("--date", required=True)
    p.add_argument("--command", required=True, help="the command of the run, recorded in every record")
    p.add_argument("--device", help="default: the device of the first line that names one")
    t = sub.add_parser("train-line", help="anvil's train-step line from metrics.jsonl")
    t.add_argument("--metrics", required=True)
    t.add_argument("--model-config", required=True, help="the model's config.json")
    t.add_argument("--model-name", default="llama3-8b")
    t.add_argument("--seq", type=int, required=True)
    t.add_argument("--batch", type=int, required=True)
    t.add_argument("--rank", type=int, default=16)
    t.add_argument("--skip", type=int, default=1, help="warm-up steps left out")
    t.add_argument("--checkpointing", action="store_true")
    m = sub.add_parser("memory-line", help="a peak-memory line from an nvidia-smi sample log")
    m.add_argument("--side", choices=["ours", "reference"], required=True)
    m.add_argument("--smi-log", required=True)
    m.add_argument("--shape", required=True, help="the train-step shape, JSON")
    args = ap.parse_args()

    if args.cmd == "pair":
        records = pair(read_lines(args.lines), args.date, args.command, args.device)
        with open(args.out, "w") as f:
            json.dump(records, f, indent=1)
            f.write("\n")
        print(table(records))
        print(f"{len(records)} records written to {args.out}")
    elif args.cmd == "train-line":
        with open(args.metrics) as f:
            metrics = [json.loads(l) for l in f if l.strip()]
        with open(args.model_config) as f:
            cfg = json.load(f)
        print(json.dumps(train_line_from_metrics(metrics, cfg, args.seq, args.batch, args.rank, args.skip,
                                                 args.model_name, args.checkpointing)))
    else:
        with open(args.smi_log) as f:
            peak = peak_from_smi(f.read())
        print(json.dumps({"side": args.side, "benchmark": "train_step_memory_smi", "shape": json.loads(args.shape),
                          "peak_mib": peak,
                          "config": {"source": "nvidia-smi memory.used, sampled every 200 ms during the run: the "
                                               "whole device, CUDA context and allocator caches included"}}))


if __name__ == "__main__":
    sys.exit(main())
