"""Llama 4 text end to end: anvil trains LoRA on a tiny llama4_text model (attention, dense
MLPs, shared experts and every routed expert adapted), exports the merged model, and the
export's fused expert tensors are the base's plus each expert's scale·B·A transposed into
transformers' x·W layout (gate_up_proj (E, H, 2I): gate in the first I columns; down_proj
(E, I, H)); every other adapted weight is W + scale·B·A, the rest the base's bytes. The PEFT
export writes the routed experts' adapters in PEFT's target_parameters form (gate_up as one
rank-2r LoRA per expert, down rank r, both transposed), checked here against the merge.
With --reference (needs scripts/setup.sh --reference, else exit 77): transformers'
Llama4ForCausalLM loads the merged model, holds exactly the merge computed here, and its
logits are finite and differ from the base's and equal anvil's own forward and KV-cache
logits on the merged model (logits_tool); PEFT loads the exported adapter onto the base
(PeftModel.from_pretrained) and gives the merged model's logits; the model saved by
transformers with BitsAndBytesConfig (NF4) trains with model.quant nf4 exactly as the dense
model's nf4 run. (That anvil's forward with the adapter is
transformers' forward is the golden test's part: tests/golden/llama4.)

Usage: test_llama4.py [--reference [LOGITS_TOOL]]   (ANVIL_BIN, ANVIL_SOURCE_DIR from the environment)"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

import import_checks

sys.path.insert(0, os.path.join(os.environ["ANVIL_SOURCE_DIR"], "scripts", "fixtures"))
from quant_checkpoint import save_with_transformers_bnb  # noqa: E402

REFERENCE = "--reference" in sys.argv[1:]
# logits_tool (tests/e2e/logits_tool.cpp): anvil's own forward and KV-cache logits of a model dir
LOGITS_TOOL = next((a for a in sys.argv[1:] if a != "--reference"), None)
if REFERENCE:
    try:
        import peft
        import torch
        import transformers
        from peft import PeftModel
    except ImportError as e:
        print(f"SKIP: the Python references are not installed ({e}); run scripts/setup.sh --reference")
        sys.exit(77)

ANVIL = os.environ["ANVIL_BIN"]
SRC = os.environ["ANVIL_SOURCE_DIR"]
CONFIG = os.path.join(SRC, "configs", "demo-cpu.yaml")
SPEC = {"model_type": "llama4_text", "hidden_size": 48, "intermediate_size": 20, "intermediate_size_mlp": 56,
        "num_hidden_layers": 4, "num_attention_heads": 3, "num_key_value_heads": 1, "head_dim": 16,
        "vocab_size": 320, "num_local_experts": 5, "num_experts_per_tok": 1, "interleave_moe_layer_step": 2,
        "no_rope_layers": [1, 1, 0, 1], "attention_chunk_size": 16, "use_qk_norm": True,
        "attn_temperature_tuning": True, "floor_scale": 8, "attn_scale": 0.1, "max_position_embeddings": 128,
        "rope_theta": 500000.0}
TARGETS = "lora.targets=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,shared_expert,experts]"


def anvil(*args, expect=0):
    p = subprocess.run([ANVIL, *args], capture_output=True, text=True, cwd=SRC)
    assert p.returncode == expect, f"anvil {' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout + p.stderr


def make_model(tmp, spec=SPEC):
    """The tiny Llama 4 model of `spec` in tmp/model (random weights, std 0.1, seed 4)."""
    spec_path = os.path.join(tmp, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    model = os.path.join(tmp, "model")
    anvil("init-model", "--spec", spec_path, "--seed", "4", "--init-std", "0.1", "--out", model)
    return model


def main():
    with tempfile.TemporaryDirectory(prefix="anvil_llama4_") as tmp:
        model = make_model(tmp)
        out = os.path.join(tmp, "run")
        sets = [f"output_dir={out}", f"model.path={model}", "train.steps=4", "train.warmup_steps=1",
                "train.eval_every=0", "checkpoint.every=4", "lora.dropout=0", TARGETS, "log.every=2"]
        args = ["train", CONFIG]
        for s in sets:
            args += ["--set", s]
        anvil(*args)
        rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
        losses = [r["loss"] for r in rows if "loss" in r]
        assert len(losses) == 4 and all(np.isfinite(losses)), rows
        ckpt = os.path.join(out, "checkpoints", "step_4.h5")
        peft_dir, hf_dir = os.path.join(tmp, "peft"), os.path.join(tmp, "hf")
        anvil("export", ckpt, "--out", peft_dir, "--format", "peft")
        anvil("export", ckpt, "--out", hf_dir, "--dtype", "f32")
        # the run's own adapter directory (anvil's per-expert names, which anvil reads back)
        cfg = json.load(open(os.path.join(out, "adapter", "adapter_config.json")))
        adapter = load_file(os.path.join(out, "adapter", "adapter_model.safetensors"))
        scale = cfg["lora_alpha"] / cfg["r"]
        base = load_file(os.path.join(model, "model.safetensors"))
        merged = load_file(os.path.join(hf_dir, "model.safetensors"))
        assert sorted(base) == sorted(merged)
        want = {k: v.copy() for k, v in base.items()}
        I = SPEC["intermediate_size"]
        used = 0
        for name in adapter:
            if not name.endswith(".lora_A.weight"):
                continue
            module = name[len("base_model.model."):-len(".lora_A.weight")]
            delta = scale * adapter[name.replace("lora_A", "lora_B")] @ adapter[name]  # (out, in)
            used += 1
            if ".experts." not in module:
                want[module + ".weight"] += delta
                continue
            prefix, e, leaf = module.rsplit(".", 2)  # model.layers.L.feed_forward.experts, E, gate_proj
            e = int(e)
            if leaf == "down_proj":
                want[prefix + ".down_proj"][e] += delta.T
            else:
                k = 0 if leaf == "gate_proj" else 1
                want[prefix + ".gate_up_proj"][e][:, k * I:(k + 1) * I] += delta.T
        assert used == len(adapter) // 2
        n_expert = sum(".experts." in n for n in adapter) // 2
        assert n_expert == 2 * 5 * 3, n_expert  # 2 MoE layers, 5 experts, gate/up/down
        assert sum(".shared_expert." in n for n in adapter) == 2 * 3 * 2
        for key, w in want.items():
            err = np.abs(merged[key] - w).max() / max(np.abs(w).max(), 1e-30)
            assert err < 1e-6, (key, err)
        check_peft_fused(peft_dir, base, want)
        print(f"llama4: losses {np.round(losses, 4).tolist()}, {used} adapters merged "
              f"({n_expert} into the fused experts)")
        if REFERENCE:
            check_reference(model, hf_dir, peft_dir, want)
            check_bnb_checkpoint(tmp, model)


def check_bnb_checkpoint(tmp, model):
    """The model as a QLoRA user saves it (transformers, BitsAndBytesConfig NF4 with double
    quantization, save_pretrained): transformers 5 packs the attention, the dense layers' MLPs
    and the shared experts, and leaves the fused routed experts and the router dense. anvil
    with model.quant nf4 keeps the packed codes and quantizes the rest as it would at load, so
    the run equals the dense model's nf4 run bit for bit."""
    bnb_dir = os.path.join(tmp, "bnb")
    packed = save_with_transformers_bnb(model, bnb_dir)
    with safe_open(os.path.join(bnb_dir, "model.safetensors"), "np") as f:
        dense = {k for k in f.keys() if ".experts." in k or ".router." in k}
    leaves = sorted({".".join(k.split(".")[-3:-1]) for k in packed})
    assert leaves == ["feed_forward.down_proj", "feed_forward.gate_proj", "feed_forward.up_proj",
                      "self_attn.k_proj", "self_attn.o_proj", "self_attn.q_proj", "self_attn.v_proj",
                      "shared_expert.down_proj", "shared_expert.gate_proj", "shared_expert.up_proj"], leaves
    assert dense and not dense & packed, sorted(dense)
    runs = {}
    for name, path in (("dense", model), ("bnb", bnb_dir)):
        out = os.path.join(tmp, f"nf4_{name}")
        sets = [f"output_dir={out}", f"model.path={path}", "model.quant=nf4", "train.steps=4", "train.warmup_steps=1",
                "train.eval_every=0", "checkpoint.every=0", "lora.dropout=0", TARGETS, "log.every=1"]
        anvil("train", CONFIG, *[a for s in sets for a in ("--set", s)])
        losses = [json.loads(line)["loss"] for line in open(os.path.join(out, "metrics.jsonl")) if '"loss"' in line]
        runs[name] = (losses, open(os.path.join(out, "adapter", "adapter_model.safetensors"), "rb").read())
    assert runs["bnb"][0] == runs["dense"][0], (runs["bnb"][0], runs["dense"][0])
    assert runs["bnb"][1] == runs["dense"][1], "the bitsandbytes checkpoint's adapter differs from the nf4 run's"
    print(f"llama4: transformers' bitsandbytes checkpoint ({len(packed)} packed weights; experts and router dense) "
          f"trains as the dense model's nf4 run, bit for bit (losses {np.round(runs['bnb'][0], 4).tolist()})")


