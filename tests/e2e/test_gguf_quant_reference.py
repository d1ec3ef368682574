#!/usr/bin/env python3
"""anvil's GGUF quantizers and type plan against llama.cpp itself (llama-cpp-python's
llama_model_quantize, i.e. llama-quantize) on the same f32 GGUF files.

    test_gguf_quant_reference.py GGUF_QUANT_TOOL [--work DIR] [--types q4_k_m,...] [--report]

Writes two small f32 models with the `gguf` package: a llama with untied embeddings
(hidden 256: the k-quants apply; ffn 640: ffn_down falls back) and a qwen2 with tied
embeddings and q/k/v biases (hidden 320: the k-quants fall back to 32-element types; ffn
768: ffn_down keeps them). Weights are normal(0, 0.02) with a few outliers, one all-zero
row and one constant row. For every file type it quantizes both with llama.cpp and with
gguf_quant_tool (anvil's plan and quantizers), then per tensor:
  - the ggml types must be equal (so the files have the same size);
  - the 32-element types, F16 and BF16 must be byte-identical to llama.cpp and to
    gguf.quants.quantize;
  - the k-quants: at least 99% of the blocks byte-identical to llama.cpp's (all of them
    are where llama.cpp's ggml is built without FMA contraction, as PyPI's is), and per
    tensor the RMSE of anvil's dequantized values against the f32 weights at most 1.01 x
    llama.cpp's.
Exit 77 (skipped) when llama_cpp cannot be imported (pip install llama-cpp-python).
"""
import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader, GGUFWriter, quants

try:
    import llama_cpp
except ImportError as e:  # the reference is optional, as torch is for the other reference tests
    print(f"SKIP: llama_cpp is not importable ({e}); pip install llama-cpp-python", file=sys.stderr)
    sys.exit(77)

# CLI name -> llama_ftype (include/llama.h)
FILE_TYPES = {"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7, "q4_0": 2, "q4_1": 3, "q5_0": 8, "q5_1": 9,
              "q4_k": 14, "q4_k_m": 15, "q5_k": 16, "q5_k_m": 17, "q6_k": 18}
EXACT_TYPES = {Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1}
K_TYPES = {Q.Q4_K, Q.Q5_K, Q.Q6_K}

MODELS = {
    "llama": dict(arch="llama", layers=8, hidden=256, ffn=640, heads=4, kv_heads=2, vocab=512, tied=False),
    "qwen2": dict(arch="qwen2", layers=6, hidden=320, ffn=768, heads=5, kv_heads=1, vocab=384, tied=True),
}


# llama.cpp logs every tensor it quantizes; kept in a global so ctypes does not free it.
QUIET = llama_cpp.llama_log_callback(lambda level, text, data: None)


def weights(rng, rows, cols):
    w = (rng.standard_normal((rows, cols)) * 0.02).astype(np.float32)
    outliers = rng.random((rows, cols)) < 0.002  # a few large values, as trained weights have
    w[outliers] *= 12
    return w


def write_model(path, m, seed):
    rng = np.random.default_rng(seed)
    arch, h, f = m["arch"], m["hidden"], m["ffn"]
    head_dim = h // m["heads"]
    w = GGUFWriter(path, arch)
    w.add_context_length(256)
    w.add_embedding_length(h)
    w.add_block_count(m["layers"])
    w.add_feed_forward_length(f)
    w.add_head_count(m["heads"])
    w.add_head_count_kv(m["kv_heads"])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(m["vocab"])
    w.add_file_type(0)
    embd = weights(rng, m["vocab"], h)
    embd[3] = 0.0    # an all-zero row: the zero-scale paths
    embd[4] = 0.015  # a constant row: max == min
    w.add_tensor("token_embd.weight", embd)
    for i in range(m["layers"]):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(h, np.float32))
        w.add_tensor(p + "attn_q.weight", weights(rng, h, h))
        w.add_tensor(p + "attn_k.weight", weights(rng, m["kv_heads"] * head_dim, h))
        w.add_tensor(p + "attn_v.weight", weights(rng, m["kv_heads"] * head_dim, h))
        if arch == "qwen2":
            for n, rows in (("q", h), ("k", m["kv_heads"] * head_dim), ("v", m["kv_heads"] * head_dim)):
                w.add_tensor(p + f"attn_{n}.bias", weights(rng, 1, rows)[0])
        w.add_tensor(p + "attn_output.weight", weights(rng, h, h))
        w.add_tensor(p + "ffn_norm.weight", np.ones(h, np.float32))
        w.add_tensor(p + "ffn_gate.weight", weights(rng, f, h))
        w.add_tensor(p + "ffn_up.weight", weights(rng, f, h))
        w.add_tensor(p + "ffn_down.weight", weights(rng, h, f))
    w.add_tensor("output_norm.weight", np.ones(h, np.float32))
    if not m["tied"]:
        w.add_tensor("output.weight", weights(rng, m["vocab"], h))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_cpp_quantize(src, dst, ftype, threads):
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        raise SystemExit(f"llama_model_quantize({src}, ftype {ftype}) failed with {rc}")


