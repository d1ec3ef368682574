"""`anvil train` on a GPU, end to end (label gpu; exit 77 = skipped without a GPU):

1. the demo recipe (configs/demo-cpu.yaml's data and schedule) on a head_dim-64 model with
   parallel.backend: cuda follows the CPU run's losses to bf16 tolerance and its eval loss
   falls as on the CPU;
2. tp = 2 with two ranks sharing the one GPU (parallel.comm: mpi, host-staged) gives the
   tp = 1 GPU run's losses;
3. a model whose head_dim the CUDA kernels do not take is refused with a clear message;
4. a small Qwen3-MoE with adapters on every expert at parallel.ep = 2 (two ranks sharing
   the GPU, rows sent by all-to-all through the host-staged comm) gives the ep = 1 GPU run's
   losses.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

ANVIL = os.environ["ANVIL_BIN"]
SRC = os.environ["ANVIL_SOURCE_DIR"]
MPIEXEC = os.environ.get("ANVIL_MPIEXEC", "mpirun")
CONFIG = os.path.join(SRC, "configs", "demo-cpu.yaml")

# The tiny preset's shape with head_dim 64 (hidden 256 / 4 heads), vocab of the demo tokenizer
# (also the model of scripts/gpu/run.sh's fine-tune).
with open(os.path.join(SRC, "tests", "gpu", "finetune_spec.json"), encoding="utf-8") as _f:
    SPEC = json.load(_f)


def gpu_present():
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


def run(args, expect=0):
    p = subprocess.run(args, capture_output=True, text=True, cwd=SRC)
    assert p.returncode == expect, f"{' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout + p.stderr


def train(model, out, *sets, ranks=1, expect=0):
    overrides = [f"output_dir={out}", f"model.path={model}", "model.dtype=bf16", "train.steps=30",
                 "train.eval_every=15", "train.warmup_steps=4", "data.seq_len=128", "log.every=10", *sets]
    args = [ANVIL, "train", CONFIG]
    for o in overrides:
        args += ["--set", o]
    if ranks > 1:
        args = [MPIEXEC, "--oversubscribe", "-np", str(ranks), *args]
    return run(args, expect)


def losses(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [r["loss"] for r in rows if "loss" in r], [r["eval_loss"] for r in rows if "eval_loss" in r]


def main():
    if not gpu_present():
        print("SKIP: no GPU (nvidia-smi -L failed)")
        return 77
    tmp = tempfile.mkdtemp(prefix="anvil_gpu_train_")
    spec = os.path.join(tmp, "config.json")
    with open(spec, "w") as f:
        json.dump(SPEC, f)
    model = os.path.join(tmp, "model")
    run([ANVIL, "init-model", "--spec", spec, "--out", model, "--seed", "1", "--init-std", "0.1", "--dtype", "bf16"])

    cpu, cuda, tp2 = (os.path.join(tmp, n) for n in ("cpu", "cuda", "tp2"))
    train(model, cpu, "parallel.backend=cpu")
    log = train(model, cuda, "parallel.backend=cuda")
    assert "backend: cuda" in log, log
    cpu_loss, cpu_eval = losses(cpu)
    gpu_loss, gpu_eval = losses(cuda)
    print("cpu  losses", [round(x, 4) for x in cpu_loss[::5]], "eval", cpu_eval)
    print("cuda losses", [round(x, 4) for x in gpu_loss[::5]], "eval", gpu_eval)
    assert len(gpu_loss) == len(cpu_loss) == 30
    # Step 1 sees the same adapter (B = 0): the loss differs by bf16 rounding only. Later
    # steps drift apart slowly as the two runs' updates differ in the last bits.
    assert abs(gpu_loss[0] - cpu_loss[0]) < 5e-3 * abs(cpu_loss[0]), (gpu_loss[0], cpu_loss[0])
    for g, c in zip(gpu_loss, cpu_loss):
        assert abs(g - c) < 0.05 * abs(c) + 0.02, (gpu_loss, cpu_loss)
    assert gpu_eval[-1] < 0.8 * gpu_eval[0], gpu_eval
    assert abs(gpu_eval[-1] - cpu_eval[-1]) < 0.05 * cpu_eval[-1] + 0.02, (gpu_eval, cpu_eval)

    train(model, tp2, "parallel.backend=cuda", "parallel.comm=mpi", "parallel.tp=2", ranks=2)
    tp_loss, _ = losses(tp2)
    for a, b in zip(tp_loss, gpu_loss):
        assert abs(a - b) < 2e-3 * abs(b), (tp_loss, gpu_loss)

    tiny = os.path.join(tmp, "tiny")
    run([ANVIL, "init-model", "--preset", "tiny", "--out", tiny])
    err = train(tiny, os.path.join(tmp, "bad"), "parallel.backend=cuda", expect=2)
    assert "head_dim is 16" in err and "64 or 128" in err, err

    moe_spec = os.path.join(tmp, "moe.json")
    with open(moe_spec, "w") as f:
        json.dump({**SPEC, "model_type": "qwen3_moe", "num_experts": 4, "num_experts_per_tok": 2,
                   "moe_intermediate_size": 128, "norm_topk_prob": True, "decoder_sparse_step": 1,
                   "mlp_only_layers": [], "output_router_logits": False}, f)
    moe = os.path.join(tmp, "moe")
    run([ANVIL, "init-model", "--spec", moe_spec, "--out", moe, "--seed", "1", "--init-std", "0.1", "--dtype", "bf16"])
    sets = ("parallel.backend=cuda", "lora.dropout=0", "train.micro_batch=2",
            "lora.targets=[q_proj,k_proj,v_proj,o_proj,experts]")
    ep1, ep2 = os.path.join(tmp, "ep1"), os.path.join(tmp, "ep2")
    train(moe, ep1, *sets)
    train(moe, ep2, *sets, "parallel.comm=mpi", "parallel.ep=2", ranks=2)
    (ep1_loss, _), (ep2_loss, _) = losses(ep1), losses(ep2)
    print("ep 1 losses", [round(x, 4) for x in ep1_loss[::5]], "ep 2", [round(x, 4) for x in ep2_loss[::5]])
    assert len(ep2_loss) == len(ep1_loss) == 30
    for a, b in zip(ep2_loss, ep1_loss):
        assert abs(a - b) < 2e-3 * abs(b), (ep2_loss, ep1_loss)
    shutil.rmtree(tmp)
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
