"""GGUF export quality and speed against llama.cpp's own quantizer, on the real
SmolLM2-135M-Instruct and a merged fine-tune of it (tests/e2e/real_model.py makes both):

    .venv/bin/python tests/bench/bench_gguf_export.py [--types q8_0,q4_k_m,...] [--threads 2]

For each --type, in the same run:
  - anvil: `anvil export ... --format gguf --type T` (merge + quantize + write), wall time;
  - llama.cpp: `llama_model_quantize` (llama-cpp-python, nthread = --threads) applied to
    anvil's f16 GGUF of the same model, wall time;
  - file size of each, and perplexity of each in llama.cpp on held-out text (the first
    --tokens tokens of the project's own documentation, which neither model was trained
    on), 512-token windows.
Prints one table row per model and type: sizes, perplexities and their ratio, the time of
each and the throughput ratio (llama.cpp time / anvil time: > 1 means anvil is faster).
anvil's time includes reading the base and merging the adapter; llama.cpp's starts from
a finished f16 file. OMP_NUM_THREADS and OPENBLAS_NUM_THREADS are set to --threads for anvil.
Not a test: numbers go to tests/bench/RESULTS.md with the machine and date."""
import argparse
import ctypes
import glob
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SOURCE, "tests", "e2e"))
from real_model import fetch_smollm2, finetune_smollm2  # noqa: E402

import llama_cpp  # noqa: E402
from llama_cpp import Llama  # noqa: E402

# llama_ftype values of the --type names (llama.h).
FTYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "q4_k": 14, "q4_k_m": 15,
          "q5_k": 16, "q5_k_m": 17, "q6_k": 18, "bf16": 32}
WINDOW = 512


def held_out_text():
    parts = []
    for path in sorted(glob.glob(os.path.join(SOURCE, "docs", "*.md"))) + [os.path.join(SOURCE, "README.md")]:
        with open(path, encoding="utf-8") as f:
            parts.append(f.read())
    return "\n\n".join(parts)


def perplexity(path, ids, threads):
    llm = Llama(model_path=path, n_ctx=WINDOW, n_batch=WINDOW, n_threads=threads, logits_all=True, verbose=False)
    nll, count = 0.0, 0
    for start in range(0, len(ids) - 1, WINDOW):
        window = ids[start:start + WINDOW]
        if len(window) < 2:
            break
        llm.reset()
        llm.eval(window)
        logits = np.array(llm.scores[: len(window)], dtype=np.float64)  # (T, V)
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        nll -= logp[np.arange(len(window) - 1), window[1:]].sum()
        count += len(window) - 1
    del llm
    return float(np.exp(nll / count))


def llama_cpp_quantize(src, dst, ftype, threads):
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = ftype
    start = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    assert rc == 0, f"llama_model_quantize {src} -> {dst}: {rc}"
    return time.perf_counter() - start


def anvil_export(anvil, source, out, gguf_type, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    start = time.perf_counter()
    subprocess.run([anvil, "export", source, "--format", "gguf", "--type", gguf_type, "--out", out], check=True,
                   capture_output=True, env=env)
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--types", default="q8_0,q4_0,q4_1,q5_0,q5_1,q4_k,q5_k,q6_k,q4_k_m,q5_k_m")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=4096, help="held-out tokens scored (the first N)")
    p.add_argument("--anvil", default=os.path.join(SOURCE, "build", "src", "cli", "anvil"))
    a = p.parse_args()
    model_dir, _ = fetch_smollm2(a.anvil, SOURCE)
    _, checkpoint, _ = finetune_smollm2(a.anvil, SOURCE)
    print(f"threads {a.threads}; held-out text: the first {a.tokens} tokens of README.md + docs/*.md")
    print("| model | type | anvil MiB | llama.cpp MiB | anvil ppl | llama.cpp ppl | ppl ratio | anvil s | llama.cpp s | speed ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench_gguf_") as tmp:
        for label, source in [("SmolLM2-135M-Instruct", model_dir), ("fine-tune (merged)", checkpoint)]:
            f16 = os.path.join(tmp, "f16.gguf")
            anvil_export(a.anvil, source, f16, "f16", a.threads)
            ids = Llama(model_path=f16, vocab_only=True, verbose=False).tokenize(held_out_text().encode(),
                                                                                add_bos=False)[: a.tokens]
            ppl16 = perplexity(f16, ids, a.threads)
            print(f"| {label} | f16 | {os.path.getsize(f16) / 2**20:.1f} | | {ppl16:.4f} | | | | | |", flush=True)
            for t in a.types.split(","):
                ours, theirs = os.path.join(tmp, f"anvil-{t}.gguf"), os.path.join(tmp, f"llama-{t}.gguf")
                t_ours = anvil_export(a.anvil, source, ours, t, a.threads)
                t_theirs = llama_cpp_quantize(f16, theirs, FTYPES[t], a.threads)
                p_ours, p_theirs = perplexity(ours, ids, a.threads), perplexity(theirs, ids, a.threads)
                print(f"| {label} | {t} | {os.path.getsize(ours) / 2**20:.2f} | {os.path.getsize(theirs) / 2**20:.2f} "
                      f"| {p_ours:.4f} | {p_theirs:.4f} | {p_ours / p_theirs:.4f} | {t_ours:.2f} | {t_theirs:.2f} "
                      f"| {t_theirs / t_ours:.2f} |", flush=True)
                os.remove(ours)
                os.remove(theirs)
            os.remove(f16)


if __name__ == "__main__":
    main()
