"""The inference exports of mixture-of-experts fine-tunes in the clients that serve them: a
tiny Qwen3-MoE and a tiny Mixtral, each trained a few steps with LoRA on attention and every
routed expert.

`--format gguf` in llama.cpp itself (llama-cpp-python, built from its sdist by
scripts/setup.sh; Qwen3-MoE is its qwen3moe architecture, Mixtral its llama architecture
with experts):
  - the file holds each layer's experts as llama.cpp's stacked tensors (ffn_{gate,up,down}_exps,
    ggml dims [in, out, E], expert e's rows the e-th block), the router as ffn_gate_inp (f32),
    and expert_count / expert_used_count (and qwen3moe's expert_feed_forward_length);
  - llama.cpp's logits on the f32 file equal anvil's (logits_tool on the merged f32 export)
    within 2e-2;
  - for f16, q8_0 and q4_k_m every tensor has the type llama-quantize gives it from anvil's
    f16 file (llama_model_quantize), so the same bytes of tensor data; llama.cpp generates
    from each;
  - gguf-lora: the adapter (attention and every routed expert, the experts' A and B stacked
    like the weights, ggml [in, r, E] / [r, out, E]) runs on the base model's GGUF and gives
    the merged model's logits within 2e-2 (the base alone is more than 10× as far).

`--format mlx` in mlx-lm (mlx-lm[cpu]):
  - the experts are stacked as mlx-lm's SwitchGLU holds them (switch_mlp.{gate,up,down}_proj,
    (E, out, in)); mlx_lm.load reads the f32 export and its logits are anvil's within 1e-4
    (relative to the largest);
  - --bits 8 (groups of 64) and --bits 4 (groups of 32) hold exactly what mlx_lm's
    quantize_model makes of the bf16 export: the same tensors, weight/scales/biases bit for
    bit, the same quantization block in config.json (Qwen3-MoE's routers at 8 bits in groups
    of 64, per layer, as its quant_predicate asks); mlx-lm loads and runs them (dequantized,
    in f32: mlx's CPU backend multiplies gathered experts in f32 only)."""
import ctypes
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
from gguf import GGUFReader

try:
    import llama_cpp
    import mlx.core as mx
    from llama_cpp import Llama
    from mlx.utils import tree_flatten
    from mlx_lm import load as mlx_load
    from mlx_lm.utils import dequantize_model, quantize_model
except ImportError as e:
    raise SystemExit(f"llama-cpp-python or mlx-lm is not installed ({e}); run scripts/setup.sh") from e

ANVIL = os.environ["ANVIL_BIN"]
SRC = os.environ["ANVIL_SOURCE_DIR"]
LOGITS_TOOL = sys.argv[1] if len(sys.argv) > 1 else None  # anvil_logits needs it
CONFIG = os.path.join(SRC, "configs", "demo-cpu.yaml")
# Row lengths that are multiples of 32, so that 32-element quants apply (k-quants fall back
# on rows shorter than 256, as llama-quantize does).
SPECS = {
    "qwen3_moe": {"model_type": "qwen3_moe", "hidden_size": 64, "intermediate_size": 96, "moe_intermediate_size": 32,
                  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                  "vocab_size": 320, "num_experts": 6, "num_experts_per_tok": 2, "norm_topk_prob": True,
                  "max_position_embeddings": 128},
    "mixtral": {"model_type": "mixtral", "hidden_size": 64, "intermediate_size": 32, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 320, "num_local_experts": 8,
                "num_experts_per_tok": 2, "max_position_embeddings": 128, "sliding_window": None},
}
ARCH = {"qwen3_moe": "qwen3moe", "mixtral": "llama"}
FTYPES = {"f16": 1, "q8_0": 7, "q4_k_m": 15}
RANK = 8  # lora.rank of configs/demo-cpu.yaml
IDS = [1, 5, 17, 33, 100, 250, 7, 9, 60, 61, 62, 300, 12, 13]