def check_peft_fused(peft_dir, base, want):
    """The PEFT export's target_parameters tensors give each expert's delta as PEFT reads a
    3-D parameter, (experts, out, in): delta[e] = scale · B_e A_e in the parameter's own
    layout; gate_up has rank 2r and alpha 2·alpha (the same scale)."""
    cfg = json.load(open(os.path.join(peft_dir, "adapter_config.json")))
    t = load_file(os.path.join(peft_dir, "adapter_model.safetensors"))
    assert cfg["target_parameters"] == ["feed_forward.experts.gate_up_proj", "feed_forward.experts.down_proj"], cfg
    assert cfg["rank_pattern"] == {"gate_up_proj": 2 * cfg["r"]}, cfg
    E = SPEC["num_local_experts"]
    for l in (1, 3):
        p = f"model.layers.{l}.feed_forward.experts."
        for inner, name, R, alpha in ((True, "gate_up_proj", 2 * cfg["r"], 2 * cfg["lora_alpha"]),
                                      (False, "down_proj", cfg["r"], cfg["lora_alpha"])):
            at = "base_model.model." + p + ("base_layer." if inner else "")
            A = t[at + "lora_A.weight"].reshape(E, R, -1)           # (E, R, in)
            B = t[at + "lora_B.weight"].reshape(-1, R, E)           # (out, R, E)
            for e in range(E):
                d = (alpha / R) * B[:, :, e] @ A[e]
                got = d                                             # PEFT's einsum "o r e, e r i -> e o i"
                ref = want[p + name][e] - base[p + name][e]  # float32 rounding of W's size
                tol = 1e-6 * np.abs(want[p + name][e]).max()
                assert np.abs(got - ref).max() <= tol, (l, name, e, np.abs(got - ref).max())
    assert not any(".experts.0." in k for k in t), "per-expert names in the PEFT export"


