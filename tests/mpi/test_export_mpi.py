"""`anvil export` under mpirun: the ranks split the shards of the merged model (shard i by
rank i % size) and rank 0 writes the rest; the output directory must be byte for byte the
one a single process writes, with the same summary printed once (hf, and mlx quantized); so
must a GGUF file (f16, q8_0) whose tensors 3 ranks write, and a gguf-lora one. Also --format peft under
two ranks (rank 0 writes, the other waits), a refused --out ending the job with exit 2,
and no staging directory left behind.

Usage: test_export_mpi.py MPIEXEC   (ANVIL_BIN, ANVIL_SOURCE_DIR from the environment)"""
import os
import subprocess
import sys
import tempfile

ANVIL = os.environ["ANVIL_BIN"]
SRC = os.environ["ANVIL_SOURCE_DIR"]
MPIEXEC = sys.argv[1]
CONFIG = os.path.join(SRC, "configs", "demo-cpu.yaml")
# Small enough for several shards, more than the 3 ranks, so some rank writes two.
SHARD_SIZE = "150KB"


def run(cmd, timeout=300):
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=SRC, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(cmd)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def export(ckpt, out, np, *args):
    prefix = [MPIEXEC, "--oversubscribe", "-np", str(np)] if np > 1 else []
    return run(prefix + [ANVIL, "export", ckpt, "--out", out, *args])


def files_of(d):
    """{relative path: bytes} of every file under d."""
    found = {}
    for root, _, names in os.walk(d):
        for n in names:
            path = os.path.join(root, n)
            with open(path, "rb") as f:
                found[os.path.relpath(path, d)] = f.read()
    return found


def assert_same_dir(got, want):
    a, b = files_of(got), files_of(want)
    assert sorted(a) == sorted(b), f"{got}: files {sorted(a)} vs {sorted(b)}"
    for name in b:
        assert a[name] == b[name], f"{got}/{name} differs from the single-process export"
    return sorted(b)


def summary_line(p):
    """The 'exported ...' line, printed by rank 0 only."""
    lines = [line for line in p.stdout.splitlines() if line.startswith("exported ")]
    assert len(lines) == 1, p.stdout + p.stderr
    return lines[0]


def main():
    with tempfile.TemporaryDirectory(prefix="anvil_mpi_export_") as tmp:
        check(tmp)


def check(tmp):
    model = os.path.join(tmp, "model")
    run([ANVIL, "init-model", "--preset", "tiny", "--out", model, "--seed", "1", "--init-std", "0.1"])
    out = os.path.join(tmp, "run")
    run([ANVIL, "train", CONFIG, "--set", f"model.path={model}", "--set", f"output_dir={out}", "--set",
         "train.steps=4", "--set", "train.warmup_steps=1", "--set", "train.eval_every=0", "--set",
         "checkpoint.every=2"])
    ckpt = os.path.join(out, "checkpoints", "step_4.h5")

    single = os.path.join(tmp, "hf_np1")
    p1 = export(ckpt, single, 1, "--max-shard-size", SHARD_SIZE)
    shards = [n for n in os.listdir(single) if n.endswith(".safetensors")]
    assert len(shards) > 3, f"want more shards than ranks, got {shards}"
    assert "model.safetensors.index.json" in os.listdir(single)

    multi = os.path.join(tmp, "hf_np3")
    p3 = export(ckpt, multi, 3, "--max-shard-size", SHARD_SIZE)
    names = assert_same_dir(multi, single)
    assert summary_line(p3) == summary_line(p1), (summary_line(p3), summary_line(p1))
    print(f"hf: 3 ranks wrote {len(shards)} shards, {len(names)} files, byte-identical; {summary_line(p3)}")

    # Fewer shards than ranks: a rank with nothing to write still joins in.
    one_shard = os.path.join(tmp, "hf_one_np1")
    export(ckpt, one_shard, 1)
    one_shard3 = os.path.join(tmp, "hf_one_np3")
    export(ckpt, one_shard3, 3)
    assert_same_dir(one_shard3, one_shard)
    print("hf: one shard under 3 ranks, byte-identical")

    # mlx with --bits: a quantized weight's scales and biases may land in another rank's shard.
    mlx1 = os.path.join(tmp, "mlx_np1")
    pm1 = export(ckpt, mlx1, 1, "--format", "mlx", "--bits", "4", "--group-size", "32", "--max-shard-size", SHARD_SIZE)
    mlx3 = os.path.join(tmp, "mlx_np3")
    pm3 = export(ckpt, mlx3, 3, "--format", "mlx", "--bits", "4", "--group-size", "32", "--max-shard-size", SHARD_SIZE)
    names = assert_same_dir(mlx3, mlx1)
    assert summary_line(pm3) == summary_line(pm1), (summary_line(pm3), summary_line(pm1))
    print(f"mlx 4-bit: 3 ranks, {len(names)} files, byte-identical; {summary_line(pm3)}")

    peft1 = os.path.join(tmp, "peft_np1")
    pp1 = export(ckpt, peft1, 1, "--format", "peft")
    peft2 = os.path.join(tmp, "peft_np2")
    pp2 = export(ckpt, peft2, 2, "--format", "peft")
    assert_same_dir(peft2, peft1)
    assert summary_line(pp2) == summary_line(pp1), (summary_line(pp2), summary_line(pp1))
    print("peft: 2 ranks, byte-identical")

    # GGUF: the ranks write whole tensors into the file rank 0 laid out; the same bytes.
    for t in ["f16", "q8_0"]:
        g1 = os.path.join(tmp, f"model-{t}-np1.gguf")
        pg1 = export(ckpt, g1, 1, "--format", "gguf", "--type", t)
        g3 = os.path.join(tmp, f"model-{t}-np3.gguf")
        pg3 = export(ckpt, g3, 3, "--format", "gguf", "--type", t)
        assert open(g3, "rb").read() == open(g1, "rb").read(), f"gguf {t}: 3 ranks wrote other bytes than 1"
        assert summary_line(pg3) == summary_line(pg1), (summary_line(pg3), summary_line(pg1))
    lora1 = os.path.join(tmp, "lora-np1.gguf")
    export(ckpt, lora1, 1, "--format", "gguf-lora")
    lora2 = os.path.join(tmp, "lora-np2.gguf")
    export(ckpt, lora2, 2, "--format", "gguf-lora")
    assert open(lora2, "rb").read() == open(lora1, "rb").read()
    print("gguf f16, q8_0 (3 ranks) and gguf-lora (2 ranks): byte-identical")

    # Rank 0 refusing --out (not an earlier export) ends the job at once, exit 2, while the
    # others wait for the staging directory; nothing is created.
    other = os.path.join(tmp, "not_an_export")
    os.makedirs(other)
    open(os.path.join(other, "notes.txt"), "w").close()
    p = subprocess.run([MPIEXEC, "--oversubscribe", "-np", "3", ANVIL, "export", ckpt, "--out", other, "--force"],
                       capture_output=True, text=True, cwd=SRC, timeout=60)
    assert p.returncode == 2 and "holds neither a model nor an adapter" in p.stderr, p.stdout + p.stderr
    assert os.listdir(other) == ["notes.txt"], os.listdir(other)

    leftovers = [n for n in os.listdir(tmp) if ".partial-" in n or ".old-" in n]
    assert not leftovers, leftovers


if __name__ == "__main__":
    main()
