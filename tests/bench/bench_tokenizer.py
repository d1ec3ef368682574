#!/usr/bin/env python3
"""Encode throughput, one thread: anvil's C++ tokenizer against Hugging Face `tokenizers`,
same corpus, same machine, same run.

    .venv/bin/python tests/bench/bench_tokenizer.py --bench-bin BUILD/tests/unit/bench_tokenizer \
        [--work DIR] [--mb 10] [--passes 3]

Writes tokenizers and a corpus of about --mb MB with scripts/fixtures/make_tokenizers.py
(into --work, reused when already there), then for each family times: anvil
(bench_tokenizer, encode per line), HF encode_batch and encode_batch_fast on all lines with
RAYON_NUM_THREADS=1. Pass 1 starts with cold caches; "warm" is the median of the other
passes. Both sides must produce the same number of tokens.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ["RAYON_NUM_THREADS"] = "1"  # before tokenizers starts its thread pool
os.environ["TOKENIZERS_PARALLELISM"] = "true"  # allow the pool, of one thread

from tokenizers import Tokenizer  # noqa: E402

FAMILIES = ["gpt2", "llama3", "qwen2", "smollm2", "llama2"]


def time_hf(tok, lines, method, passes):
    encode = getattr(tok, method)
    seconds, tokens = [], 0
    for _ in range(passes):
        start = time.perf_counter()
        encodings = encode(lines, add_special_tokens=False)
        seconds.append(time.perf_counter() - start)
        tokens = sum(len(e.ids) for e in encodings)
    return seconds[0], statistics.median(seconds[1:]), tokens


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench-bin", required=True)
    parser.add_argument("--work", default=os.path.join(root, "build-bench", "tokenizer"))
    parser.add_argument("--mb", type=float, default=10.0)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()

    corpus = os.path.join(args.work, "bench", "corpus.txt")
    if not os.path.exists(corpus):
        subprocess.run([sys.executable, os.path.join(root, "scripts", "fixtures",
                                                     "make_tokenizers.py"),
                        "--out", args.work, "--bench-mb", str(args.mb)], check=True)
    with open(corpus, encoding="utf-8") as f:
        lines = f.read().split("\n")[:-1]
    size = sum(len(line.encode("utf-8")) for line in lines)
    print(f"corpus: {corpus}: {len(lines)} lines, {size / 1e6:.1f} MB; "
          f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus")
    print(f"{'family':8} {'impl':24} {'cold MB/s':>10} {'warm MB/s':>10} {'tokens':>10}")
    rows = []
    for family in FAMILIES:
        model_dir = os.path.join(args.work, "bench", family)
        out = subprocess.run([args.bench_bin, model_dir, corpus, str(args.passes)],
                             check=True, capture_output=True, text=True).stdout
        anvil = json.loads(out)
        tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        results = [("anvil encode", anvil["cold_s"], anvil["warm_s"], anvil["tokens"])]
        for method in ("encode_batch", "encode_batch_fast"):
            cold, warm, tokens = time_hf(tok, lines, method, args.passes)
            results.append((f"hf {method}", cold, warm, tokens))
        for name, cold, warm, tokens in results:
            print(f"{family:8} {name:24} {size / cold / 1e6:10.2f} {size / warm / 1e6:10.2f} "
                  f"{tokens:10d}")
        if len({r[3] for r in results}) != 1:
            print(f"ERROR: {family}: token counts differ", file=sys.stderr)
            return 1
        best_hf = min(r[2] for r in results[1:])
        rows.append((family, anvil["warm_s"], best_hf))
        print(f"{family:8} anvil / best HF (warm): {best_hf / anvil['warm_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
