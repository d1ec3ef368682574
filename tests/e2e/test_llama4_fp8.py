"""Llama 4 with its routed experts FP8 on disk, as transformers' fbgemm_fp8 saves them (the
format of Llama-4-Maverick-17B-128E-Instruct-FP8): experts.gate_up_proj F8_E4M3 (E, C, 2I)
with gate_up_proj_scale f32 (E, 1, 2I), experts.down_proj F8_E4M3 (E, I, C) with
down_proj_scale f32 (E, C, 1), one scale per output (amax / 448), quantization_config
fbgemm_fp8 with the rest of the model (attention, shared experts, router, dense MLPs) in
modules_to_not_convert, i.e. dense.

The fixture is written here with a numpy float8_e4m3fn encoder (round to nearest, ties to
even, over the 126 positive finite codes) from a tiny llama4_text model; a dense twin holds
the experts' dequantized values code * scale in f32. Checked:
  - the FP8 checkpoint trains with model.quant fp8 (the codes and scales load as they are,
    transposed into nn.Linear rows, nothing requantized) and gives the twin's losses within
    1e-6 relative, step for step (the twin also with model.quant fp8, which quantizes both
    runs' dense attention and MLPs alike, and its experts in quant_skip: dense W_dq);
  - without model.quant fp8 it is a config error naming the key (exit 2);
  - `--format hf` writes the experts dequantized (fused, f32) with the adapters folded in,
    equal to the twin run's export within 1e-6; `--format gguf` (split per expert) equal to
    the twin's too.

Usage: test_llama4_fp8.py   (ANVIL_BIN, ANVIL_SOURCE_DIR from the environment)"""
import json
import os
import shutil
import struct
import sys
import tempfile

import numpy as np
from gguf import GGUFReader
from safetensors.numpy import load_file



def e4m3_table():
    """The values of float8_e4m3fn codes 0..126 (positive, finite), increasing."""
    v = []
    for code in range(127):
        exp, man = code >> 3, code & 7
        v.append(man / 8 * 2.0 ** -6 if exp == 0 else (1 + man / 8) * 2.0 ** (exp - 7))
    return np.array(v, np.float64)


def e4m3_encode(x):
    """float8_e4m3fn codes of x (|x| <= 448): nearest value, ties to the even code."""
    table = e4m3_table()
    a = np.abs(x.astype(np.float64)).ravel()
    hi = np.clip(np.searchsorted(table, a), 1, 126)
    lo = hi - 1
    dlo, dhi = a - table[lo], table[hi] - a
    code = np.where((dlo < dhi) | ((dlo == dhi) & (lo % 2 == 0)), lo, hi)
    code = np.where(a >= table[126], 126, code).astype(np.uint8)
    code |= np.where(x.ravel() < 0, 0x80, 0).astype(np.uint8)
    return code.reshape(x.shape)


def e4m3_decode(code):
    table = e4m3_table().astype(np.float32)
    v = table[code & 0x7F]
    return np.where(code & 0x80, -v, v).astype(np.float32)


def fp8_per_output(w, axis):
    """codes and scales of w with one scale per index of the output axis (amax over the other)."""
    amax = np.abs(w).max(axis=axis, keepdims=True)
    scale = np.where(amax > 0, amax / np.float32(448.0), np.float32(1.0)).astype(np.float32)
    codes = e4m3_encode(np.clip(w / scale, -448, 448))
    return codes, scale, (e4m3_decode(codes) * scale).astype(np.float32)


