"""Loading one tensor-parallel rank's base weights costs that rank's share of memory, not
the whole model: the peak RSS growth of bench_weight_load (the load plus a read of every
byte it returned) for rank 0 of tp 3, against loading the whole model (tp 1).

    test_weight_load_rss.py BENCH_WEIGHT_LOAD      (ANVIL_BIN: the anvil binary)
"""
import json
import os
import subprocess
import sys
import tempfile

BENCH = sys.argv[1]
ANVIL = os.environ["ANVIL_BIN"]
MIB = 1 << 20


def run(*args):
    p = subprocess.run(args, capture_output=True, text=True)
    assert p.returncode == 0, f"{' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout


def page_cache_drop(path):
    """Starts each load cold, as from disk: init-model's writes leave the file cached in
    large folios, and the kernel maps a whole folio (up to 2 MiB) around each byte read."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def load(model, tp, rank, storage):
    page_cache_drop(os.path.join(model, "model.safetensors"))
    r = json.loads(run(BENCH, model, str(tp), str(rank), storage).strip().splitlines()[-1])
    print(f"tp {tp} rank {rank} {storage:4}: peak RSS growth {r['peak_rss_growth_bytes'] / MIB:7.1f} MiB, "
          f"slice {r['local_bytes'] / MIB:7.1f} MiB, model {r['model_bytes'] / MIB:7.1f} MiB, "
          f"copied {r['converted_bytes'] / MIB:6.1f} MiB, {r['load_s']:.2f} s")
    return r


def main():
    with tempfile.TemporaryDirectory(prefix="anvil_weight_rss_") as tmp:
        model = os.path.join(tmp, "smollm2")
        # 9 heads, 3 KV heads, ffn 1536, vocab 49152 (tied): every dimension splits 3 ways.
        run(ANVIL, "init-model", "--preset", "smollm2-135m", "--dtype", "f32", "--out", model)
        cfg = json.load(open(os.path.join(model, "config.json")))
        full = load(model, 1, 0, "f32")      # views into the mapping
        part = load(model, 3, 0, "f32")      # row slices viewed, o/down columns copied
        conv = load(model, 3, 0, "bf16")     # every slice converted from the f32 file

    norms = (2 * cfg["num_hidden_layers"] + 1) * cfg["hidden_size"] * 4  # f32, on every rank
    share = (full["model_bytes"] - norms) // 3 + norms
    assert part["local_bytes"] == share, (part["local_bytes"], share)
    grow = {name: r["peak_rss_growth_bytes"] for name, r in (("full", full), ("part", part), ("conv", conv))}
    print(f"peak RSS growth, rank 0 of tp 3 / whole model: {grow['part'] / grow['full']:.3f} "
          f"(a third of the model plus the norms: {share / full['model_bytes']:.3f})")
    # The measurement sees the whole model when one rank reads it all.
    assert grow["full"] >= 0.95 * full["model_bytes"], grow
    assert grow["part"] < 0.5 * grow["full"], grow
    # Above the slice: the pages read around each slice's two ends, and one o/down matrix
    # (3.4 MiB) between reading its columns and letting its pages go.
    assert share <= grow["part"] <= 1.2 * share, (grow["part"], share)
    # Converting reads each slice from the mapping; those pages must not stay resident.
    # The peak may add the largest slice read (the embedding's third, in f32) in passing.
    embed_read = cfg["vocab_size"] // 3 * cfg["hidden_size"] * 4
    assert conv["rss_growth_bytes"] <= 1.1 * conv["local_bytes"], conv
    assert grow["conv"] <= 1.1 * conv["local_bytes"] + embed_read, (grow["conv"], conv["local_bytes"])


if __name__ == "__main__":
    main()
