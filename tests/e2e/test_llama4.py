"""Llama 4 text end to end: anvil trains LoRA on a tiny llama4_text model (attention, dense
MLPs, shared experts and every routed expert adapted), exports the merged model, and the
export's fused expert tensors are the base's plus each expert's scale·B·A transposed into
transformers' x·W layout (gate_up_proj (E, H, 2I): gate in the first I columns; down_proj
(E, I, H)); every other adapted weight is W + scale·B·A, the rest the base's bytes. The PEFT
export refuses the routed experts' adapters by name (no PEFT form for them is written yet).
With --reference (needs scripts/setup.sh --reference, else exit 77): transformers'
Llama4ForCausalLM loads the merged model, holds exactly the merge computed here, and its
logits are finite and differ from the base's. (That anvil's forward with the adapter is
transformers' forward is the golden test's part: tests/golden/llama4.)

Usage: test_llama4.py [--reference]   (ANVIL_BIN, ANVIL_SOURCE_DIR from the environment)"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file

REFERENCE = "--reference" in sys.argv[1:]
if REFERENCE:
    try:
        import torch
        import transformers
    except ImportError as e:
        print(f"SKIP: the Python references are not installed ({e}); run scripts/setup.sh --reference")
        sys.exit(77)

ANVIL = os.environ["ANVIL_BIN"]
SRC = os.environ["ANVIL_SOURCE_DIR"]
CONFIG = os.path.join(SRC, "configs", "demo-cpu.yaml")
SPEC = {"model_type": "llama4_text", "hidden_size": 48, "intermediate_size": 24, "intermediate_size_mlp": 56,
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


def main():
    with tempfile.TemporaryDirectory(prefix="anvil_llama4_") as tmp:
        spec_path = os.path.join(tmp, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(SPEC, f)
        model = os.path.join(tmp, "model")
        anvil("init-model", "--spec", spec_path, "--seed", "4", "--init-std", "0.1", "--out", model)
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
        # PEFT cannot take the per-expert adapters of Llama 4's fused experts: refused by name.
        log = anvil("export", ckpt, "--out", peft_dir, "--format", "peft", expect=2)
        assert "experts" in log and "--format hf" in log, log
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
        print(f"llama4: losses {np.round(losses, 4).tolist()}, {used} adapters merged "
              f"({n_expert} into the fused experts)")
        if REFERENCE:
            check_reference(model, hf_dir, want)


def check_reference(model, hf_dir, want):
    transformers.logging.set_verbosity_error()
    ids = torch.tensor([[(i * 37 + 11) % 300 for i in range(40)], [(i * 53 + 7) % 300 for i in range(40)]])
    with torch.no_grad():
        hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
        assert type(hf).__name__ == "Llama4ForCausalLM", type(hf).__name__
        state = hf.state_dict()
        for k, w in want.items():  # what transformers holds is the merge computed above
            assert torch.allclose(state[k], torch.from_numpy(w), rtol=0, atol=1e-6 * float(np.abs(w).max())), k
        got = hf(input_ids=ids).logits
        plain = transformers.AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()(
            input_ids=ids).logits
    effect = float((got - plain).abs().max() / plain.abs().max())
    assert torch.isfinite(got).all() and effect > 1e-3, effect
    print(f"llama4: transformers loads the merged export (Llama4ForCausalLM), adapter effect {effect:.3f}")


if __name__ == "__main__":
    main()