def save_safetensors(path, tensors):
    """A safetensors file of (dtype name, numpy array) pairs, F8_E4M3 included."""
    header, blobs, at = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        dtype, a = tensors[name]
        raw = np.ascontiguousarray(a).tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [at, at + len(raw)]}
        blobs.append(raw)
        at += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def make_fixture(base, fp8_dir, twin_dir):
    weights = load_file(os.path.join(base, "model.safetensors"))
    fp8 = {k: ("F32", v) for k, v in weights.items()}
    twin = dict(weights)
    for k, v in weights.items():
        if k.endswith("experts.gate_up_proj") or k.endswith("experts.down_proj"):
            codes, scale, deq = fp8_per_output(v, axis=1)  # (E, 1, out): the scale over the inputs
            if k.endswith("down_proj"):
                scale = scale.transpose(0, 2, 1)  # fbgemm_fp8 stores down's as (E, C, 1)
            fp8[k] = ("F8_E4M3", codes)
            fp8[k + "_scale"] = ("F32", np.ascontiguousarray(scale))
            twin[k] = deq
    for d in (fp8_dir, twin_dir):
        shutil.copytree(base, d)
    save_safetensors(os.path.join(fp8_dir, "model.safetensors"), fp8)
    save_safetensors(os.path.join(twin_dir, "model.safetensors"), {k: ("F32", v) for k, v in twin.items()})
    cfg = json.load(open(os.path.join(base, "config.json")))
    not_converted = [f"model.layers.{l}.{m}" for l in range(cfg["num_hidden_layers"])
                     for m in ("self_attn", "feed_forward.router", "feed_forward.shared_expert",
                               "feed_forward.gate_proj", "feed_forward.up_proj", "feed_forward.down_proj")]
    cfg["quantization_config"] = {"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0,
                                  "modules_to_not_convert": not_converted + ["lm_head"]}
    json.dump(cfg, open(os.path.join(fp8_dir, "config.json"), "w"), indent=2)


def losses(run):
    return [json.loads(line)["loss"] for line in open(os.path.join(run, "metrics.jsonl")) if '"loss"' in line]


def main():
    # Here, not at the top: test_export_moe loads mlx_lm (2.4 s), which the fixture writer
    # above, also imported by mpi.grid_equivalence_llama4, does not need.
    import test_export_moe as moe
    from test_export_llama4 import SPEC, TARGETS
    from test_export_moe import anvil
    with tempfile.TemporaryDirectory(prefix="anvil_l4fp8_") as tmp:
        base = moe.init_model(SPEC, tmp, "base", "--init-std", "0.1")
        fp8_dir, twin_dir = os.path.join(tmp, "fp8"), os.path.join(tmp, "twin")
        make_fixture(base, fp8_dir, twin_dir)
        err = anvil("train", moe.CONFIG, "--set", f"model.path={fp8_dir}", "--set", f"output_dir={tmp}/refused",
                    expect=2)
        assert "model.quant" in err and "fp8" in err, err
        runs = {}
        # Both with model.quant fp8: the rest of the model (dense in both files) is quantized
        # at load alike; the twin keeps its experts (already the FP8 values) dense.
        twin_skip = "model.quant_skip=[lm_head,embed_tokens,router,experts]"
        for name, model, extra in (("fp8", fp8_dir, []), ("twin", twin_dir, [twin_skip])):
            out = os.path.join(tmp, f"{name}_run")
            ckpt = moe.train(model, out, TARGETS, extra=["model.quant=fp8", "log.every=1", *extra])
            runs[name] = (out, ckpt)
        a, b = losses(runs["fp8"][0]), losses(runs["twin"][0])
        assert len(a) == len(b) > 0 and np.allclose(a, b, rtol=1e-6, atol=0), (a, b)
        exports = {}
        for name, (_, ckpt) in runs.items():
            hf = os.path.join(tmp, f"{name}_hf")
            anvil("export", ckpt, "--out", hf, "--dtype", "f32")
            gguf = os.path.join(tmp, f"{name}.gguf")
            anvil("export", ckpt, "--format", "gguf", "--type", "f32", "--out", gguf)
            exports[name] = (load_file(os.path.join(hf, "model.safetensors")),
                             {t.name: np.array(t.data) for t in GGUFReader(gguf).tensors})
        for which in (0, 1):
            x, y = exports["fp8"][which], exports["twin"][which]
            assert set(x) == set(y), sorted(set(x) ^ set(y))
            for k in x:
                assert np.allclose(x[k], y[k], rtol=1e-6, atol=1e-7), (which, k, np.abs(x[k] - y[k]).max())
        fused = [k for k in exports["fp8"][0] if k.endswith("experts.gate_up_proj")]
        assert fused and all(exports["fp8"][0][k].dtype == np.float32 for k in fused), fused
        print(f"fp8 on disk: {len(a)} losses equal the dense twin's within 1e-6; hf and gguf exports equal the "
              f"twin's ({len(fused)} fused gate_up tensors dequantized)")
    print("ok")


if __name__ == "__main__":
    sys.exit(main())