def rmse(a, b):
    return float(np.sqrt(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def compare(model_name, type_name, src, ref_path, ours_prefix, stats):
    """Per-tensor checks; returns a list of failure lines."""
    failures = []
    f32 = {t.name: np.array(t.data) for t in GGUFReader(src).tensors}
    ref = {t.name: t for t in GGUFReader(ref_path).tensors}
    with open(ours_prefix + ".json") as fh:
        index = json.load(fh)
    blob = np.fromfile(ours_prefix + ".bin", dtype=np.uint8)
    for entry in index:
        name, qtype = entry["name"], Q(entry["type"])
        r = ref[name]
        tag = f"{model_name} {type_name} {name}"
        if Q(r.tensor_type) != qtype:
            failures.append(f"{tag}: anvil plans {qtype.name}, llama.cpp wrote {Q(r.tensor_type).name}")
            continue
        ours = blob[entry["offset"]:entry["offset"] + entry["nbytes"]]
        theirs = np.frombuffer(np.ascontiguousarray(r.data).tobytes(), dtype=np.uint8)
        if ours.size != theirs.size:
            failures.append(f"{tag}: {ours.size} bytes, llama.cpp {theirs.size}")
            continue
        block_elems, block_bytes = quants.GGML_QUANT_SIZES[qtype]
        same = (ours.reshape(-1, block_bytes) == theirs.reshape(-1, block_bytes)).all(axis=1)
        x = f32[name].reshape(-1, entry["dims"][0])
        s = stats.setdefault(qtype.name, {"blocks": 0, "identical": 0, "rmse_ours": 0.0, "rmse_ref": 0.0,
                                          "worst_ratio": 0.0})
        s["blocks"] += same.size
        s["identical"] += int(same.sum())
        if qtype in EXACT_TYPES:
            if not same.all():
                failures.append(f"{tag}: {int((~same).sum())} of {same.size} {qtype.name} blocks differ from llama.cpp")
            if qtype != Q.F32:
                py = np.ascontiguousarray(quants.quantize(x, qtype)).view(np.uint8).reshape(-1)
                if not np.array_equal(py, ours):
                    failures.append(f"{tag}: {qtype.name} bytes differ from gguf.quants.quantize")
            continue
        rows = x.shape[0]
        y_ours = quants.dequantize(ours.reshape(rows, -1), qtype)
        y_ref = quants.dequantize(theirs.reshape(rows, -1), qtype)
        e_ours, e_ref = rmse(y_ours, x), rmse(y_ref, x)
        s["rmse_ours"] += e_ours ** 2 * x.size
        s["rmse_ref"] += e_ref ** 2 * x.size
        ratio = e_ours / e_ref if e_ref > 0 else (1.0 if e_ours == 0 else float("inf"))
        s["worst_ratio"] = max(s["worst_ratio"], ratio)
        if ratio > 1.01:
            failures.append(f"{tag}: RMSE {e_ours:.4g} is {ratio:.4f} x llama.cpp's {e_ref:.4g}")
        if same.mean() < 0.99:
            failures.append(f"{tag}: only {same.mean():.2%} of the {qtype.name} blocks equal llama.cpp's")
    return failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tool")
    ap.add_argument("--work")
    ap.add_argument("--types", default=",".join(FILE_TYPES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--report", action="store_true", help="print per-type identical blocks and RMSE")
    args = ap.parse_args()
    if args.work:
        os.makedirs(args.work, exist_ok=True)
        run_types(args, args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="gguf_quant_") as work:
            run_types(args, work)


def run_types(args, work):
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    llama_cpp.llama_log_set(QUIET, ctypes.c_void_p(0))

    failures, stats = [], {}
    for seed, (model_name, m) in enumerate(MODELS.items()):
        src = os.path.join(work, f"{model_name}_f32.gguf")
        write_model(src, m, seed)
        for type_name in args.types.split(","):
            ref_path = os.path.join(work, f"{model_name}_{type_name}_llama_cpp.gguf")
            llama_cpp_quantize(src, ref_path, FILE_TYPES[type_name], args.threads)
            prefix = os.path.join(work, f"{model_name}_{type_name}_anvil")
            subprocess.run([args.tool, src, type_name, prefix], check=True, env=env)
            failures += compare(model_name, type_name, src, ref_path, prefix, stats)

    if args.report or failures:
        # rmse: over all tensors of the type; worst: the largest per-tensor ratio
        print(f"{'type':6} {'blocks':>9} {'identical':>10} {'rmse anvil/llama.cpp':>21} {'worst':>8}")
        for qname, s in sorted(stats.items()):
            if s["rmse_ref"] > 0:
                ratio, worst = f"{np.sqrt(s['rmse_ours'] / s['rmse_ref']):.5f}", f"{s['worst_ratio']:.5f}"
            else:
                ratio, worst = "(exact)", ""
            print(f"{qname:6} {s['blocks']:9d} {s['identical'] / s['blocks']:10.4%} {ratio:>21} {worst:>8}")
    for line in failures:
        print("FAIL", line)
    if failures:
        sys.exit(1)
    print(f"OK: {len(args.types.split(','))} file types x {len(MODELS)} models agree with llama.cpp")


if __name__ == "__main__":
    main()