def check_reference(model, hf_dir, peft_dir, want):
    transformers.logging.set_verbosity_error()
    ids = torch.tensor([[(i * 37 + 11) % 300 for i in range(40)], [(i * 53 + 7) % 300 for i in range(40)]])
    with torch.no_grad():
        hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
        assert type(hf).__name__ == "Llama4ForCausalLM", type(hf).__name__
        state = hf.state_dict()
        for k, w in want.items():  # what transformers holds is the merge computed above
            assert torch.allclose(state[k], torch.from_numpy(w), rtol=0, atol=1e-6 * float(np.abs(w).max())), k
        got = hf(input_ids=ids).logits
        base = transformers.AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
        plain = base(input_ids=ids).logits.clone()
        peft_logits = PeftModel.from_pretrained(base, peft_dir).eval()(input_ids=ids).logits
    effect = float((got - plain).abs().max() / plain.abs().max())
    assert torch.isfinite(got).all() and effect > 1e-3, effect
    err = float((peft_logits - got).abs().max() / got.abs().max())
    assert err < 1e-5, f"PEFT's logits differ from the merged model's by {err:.2e}"
    import_checks.check_logits(hf_dir, LOGITS_TOOL)  # anvil's forward and generation = transformers'
    print(f"llama4: transformers loads the merged export (Llama4ForCausalLM), adapter effect {effect:.3f}; "
          f"PEFT {peft.__version__} loads the target_parameters adapter: logits = the merged model's (rel {err:.1e})")


if __name__ == "__main__":
    main()
