"""Mixture-of-experts models end to end (Qwen3-MoE and Mixtral; a dense layer between sparse
ones is covered by tests/golden and mpi.grid_equivalence_moe, and PEFT 0.21.2 drops such
layers' adapters on load), with adapters on the attention and every routed expert:
  - anvil train writes aux_loss and per-layer expert loads to metrics.jsonl;
  - a run stopped after step 4 and resumed ends with the uninterrupted run's adapter bytes;
  - anvil inspect verifies the checkpoint; anvil export writes the PEFT adapter in the
    per-expert names (experts.{e}.gate_proj / Mixtral's w1, w3, w2) and a merged model whose
    expert weights are W + scale·B·A (numpy) and whose other tensors are the base's bytes;
  - with model.quant nf4 the experts' weights are quantized too, and the run trains within 5%
    of the f32 losses and exports;
  - bad combinations are config errors naming the key: dropout on expert adapters, targets
    that adapt no layer; the CUDA backend is refused for the tiny head_dim, not for the experts.
With --reference (needs scripts/setup.sh --reference, else exit 77): transformers + PEFT
load the exported adapter onto the base model and give the merged model's logits; the model
saved by transformers with BitsAndBytesConfig (NF4) trains with model.quant nf4 exactly as
the dense model's nf4 run.

Usage: test_moe.py [--reference]   (ANVIL_BIN, ANVIL_SOURCE_DIR from the environment)"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, os.path.join(os.environ["ANVIL_SOURCE_DIR"], "scripts", "fixtures"))
from quant_checkpoint import save_with_transformers_bnb  # noqa: E402

REFERENCE = "--reference" in sys.argv[1:]
if REFERENCE:
    try:
        import torch
        import transformers
        from peft import PeftModel
    except ImportError as e:
        print(f"SKIP: the Python references are not installed ({e}); run scripts/setup.sh --reference")
        sys.exit(77)

ANVIL = os.environ["ANVIL_BIN"]
SRC = os.environ["ANVIL_SOURCE_DIR"]
CONFIG = os.path.join(SRC, "configs", "demo-cpu.yaml")
SPECS = {
    "qwen3_moe": {"model_type": "qwen3_moe", "hidden_size": 48, "intermediate_size": 56, "moe_intermediate_size": 24,
                  "num_hidden_layers": 3, "num_attention_heads": 3, "num_key_value_heads": 1, "head_dim": 16,
                  "vocab_size": 320, "num_experts": 5, "num_experts_per_tok": 2, "norm_topk_prob": True,
                  "output_router_logits": True, "router_aux_loss_coef": 0.02,
                  "max_position_embeddings": 128},
    "mixtral": {"model_type": "mixtral", "hidden_size": 40, "intermediate_size": 32, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 320, "num_local_experts": 4,
                "num_experts_per_tok": 2, "output_router_logits": True, "router_aux_loss_coef": 0.02,
                "max_position_embeddings": 128, "sliding_window": None},
}
TARGETS = "lora.targets=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,experts]"


def anvil(*args, expect=0):
    p = subprocess.run([ANVIL, *args], capture_output=True, text=True, cwd=SRC)
    assert p.returncode == expect, f"anvil {' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout + p.stderr


def train(model, out, *extra, expect=0, stop_after=None):
    sets = [f"output_dir={out}", f"model.path={model}", "train.steps=8", "train.warmup_steps=2", "train.eval_every=0",
            "checkpoint.every=4", "lora.dropout=0", TARGETS, "log.every=4", *extra]
    args = ["train", CONFIG]
    for s in sets:
        args += ["--set", s]
    if stop_after:
        args += ["--stop-after", str(stop_after)]
    return anvil(*args, expect=expect)


def check_family(name, tmp):
    spec = SPECS[name]
    spec_path = os.path.join(tmp, f"{name}.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    model = os.path.join(tmp, f"{name}_model")
    anvil("init-model", "--spec", spec_path, "--seed", "4", "--init-std", "0.1", "--out", model)
    sparse = [l for l in range(spec["num_hidden_layers"]) if l not in spec.get("mlp_only_layers", [])]
    experts = spec.get("num_experts", spec.get("num_local_experts"))

    whole, parted = os.path.join(tmp, f"{name}_whole"), os.path.join(tmp, f"{name}_parted")
    train(model, whole)
    train(model, parted, stop_after=4)
    log = train(model, parted)
    assert "resumed from" in log, log
    a = open(os.path.join(whole, "adapter", "adapter_model.safetensors"), "rb").read()
    b = open(os.path.join(parted, "adapter", "adapter_model.safetensors"), "rb").read()
    assert a == b, f"{name}: the resumed run's adapter differs from the uninterrupted run's"

    rows = [json.loads(line) for line in open(os.path.join(whole, "metrics.jsonl"))]
    steps = [r for r in rows if "loss" in r]
    assert len(steps) == 8, rows
    for r in steps:
        assert np.isfinite(r["aux_loss"]) and r["aux_loss"] >= 1.0 - 1e-6, r  # E·Σ f·P >= 1, = 1 when balanced
        assert len(r["expert_load"]) == len(sparse), r
        assert all(0 <= x["min"] <= x["max"] for x in r["expert_load"]), r

    ckpt = os.path.join(whole, "checkpoints", "step_8.h5")
    out = anvil("inspect", ckpt)
    assert "checksums verified" in out and "experts.gate_proj" in out, out

    peft_dir, hf_dir = os.path.join(tmp, f"{name}_peft"), os.path.join(tmp, f"{name}_hf")
    anvil("export", ckpt, "--out", peft_dir, "--format", "peft")
    anvil("export", ckpt, "--out", hf_dir, "--dtype", "f32")
    cfg = json.load(open(os.path.join(peft_dir, "adapter_config.json")))
    adapter = load_file(os.path.join(peft_dir, "adapter_model.safetensors"))
    module = "block_sparse_moe" if name == "mixtral" else "mlp"
    leaves = ["w1", "w3", "w2"] if name == "mixtral" else ["gate_proj", "up_proj", "down_proj"]
    assert set(leaves) <= set(cfg["target_modules"]), cfg["target_modules"]
    for l in sparse:
        for e in range(experts):
            for leaf in leaves:
                for ab in "AB":
                    key = f"base_model.model.model.layers.{l}.{module}.experts.{e}.{leaf}.lora_{ab}.weight"
                    assert key in adapter, key
    base = load_file(os.path.join(model, "model.safetensors"))
    merged = load_file(os.path.join(hf_dir, "model.safetensors"))
    assert sorted(base) == sorted(merged)
    scale = cfg["lora_alpha"] / cfg["r"]
    adapted = 0
    for key, w in base.items():
        prefix = "base_model.model." + key[: -len(".weight")]
        if prefix + ".lora_A.weight" in adapter:
            want = w + scale * adapter[prefix + ".lora_B.weight"] @ adapter[prefix + ".lora_A.weight"]
            err = np.abs(merged[key] - want).max() / np.abs(want).max()
            assert err < 1e-6, (key, err)
            adapted += 1
        else:
            assert np.array_equal(merged[key], w), key
    assert adapted == len(adapter) // 2, (adapted, len(adapter))
    print(f"{name}: resume exact, {len(adapter)} adapter tensors, {adapted} weights merged, "
          f"aux loss {steps[0]['aux_loss']:.4f} -> {steps[-1]['aux_loss']:.4f}, "
          f"expert load {steps[-1]['expert_load']}")
    nf4_run = check_quantized(name, model, tmp, steps)
    if REFERENCE:
        check_reference(name, model, peft_dir, hf_dir)
        check_bnb_checkpoint(name, model, tmp, nf4_run)
    return model


def check_quantized(name, model, tmp, steps):
    """QLoRA on the experts: model.quant nf4 quantizes every expert's weights too (the router
    stays f32); the run trains within a few percent of the unquantized losses and exports."""
    out = os.path.join(tmp, f"{name}_nf4")
    log = train(model, out, "model.quant=nf4")
    assert "linear weights nf4" in log, log
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    losses = [r["loss"] for r in rows if "loss" in r]
    for a, b in zip(losses, [r["loss"] for r in steps]):
        assert abs(a - b) / b < 0.05, (losses, [r["loss"] for r in steps])
    anvil("export", os.path.join(out, "checkpoints", "step_8.h5"), "--out", os.path.join(tmp, f"{name}_nf4_hf"))
    print(f"{name}: nf4 base (experts included): losses within 5% of the f32 run, e.g. {losses[-1]:.4f} vs "
          f"{steps[-1]['loss']:.4f}; merged export written")
    return out


def check_bnb_checkpoint(name, model, tmp, nf4_run):
    """The model as a QLoRA user saves it: transformers with BitsAndBytesConfig (NF4, double
    quantization) and save_pretrained. transformers 5 packs the attention projections only
    (its routed experts are fused parameters, not Linear layers, and the router stays dense)
    and writes the expert count as num_local_experts. anvil with model.quant nf4 keeps the
    packed codes and quantizes the dense experts at load, so the run is the nf4 run of the
    dense model, bit for bit (bitsandbytes' NF4 = anvil's)."""
    bnb_dir = os.path.join(tmp, f"{name}_bnb")
    packed = save_with_transformers_bnb(model, bnb_dir)
    cfg = json.load(open(os.path.join(bnb_dir, "config.json")))
    assert cfg["quantization_config"]["quant_method"] == "bitsandbytes", cfg
    spec = SPECS[name]
    n_experts = spec.get("num_experts", spec.get("num_local_experts"))
    assert cfg.get("num_experts", cfg.get("num_local_experts")) == n_experts, cfg
    packed = sorted({k.split(".")[-2] for k in packed})
    assert packed == ["k_proj", "o_proj", "q_proj", "v_proj"], packed
    out = os.path.join(tmp, f"{name}_bnb_run")
    train(bnb_dir, out, "model.quant=nf4")
    got = [json.loads(line)["loss"] for line in open(os.path.join(out, "metrics.jsonl")) if '"loss"' in line]
    want = [json.loads(line)["loss"] for line in open(os.path.join(nf4_run, "metrics.jsonl")) if '"loss"' in line]
    assert got == want, (got, want)
    a = open(os.path.join(out, "adapter", "adapter_model.safetensors"), "rb").read()
    b = open(os.path.join(nf4_run, "adapter", "adapter_model.safetensors"), "rb").read()
    assert a == b, f"{name}: the bitsandbytes checkpoint's adapter differs from the nf4 run's"
    print(f"{name}: transformers' bitsandbytes checkpoint (packed {packed}, experts and router dense, "
          f"{'num_local_experts' if 'num_local_experts' in cfg else 'num_experts'}) trains as the nf4 run, bit for bit")


def check_reference(name, model, peft_dir, hf_dir):
    transformers.logging.set_verbosity_error()
    ids = torch.tensor([[(i * 37 + 11) % 300 for i in range(24)], [(i * 53 + 7) % 300 for i in range(24)]])
    with torch.no_grad():
        want = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()(input_ids=ids).logits
        base = transformers.AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
        plain = base(input_ids=ids).logits.clone()
        got = PeftModel.from_pretrained(base, peft_dir).eval()(input_ids=ids).logits
    err = float((got - want).abs().max() / want.abs().max())
    effect = float((want - plain).abs().max() / plain.abs().max())
    assert err < 1e-5, f"{name}: PEFT's logits differ from the merged model's by {err:.2e}"
    assert effect > 1e-3, f"{name}: the adapter changes the logits by only {effect:.2e}"
    print(f"{name}: transformers + PEFT load the adapter; its logits = the merged model's (rel {err:.1e}), "
          f"adapter effect {effect:.3f}")


def check_errors(tmp, model):
    out = os.path.join(tmp, "bad")
    log = train(model, out, "lora.dropout=0.1", expect=2)
    assert "lora.dropout" in log and "expert" in log, log
    log = train(model, out, "lora.targets=[gate_proj,up_proj]", expect=2)
    assert "lora.targets" in log and "experts" in log, log
    # The CUDA backend runs MoE blocks (kernels/moe.cu): it refuses only this tiny model's head_dim.
    log = train(model, out, "parallel.backend=cuda", expect=2)
    assert "head_dim" in log and "mixture-of-experts" not in log, log
    print("dropout on experts and targets adapting nothing are refused (exit 2); the CUDA backend only for head_dim")


def main():
    with tempfile.TemporaryDirectory(prefix="anvil_moe_") as tmp:
        check_family("qwen3_moe", tmp)
        mixtral = check_family("mixtral", tmp)
        if not REFERENCE:
            check_errors(tmp, mixtral)


if __name__ == "__main__":
    main()
