"""QLoRA end to end on the demo data with the tiny model (model.quant: nf4 and fp8):

- training: 50 steps with a quantized base end within a stated tolerance of the same run
  with the unquantized base (mean loss of the last 10 steps: nf4 within 3%, fp8 within
  1%), and the loss falls;
- checkpoints record the quantization: resuming with another model.quant is refused,
  exit 2, naming the key;
- `anvil export` (hf, f32) writes every quantized linear weight as W_dq + scale·B·A: for
  fp8 W_dq is recomputed with torch's float8_e4m3fn (per-row amax / 448), for nf4 with
  bitsandbytes' quantize_4bit (double quantization, blocksize 64) expanded by its layout, where
  those run (else this part is skipped, said on stdout); unquantized tensors (embedding,
  norms) come out as the base's;
- a bad model.quant is a config error naming the key (exit 2);
- checkpoints quantized on disk, FP8 (compressed-tensors: F8_E4M3 weights, f32
  weight_scale (out, 1), written with torch) and NF4 (bitsandbytes 4-bit as transformers
  saves it: packed U8 weight, absmax, nested state, quant_map, quant_state JSON, written
  with bitsandbytes' QuantState.as_dict(packed=True)), each with quantization_config in
  config.json, train with model.quant fp8 / nf4 to the losses of a dense checkpoint of
  the same values (rtol 1e-5), export to them plus the adapter, and malformed metadata
  (missing or misshapen scale / absmax / state shape, unknown quant_method or type,
  model.quant: none) is exit 2 naming the tensor or key. The writers are
  scripts/fixtures/quant_checkpoint.py.
Usage: test_qlora.py   (ANVIL_BIN, ANVIL_SOURCE_DIR from the environment)"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, os.path.join(os.environ["ANVIL_SOURCE_DIR"], "scripts", "fixtures"))
from quant_checkpoint import nf4_values_by_layout, write_quantized_checkpoint  # noqa: E402

ANVIL = os.environ["ANVIL_BIN"]
SRC = os.environ["ANVIL_SOURCE_DIR"]
CONFIG = os.path.join(SRC, "configs", "demo-cpu.yaml")
STEPS = 50
TOLERANCE = {"nf4": 0.03, "fp8": 0.01}  # relative, on the mean loss of the last 10 steps


def run(args, expect=0):
    p = subprocess.run(args, capture_output=True, text=True, cwd=SRC)
    out = p.stdout + p.stderr
    assert p.returncode == expect, f"{' '.join(args)}: exit {p.returncode}, expected {expect}\n{out}"
    return out


def train(model, out, quant, *extra, expect=0):
    sets = [f"output_dir={out}", f"model.path={model}", f"train.steps={STEPS}", "train.warmup_steps=5",
            "train.eval_every=0", "checkpoint.every=25", "log.every=100", f"model.quant={quant}"]
    args = [ANVIL, "train", CONFIG]
    for s in sets:
        args += ["--set", s]
    return run(args + list(extra), expect)


def losses(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return np.array([r["loss"] for r in map(json.loads, f) if "loss" in r])


def check_training(tmp, model):
    runs = {q: os.path.join(tmp, q) for q in ("none", "nf4", "fp8")}
    for q, out in runs.items():
        log = train(model, out, q)
        if q != "none":
            assert f"linear weights {q}" in log, log
    base = losses(runs["none"])
    assert len(base) == STEPS and base[-10:].mean() < 0.8 * base[:5].mean(), base
    for q in ("nf4", "fp8"):
        got = losses(runs[q])
        assert len(got) == STEPS and np.all(np.isfinite(got)), got
        rel = abs(got[-10:].mean() - base[-10:].mean()) / base[-10:].mean()
        print(f"{q}: last-10 mean loss {got[-10:].mean():.4f} vs {base[-10:].mean():.4f} unquantized "
              f"({rel:.2%}; tolerance {TOLERANCE[q]:.0%}); first step {got[0]:.4f} vs {base[0]:.4f}")
        assert rel <= TOLERANCE[q], (q, rel)
        assert not np.array_equal(got, base), f"{q}: the quantized run is the unquantized one"
    return runs


def check_resume_refused(tmp, model, runs):
    ckpt = os.path.join(runs["nf4"], "checkpoints", "step_50.h5")
    out = train(model, os.path.join(tmp, "r"), "fp8", "--set", f"checkpoint.resume={ckpt}", expect=2)
    assert "written with model.quant = nf4 (dataset meta/config), this config has fp8" in out, out
    out = run([ANVIL, "validate", CONFIG, "--set", f"model.path={model}", "--set", "model.quant=int4"], expect=2)
    assert "model.quant" in out and "int4" in out, out
    print("resume with another model.quant refused; model.quant: int4 is a config error")


def reference_dequantize(quant, w):
    """W_dq of a (rows, cols) f32 weight by the reference libraries; None where they do not run."""
    try:
        import torch
    except ImportError:
        return None
    t = torch.from_numpy(w)
    if quant == "fp8":
        amax = t.abs().amax(dim=1, keepdim=True)
        scale = torch.where(amax > 0, amax / 448.0, torch.ones_like(amax))
        return ((t / scale).clamp(-448, 448).to(torch.float8_e4m3fn).float() * scale).numpy()
    try:
        import bitsandbytes.functional as F
    except ImportError:
        return None
    # bitsandbytes quantizes; the values are expanded from its state by the documented layout
    q, st = F.quantize_4bit(t, blocksize=64, compress_statistics=True, quant_type="nf4")
    return nf4_values_by_layout(q, st, w.shape).numpy()


def assert_merged(quant, name, got, want, w):
    """The export's (out, in) weight `got` is `want` = W_dq + scale·B·A, W_dq by the reference
    libraries; w is the unquantized weight (the tolerance's scale)."""
    err = np.abs(got - want)
    tol = 1e-6 * np.abs(w).max()
    # anvil's FP8 and NF4 (its 8-bit absmax search included) equal torch's and
    # bitsandbytes' bit for bit, so only the adapter's product rounds differently.
    assert err.max() <= tol, (name, err.max())


def check_export(tmp, model, runs, quant):
    ckpt = os.path.join(runs[quant], "checkpoints", "step_50.h5")
    merged, peft = os.path.join(tmp, f"merged_{quant}"), os.path.join(tmp, f"peft_{quant}")
    run([ANVIL, "export", ckpt, "--out", merged, "--dtype", "f32"])
    run([ANVIL, "export", ckpt, "--out", peft, "--format", "peft"])
    base = load_file(os.path.join(model, "model.safetensors"))
    out = load_file(os.path.join(merged, "model.safetensors"))
    adapter = load_file(os.path.join(peft, "adapter_model.safetensors"))
    cfg = json.load(open(os.path.join(peft, "adapter_config.json")))
    scale = cfg["lora_alpha"] / cfg["r"]
    for name in ("model.embed_tokens.weight", "model.norm.weight", "model.layers.0.input_layernorm.weight"):
        assert np.array_equal(out[name], base[name].astype(np.float32)), name
    checked = 0
    for name, w in base.items():
        if not name.endswith("_proj.weight"):
            continue
        w_dq = reference_dequantize(quant, w.astype(np.float32))
        if w_dq is None:
            print(f"{quant}: the reference library does not run here; export values not checked")
            return
        stem = "base_model.model." + name[: -len(".weight")]
        delta = scale * adapter[stem + ".lora_B.weight"] @ adapter[stem + ".lora_A.weight"]
        assert_merged(quant, name, out[name], w_dq + delta, w)
        checked += 1
    assert checked > 0
    print(f"{quant}: export = W_dq + scale·B·A on {checked} quantized weights; other tensors the base's")


def check_disk_checkpoint(tmp, model, fmt):
    try:
        import torch  # noqa: F401
        if fmt == "nf4":
            import bitsandbytes  # noqa: F401
    except ImportError:
        print(f"{fmt} checkpoint: torch / bitsandbytes is not installed here; skipped")
        return
    ck, dense = os.path.join(tmp, f"ckpt_{fmt}"), os.path.join(tmp, f"ckpt_{fmt}_dense")
    write_quantized_checkpoint(fmt, model, ck, dense)
    steps = ["--set", "train.steps=6", "--set", "checkpoint.every=6"]
    train(ck, os.path.join(tmp, f"run_{fmt}_disk"), fmt, *steps)
    train(dense, os.path.join(tmp, f"run_{fmt}_dense"), "none", *steps)
    got, want = losses(os.path.join(tmp, f"run_{fmt}_disk")), losses(os.path.join(tmp, f"run_{fmt}_dense"))
    assert np.allclose(got, want, rtol=1e-5, atol=0), (got, want)

    ckpt = os.path.join(tmp, f"run_{fmt}_disk", "checkpoints", "step_6.h5")
    merged, peft = os.path.join(tmp, f"merged_{fmt}_disk"), os.path.join(tmp, f"peft_{fmt}_disk")
    run([ANVIL, "export", ckpt, "--out", merged, "--dtype", "f32"])
    run([ANVIL, "export", ckpt, "--out", peft, "--format", "peft"])
    out = load_file(os.path.join(merged, "model.safetensors"))
    base = load_file(os.path.join(dense, "model.safetensors"))
    assert sorted(out) == sorted(base), sorted(set(out) ^ set(base))
    adapter = load_file(os.path.join(peft, "adapter_model.safetensors"))
    cfg = json.load(open(os.path.join(peft, "adapter_config.json")))
    name = "model.layers.1.mlp.down_proj.weight"
    stem = "base_model.model." + name[: -len(".weight")]
    want_w = base[name] + cfg["lora_alpha"] / cfg["r"] * adapter[stem + ".lora_B.weight"] @ adapter[stem + ".lora_A.weight"]
    assert np.abs(out[name] - want_w).max() <= 1e-6 * np.abs(base[name]).max(), np.abs(out[name] - want_w).max()

    def bad(tag, mutate, *expect, quant=fmt):
        d = os.path.join(tmp, f"bad_{fmt}_{tag}")
        write_quantized_checkpoint(fmt, model, d, d + "_dense", mutate)
        log = train(d, os.path.join(tmp, f"run_bad_{fmt}_{tag}"), quant, expect=2)
        for e in expect:
            assert e in log, (tag, e, log)

    q = "model.layers.0.self_attn.q_proj.weight"
    if fmt == "fp8":
        bad("no_scale", lambda t, c: t.pop(q + "_scale"), f"has no scale tensor {q}_scale")
        bad("scale_shape", lambda t, c: t.__setitem__(q + "_scale", t[q + "_scale"][:3].clone()),
            f"tensor '{q}_scale' has shape [3, 1]")
        bad("method", lambda t, c: c["quantization_config"].__setitem__("quant_method", "awq"),
            "quantization_config.quant_method: 'awq' cannot be loaded")
        bad("group", lambda t, c: c["quantization_config"]["config_groups"]["group_0"]["weights"].__setitem__(
            "strategy", "tensor"), "config_groups.group_0.weights: strategy 'tensor' is not supported")
    else:
        import torch
        state = q + ".quant_state.bitsandbytes__nf4"

        def state_shape(t, c):
            st = json.loads(bytes(t[state].tolist()).decode())
            st["shape"] = [st["shape"][0], st["shape"][1] + 1]
            t[state] = torch.tensor(list(json.dumps(st).encode()), dtype=torch.uint8)

        bad("no_absmax", lambda t, c: t.pop(q + ".absmax"), f"tensor '{q}.absmax' is missing")
        bad("absmax_size", lambda t, c: t.__setitem__(q + ".absmax", t[q + ".absmax"][:-1].clone()),
            f"tensor '{q}.absmax' is U8")
        bad("state_shape", state_shape, f"tensor '{q}' (bitsandbytes 4-bit) has shape")
        bad("fp4", lambda t, c: c["quantization_config"].__setitem__("bnb_4bit_quant_type", "fp4"),
            "bnb_4bit_quant_type: 'fp4' is not supported")
    bad("unquantized", None, "model.quant", f"{fmt} on disk", quant="none")
    print(f"{fmt} checkpoint on disk: trains as its dense values (rtol 1e-5), exports W_dq + scale·B·A, "
          "malformed metadata refused naming the tensor or key")


def main():
    with tempfile.TemporaryDirectory(prefix="anvil_e2e_qlora_") as tmp:
        model = os.path.join(tmp, "model")
        run([ANVIL, "init-model", "--preset", "tiny", "--out", model, "--seed", "1", "--init-std", "0.1"])
        runs = check_training(tmp, model)
        check_resume_refused(tmp, model, runs)
        for quant in ("fp8", "nf4"):
            check_export(tmp, model, runs, quant)
        for fmt in ("fp8", "nf4"):
            check_disk_checkpoint(tmp, model, fmt)
    print("qlora: ok")


if __name__ == "__main__":
    sys.exit(main())
