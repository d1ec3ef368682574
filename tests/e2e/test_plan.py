"""The planner against measured memory: `anvil validate --world N --gpu cpu` predicts each
rank's peak memory; `anvil train` on CPU ranks (a 66M-parameter Llama, SmolLM2-like with 8
heads so that tp 2 splits it, random f32 weights, seq 256, 2 steps) measures it. Every
rank's peak RSS must be within 10% of the plan: on one rank (f32 weights mapped in place),
and on two ranks with tp 2 and activation checkpointing (bf16 weights converted to f32);
and both again with model.quant nf4 (QLoRA: each rank's projections quantized at load). Weights are about half of the total, activations most of the rest.

Peak RSS is the rank's ru_maxrss: each rank runs under a small wrapper that waits for it and
writes RUSAGE_CHILDREN (so under mpirun each rank is measured on its own). The plan's
fixed runtime part (libraries, MPI, OpenBLAS buffers) is a measured constant of plan.cpp.

Usage: test_plan.py MPIEXEC   (ANVIL_BIN, ANVIL_SOURCE_DIR from the environment)"""
import json
import os
import re
import subprocess
import sys
import tempfile

ANVIL = os.environ["ANVIL_BIN"]
SRC = os.environ["ANVIL_SOURCE_DIR"]
MPIEXEC = sys.argv[1] if len(sys.argv) > 1 else "mpirun"
TOLERANCE = 0.10

# Runs argv, then writes its peak RSS (bytes) to DIR/rss.<MPI rank>.
WRAPPER = """
import os, resource, subprocess, sys
rc = subprocess.run(sys.argv[2:]).returncode
rank = os.environ.get("OMPI_COMM_WORLD_RANK", "0")
with open(os.path.join(sys.argv[1], "rss." + rank), "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024))
sys.exit(rc)
"""

CONFIG = """\
output_dir: {out}
model:
  path: {model}
  dtype: f32
  quant: {quant}
lora:
  rank: 16
  alpha: 32
  targets: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]
data:
  train: {src}/data/demo/train.jsonl
  seq_len: 256
train:
  steps: 2
  global_batch: 1
  micro_batch: 1
  warmup_steps: 0
  eval_every: 0
  activation_checkpointing: {ckpt}
parallel:
  tp: {tp}
checkpoint:
  every: 0
log:
  every: 1
"""


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert p.returncode == 0, f"{' '.join(cmd)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout + p.stderr


def gib(text):
    value, unit = text.split()
    return float(value) * (2**30 if unit == "GiB" else 2**20)


def plan_totals(config, world):
    """(rank 0, other ranks) total bytes and the predicted step seconds from anvil validate."""
    out = run([ANVIL, "validate", config, "--world", str(world), "--gpu", "cpu"])
    m = re.search(r"^  total\s+([\d.]+ [GM]iB)(?:\s+([\d.]+ [GM]iB))?\s*$", out, re.M)
    assert m, out
    step = re.search(r"^  step\s+([\d.]+) (s|ms)", out, re.M)
    seconds = float(step.group(1)) * (1e-3 if step.group(2) == "ms" else 1.0)
    return gib(m.group(1)), gib(m.group(2)) if m.group(2) else None, seconds, out


def measured(tmp, config, out, world):
    """Each rank's peak RSS, and the seconds of step 2 (metrics.jsonl)."""
    rss_dir = tempfile.mkdtemp(dir=tmp, prefix="rss_")
    wrapper = os.path.join(tmp, "rss_wrapper.py")
    with open(wrapper, "w") as f:
        f.write(WRAPPER)
    cmd = [sys.executable, wrapper, rss_dir, ANVIL, "train", config]
    if world > 1:
        cmd = [MPIEXEC, "--oversubscribe", "-np", str(world)] + cmd
    run(cmd, cwd=SRC)
    rss = [int(open(os.path.join(rss_dir, f"rss.{r}")).read()) for r in range(world)]
    with open(os.path.join(out, "metrics.jsonl")) as f:
        last = [r for r in map(json.loads, f) if "tokens_per_s" in r][-1]
    return rss, 256 / last["tokens_per_s"]


def check(name, predicted, got):
    err = (predicted - got) / got
    print(f"{name}: planned {predicted / 2**20:.0f} MiB, measured peak RSS {got / 2**20:.0f} MiB ({err:+.1%})")
    return abs(err) <= TOLERANCE


def main():
    with tempfile.TemporaryDirectory(prefix="anvil_e2e_plan_") as tmp:
        check_plans(tmp)
    print("ok")


def check_plans(tmp):
    model = os.path.join(tmp, "model")
    shape = os.path.join(tmp, "shape")
    run([ANVIL, "init-model", "--preset", "smollm2-135m", "--config-only", "--out", shape])
    with open(os.path.join(shape, "config.json")) as f:
        spec = json.load(f)
    spec.update(hidden_size=512, intermediate_size=1536, num_hidden_layers=16, num_attention_heads=8,
                num_key_value_heads=4, head_dim=64, vocab_size=32000)
    with open(os.path.join(shape, "config.json"), "w") as f:
        json.dump(spec, f)
    # f32 weights are used in place (views of the mapped file); bf16 ones are converted to f32
    # copies. With tp > 1 and an f32 file the ranks keep more of the mapped file resident
    # than their slices (tests/bench/RESULTS.md, "Planner"), so tp 2 runs on the bf16 file.
    for dtype in ("f32", "bf16"):
        run([ANVIL, "init-model", "--spec", os.path.join(shape, "config.json"), "--out", f"{model}_{dtype}",
             "--dtype", dtype, "--seed", "1"])
    ok = True
    # QLoRA: the base's projections quantized at load (each rank its slice), the rest f32.
    cases = ((1, False, "f32", "none"), (2, True, "bf16", "none"), (1, False, "bf16", "nf4"), (2, True, "bf16", "nf4"))
    for tp, ckpt, dtype, quant in cases:
        name = f"tp {tp}, {dtype} file{', nf4' if quant != 'none' else ''}{', activation checkpointing' if ckpt else ''}"
        out = os.path.join(tmp, f"run_tp{tp}_{'ckpt' if ckpt else 'full'}_{quant}")
        config = out + ".yaml"
        with open(config, "w") as f:
            f.write(CONFIG.format(out=out, model=f"{model}_{dtype}", src=SRC, tp=tp, ckpt="true" if ckpt else "false",
                                  quant=quant))
        rank0, others, step_s, _ = plan_totals(config, tp)
        rss, measured_s = measured(tmp, config, out, tp)
        ok &= check(f"{name}, rank 0", rank0, rss[0])
        for r in range(1, tp):
            ok &= check(f"{name}, rank {r}", others, rss[r])
        print(f"{name}: step time predicted {step_s:.2f} s, measured (step 2) {measured_s:.2f} s")
    assert ok, f"a plan is off by more than {TOLERANCE:.0%}"


if __name__ == "__main__":
    main()
