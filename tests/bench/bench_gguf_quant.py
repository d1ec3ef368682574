#!/usr/bin/env python3
"""GGUF quantization throughput: anvil's quantizers (gguf_quant_tool) against llama.cpp's
llama_model_quantize (llama-cpp-python), same f32 model, same thread count, same machine.

    .venv/bin/python tests/bench/bench_gguf_quant.py --tool BUILD/tests/e2e/gguf_quant_tool \
        [--threads 2] [--layers 4] [--reps 3] [--types q8_0,q4_k_m,...] [--work DIR]

Writes an f32 llama GGUF (hidden 1024, ffn 2816, vocab 8192; --layers blocks, about 60M
parameters at 4) and, per file type, times with the page cache warm (one untimed run
first, then the median of --reps):
  llama.cpp e2e  llama_model_quantize: read, quantize, write the GGUF
  llama.cpp      ggml_quantize_chunk alone (libggml-base, what llama_model_quantize calls)
                 on the tensors in memory, each split into --threads row ranges run on
                 as many threads (ctypes releases the GIL), as llama-quant.cpp splits them
  anvil e2e      gguf_quant_tool as a process: read, plan, quantize, write .bin + .json
  anvil          gguf_quant_tool's own timing of gguf_quantize_rows alone
(the kernel timings start with inputs and outputs in memory, their pages touched).
MB/s is f32 input megabytes (10^6) per second. Also checks that anvil's bytes equal
llama.cpp's for every tensor (a benchmark of different work would be meaningless).
"""
import argparse
import ctypes
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from gguf import GGUFReader, GGUFWriter

import llama_cpp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from test_gguf_quant_reference import FILE_TYPES, QUIET  # noqa: E402


def write_model(path, layers):
    rng = np.random.default_rng(0)
    h, f, vocab, heads, kv_heads = 1024, 2816, 8192, 16, 4
    kv = h // heads * kv_heads
    w = GGUFWriter(path, "llama")
    w.add_context_length(2048)
    w.add_embedding_length(h)
    w.add_block_count(layers)
    w.add_feed_forward_length(f)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(h // heads)
    w.add_vocab_size(vocab)
    w.add_file_type(0)

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float32)

    w.add_tensor("token_embd.weight", mat(vocab, h))
    for i in range(layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(h, np.float32))
        for name, rows, cols in (("attn_q", h, h), ("attn_k", kv, h), ("attn_v", kv, h), ("attn_output", h, h),
                                 ("ffn_gate", f, h), ("ffn_up", f, h), ("ffn_down", h, f)):
            w.add_tensor(p + name + ".weight", mat(rows, cols))
        w.add_tensor(p + "ffn_norm.weight", np.ones(h, np.float32))
    w.add_tensor("output_norm.weight", np.ones(h, np.float32))
    w.add_tensor("output.weight", mat(vocab, h))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def time_llama_cpp(src, dst, ftype, threads):
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    t0 = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    elapsed = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"llama_model_quantize failed ({rc})")
    return elapsed


def ggml_base():
    lib_dir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    lib = ctypes.CDLL(os.path.join(lib_dir, "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    return lib


def time_ggml_kernels(lib, tensors, types, threads):
    """Seconds of ggml_quantize_chunk over every tensor llama.cpp quantized (the others are
    copied, by both sides), rows split evenly over `threads` threads per tensor."""
    total = 0.0
    for (name, x), qtype in zip(tensors, types):
        if qtype == 0:
            continue
        rows, cols = x.shape
        out = np.zeros(rows * cols * 4, dtype=np.uint8)
        out.fill(1)  # touch the pages before the clock starts, as gguf_quant_tool does
        bounds = [rows * k // threads for k in range(threads + 1)]

        def work(k):
            lib.ggml_quantize_chunk(qtype, x.ctypes.data, out.ctypes.data, bounds[k] * cols,
                                    bounds[k + 1] - bounds[k], cols, None)

        workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        total += time.perf_counter() - t0
    return total


def time_anvil(tool, src, type_name, prefix, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    out = subprocess.run([tool, src, type_name, prefix, "--time"], check=True, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    return elapsed, json.loads(out.stdout)["seconds"]


def same_bytes(ref_path, prefix):
    ref = {t.name: np.ascontiguousarray(t.data).tobytes() for t in GGUFReader(ref_path).tensors}
    blob = np.fromfile(prefix + ".bin", dtype=np.uint8)
    with open(prefix + ".json") as fh:
        index = json.load(fh)
    return all(blob[e["offset"]:e["offset"] + e["nbytes"]].tobytes() == ref[e["name"]] for e in index)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--types", default="f16,q8_0,q4_0,q4_1,q5_0,q5_1,q4_k,q5_k,q6_k,q4_k_m,q5_k_m")
    ap.add_argument("--work")
    args = ap.parse_args()
    if args.work:  # kept, with its model, for the next run
        os.makedirs(args.work, exist_ok=True)
        bench(args, args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="bench_gguf_quant_") as work:
            bench(args, work)


def bench(args, work):
    llama_cpp.llama_log_set(QUIET, ctypes.c_void_p(0))

    src = os.path.join(work, f"model_{args.layers}l_f32.gguf")
    if not os.path.exists(src):
        write_model(src, args.layers)
    mb = os.path.getsize(src) / 1e6
    lib = ggml_base()
    tensors = [(t.name, np.ascontiguousarray(np.array(t.data).reshape(-1, int(t.shape[0])), dtype=np.float32))
               for t in GGUFReader(src).tensors]
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {args.threads} threads; "
          f"input {mb:.0f} MB f32; median of {args.reps} warm runs")
    print(f"{'type':7} {'llama.cpp e2e':>14} {'anvil e2e':>10} {'llama.cpp':>10} {'anvil':>8} {'same bytes':>11}  (MB/s)")
    for type_name in args.types.split(","):
        ref_path = os.path.join(work, f"ref_{type_name}.gguf")
        prefix = os.path.join(work, f"anvil_{type_name}")
        time_llama_cpp(src, ref_path, FILE_TYPES[type_name], args.threads)  # warm-up
        time_anvil(args.tool, src, type_name, prefix, args.threads)
        ref_t = statistics.median(time_llama_cpp(src, ref_path, FILE_TYPES[type_name], args.threads)
                                  for _ in range(args.reps))
        runs = [time_anvil(args.tool, src, type_name, prefix, args.threads) for _ in range(args.reps)]
        e2e_t = statistics.median(r[0] for r in runs)
        quant_t = statistics.median(r[1] for r in runs)
        planned = [t.tensor_type for t in GGUFReader(ref_path).tensors]
        names = [t.name for t in GGUFReader(ref_path).tensors]
        by_name = dict(tensors)
        ordered = [(n, by_name[n]) for n in names]
        kernel_t = statistics.median(time_ggml_kernels(lib, ordered, planned, args.threads) for _ in range(args.reps))
        print(f"{type_name:7} {mb / ref_t:14.1f} {mb / e2e_t:10.1f} {mb / kernel_t:10.1f} {mb / quant_t:8.1f} "
              f"{str(same_bytes(ref_path, prefix)):>11}", flush=True)


if __name__ == "__main__":
    main()