def anvil(*args, expect=0):
    p = subprocess.run([ANVIL, *args], capture_output=True, text=True, cwd=SRC)
    assert p.returncode == expect, f"anvil {' '.join(args)}: exit {p.returncode}, want {expect}\n{p.stdout}\n{p.stderr}"
    return p.stdout + p.stderr


def init_model(spec, tmp, name, *extra):
    """A random model of `spec` (a config.json dict) in tmp/<name>_model."""
    spec_path = os.path.join(tmp, f"{name}.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    model = os.path.join(tmp, f"{name}_model")
    anvil("init-model", "--spec", spec_path, "--seed", "3", *extra, "--out", model)
    return model


def train(model, out, targets, extra=()):
    sets = [f"output_dir={out}", f"model.path={model}", "train.steps=6", "train.warmup_steps=1", "train.eval_every=0",
            "checkpoint.every=6", "lora.dropout=0", f"lora.targets=[{','.join(targets)}]", "log.every=6", *extra]
    args = ["train", CONFIG]
    for s in sets:
        args += ["--set", s]
    anvil(*args)
    return os.path.join(out, "checkpoints", "step_6.h5")


def anvil_logits(model_dir, tmp):
    prefix = os.path.join(tmp, "anvil_logits")
    subprocess.run([LOGITS_TOOL, model_dir, prefix, *map(str, IDS)], check=True)
    return np.fromfile(prefix + ".forward.f32", dtype=np.float32).reshape(len(IDS), -1)


def llama(path, lora=None):
    kw = {"lora_path": lora} if lora else {}
    return Llama(model_path=path, n_ctx=64, n_threads=2, logits_all=True, verbose=False, seed=0, **kw)


def llama_logits(path, lora=None):
    llm = llama(path, lora)
    llm.eval(IDS)
    return np.array(llm.scores[: len(IDS)], dtype=np.float32)


def width_of(spec):
    return spec.get("moe_intermediate_size", spec["intermediate_size"])


def check_layout(name, path, spec):
    r = GGUFReader(path)
    f = {k: v.contents() for k, v in r.fields.items() if not k.startswith("tokenizer.ggml.")}
    arch = ARCH[name]
    experts = spec.get("num_experts", spec.get("num_local_experts"))
    assert f["general.architecture"] == arch, f
    assert f[f"{arch}.expert_count"] == experts and f[f"{arch}.expert_used_count"] == 2, f
    if arch == "qwen3moe":
        assert f["qwen3moe.expert_feed_forward_length"] == spec["moe_intermediate_size"], f
    width = width_of(spec)
    t = {x.name: x for x in r.tensors}
    C = spec["hidden_size"]
    for l in range(spec["num_hidden_layers"]):
        assert list(t[f"blk.{l}.ffn_gate_inp.weight"].shape) == [C, experts]
        assert t[f"blk.{l}.ffn_gate_inp.weight"].tensor_type.name == "F32"
        for stem, dims in (("gate", [C, width, experts]), ("up", [C, width, experts]), ("down", [width, C, experts])):
            assert list(t[f"blk.{l}.ffn_{stem}_exps.weight"].shape) == dims, (stem, t[f"blk.{l}.ffn_{stem}_exps.weight"].shape)
        assert f"blk.{l}.ffn_gate.weight" not in t
    return t


def check_mlx(name, ckpt, want, tmp, stack=".switch_mlp."):
    """mlx-lm on the mlx exports; `want`: anvil's logits of the merged f32 model; `stack`: the
    part of a stacked expert tensor's name that mlx-lm's model gives it."""
    f32 = os.path.join(tmp, f"{name}-mlx-f32")
    anvil("export", ckpt, "--format", "mlx", "--dtype", "f32", "--out", f32)
    weights = mx.load(os.path.join(f32, "model.safetensors"))
    stacked = [k for k in weights if stack in k]
    assert stacked and not [k for k in weights if re.search(r"\.experts\.\d", k)], sorted(weights)
    model, _ = mlx_load(f32)
    got = np.array(model(mx.array([IDS]))[0].astype(mx.float32))
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < 1e-4, f"{name}: mlx-lm's logits on the f32 export differ from anvil's by {err} (relative)"
    bf16 = os.path.join(tmp, f"{name}-mlx-bf16")
    anvil("export", ckpt, "--format", "mlx", "--dtype", "bf16", "--out", bf16)
    config = json.load(open(os.path.join(bf16, "config.json")))
    for bits, group in ((8, 64), (4, 32)):
        ours = os.path.join(tmp, f"{name}-mlx-{bits}")
        anvil("export", ckpt, "--format", "mlx", "--dtype", "bf16", "--bits", str(bits), "--group-size", str(group),
              "--out", ours)
        dense, _ = mlx_load(bf16)
        dense, qconfig = quantize_model(dense, dict(config), group, bits)
        expect = dict(tree_flatten(dense.parameters()))
        have = {}
        for f in sorted(os.listdir(ours)):
            if f.endswith(".safetensors"):
                have.update(mx.load(os.path.join(ours, f)))
        assert sorted(have) == sorted(expect), sorted(set(have) ^ set(expect))
        assert any(k.endswith(f"{stack}gate_proj.scales") for k in have), sorted(have)
        for k in have:
            assert have[k].dtype == expect[k].dtype and have[k].shape == expect[k].shape, (k, have[k].shape)
            assert mx.array_equal(have[k], expect[k]).item(), f"{name} {bits}-bit: {k} differs from mlx_lm's"
        cfg = json.load(open(os.path.join(ours, "config.json")))
        for key in ("quantization", "quantization_config"):
            assert cfg[key] == qconfig[key], (key, cfg[key], qconfig[key])
        # mlx's CPU backend multiplies gathered experts in f32 only: run the loaded model
        # dequantized, in f32 (as the dense test does for its full sequences).
        quantized, _ = mlx_load(ours)
        quantized = dequantize_model(quantized)
        quantized.set_dtype(mx.float32)
        out = np.array(quantized(mx.array([IDS]))[0])
        qerr = np.abs(out - want).max() / np.abs(want).max()
        # No bound on the error: the bytes are mlx_lm's own (checked above), and on a tiny random
        # model a router rounded to 8 bits picks other experts for some tokens (8-bit export
        # with bf16 scales: ~0.2 of the largest logit measured; with f32 scales ~0.02).
        assert out.shape == want.shape and np.isfinite(out).all(), (bits, out.shape)
        print(f"{name} mlx {bits}-bit: {sum(k.endswith('.scales') for k in have)} quantized modules as mlx_lm's, "
              f"quantization block {cfg['quantization']}; logits within {qerr:.3f} of anvil's (relative)")
    print(f"{name} mlx: f32 logits within {err:.1e} of anvil's (relative)")


def check_family(name, tmp):
    spec = SPECS[name]
    model = init_model(spec, tmp, name, "--init-std", "0.1", "--norm-std", "0.2")
    ckpt = train(model, os.path.join(tmp, f"{name}_run"), ["q_proj", "k_proj", "v_proj", "o_proj", "experts"])
    merged = os.path.join(tmp, f"{name}_hf")
    anvil("export", ckpt, "--out", merged, "--dtype", "f32")
    want = anvil_logits(merged, tmp)

    f32 = os.path.join(tmp, f"{name}-f32.gguf")
    anvil("export", ckpt, "--format", "gguf", "--type", "f32", "--out", f32)
    stacked = check_layout(name, f32, spec)
    # Expert e's rows are the e-th block of the stacked tensor: the merged export's weights.
    from safetensors.numpy import load_file
    hf = load_file(os.path.join(merged, "model.safetensors"))
    module, leaf = ("block_sparse_moe", "w2") if name == "mixtral" else ("mlp", "down_proj")
    down = stacked["blk.1.ffn_down_exps.weight"].data  # (E, C, width) as numpy reads ggml [width, C, E]
    for e in range(down.shape[0]):
        assert np.array_equal(down[e], hf[f"model.layers.1.{module}.experts.{e}.{leaf}.weight"]), e
    got = llama_logits(f32)
    err = np.abs(got - want).max()
    assert err < 2e-2, f"{name}: llama.cpp's logits on the f32 GGUF differ from anvil's by {err}"

    check_quant_types(name, ckpt, tmp)
    lora_err = check_lora(name, model, ckpt, want, tmp, width_of(spec), spec["hidden_size"])
    print(f"{name}: f32 GGUF logits within {err:.2e} of anvil's, LoRA GGUF within {lora_err:.2e}")
    check_mlx(name, ckpt, want, tmp)


def check_quant_types(name, ckpt, tmp):
    """anvil's f16, q8_0 and q4_k_m files against llama-quantize's from anvil's f16 file."""
    f16 = os.path.join(tmp, f"{name}-f16.gguf")
    anvil("export", ckpt, "--format", "gguf", "--type", "f16", "--out", f16)
    for tname, ftype in FTYPES.items():
        ours = f16 if tname == "f16" else os.path.join(tmp, f"{name}-{tname}.gguf")
        if tname != "f16":
            anvil("export", ckpt, "--format", "gguf", "--type", tname, "--out", ours)
        theirs = os.path.join(tmp, f"{name}-llama-{tname}.gguf")
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype, params.nthread = ftype, 2
        assert llama_cpp.llama_model_quantize(f16.encode(), theirs.encode(), ctypes.byref(params)) == 0, tname
        a = {x.name: x for x in GGUFReader(ours).tensors}
        b = {x.name: x for x in GGUFReader(theirs).tensors}
        assert set(a) == set(b), (tname, set(a) ^ set(b))
        for k, x in a.items():
            assert x.tensor_type == b[k].tensor_type, \
                f"{name} {tname}: {k} is {x.tensor_type.name}, llama.cpp makes it {b[k].tensor_type.name}"
            assert x.n_bytes == b[k].n_bytes, (tname, k)
        text = llama(ours).create_completion("hello", max_tokens=4, temperature=0.0, top_k=1)["choices"][0]["text"]
        print(f"{name} {tname}: {len(a)} tensors, types as llama-quantize's; generates {text!r}")


def check_lora(name, model, ckpt, want, tmp, width, hidden):
    """The adapter alone (attention and every expert) as a llama.cpp LoRA file on the base
    GGUF: the merged model's logits within 2e-2, the base alone 10x as far. Returns the error."""
    base = os.path.join(tmp, f"{name}-base.gguf")
    anvil("export", model, "--format", "gguf", "--type", "f32", "--out", base)
    lora = os.path.join(tmp, f"{name}-lora.gguf")
    anvil("export", ckpt, "--format", "gguf-lora", "--out", lora)
    lt = {x.name: x for x in GGUFReader(lora).tensors}
    down = next(k for k in sorted(lt) if k.endswith("ffn_down_exps.weight.lora_a"))
    experts = lt[down].shape[2]
    assert list(lt[down].shape) == [width, RANK, experts], lt[down].shape
    assert list(lt[down.replace("lora_a", "lora_b")].shape) == [RANK, hidden, experts]
    lora_err = np.abs(llama_logits(base, lora) - want).max()
    base_err = np.abs(llama_logits(base) - want).max()
    assert lora_err < 2e-2 and base_err > 10 * lora_err, \
        f"{name}: the LoRA GGUF on the base gives logits {lora_err} from the merged model's (the base alone {base_err})"
    return lora_err


def main():
    with tempfile.TemporaryDirectory() as tmp:
        for name in SPECS:
            check_family(name, tmp)
    print("ok")


if __name__ == "__main__":
    sys.exit(main())
