#!/usr/bin/env python3
"""Golden reference outputs for anvil's LoRA training path (Llama, Qwen3, Qwen3-MoE, Mixtral, QLoRA).

An independent implementation to test the C++ code against: Hugging Face
`LlamaForCausalLM` / `Qwen3ForCausalLM` / `Qwen3MoeForCausalLM` / `MixtralForCausalLM` + PEFT
LoRA, fp32 on CPU, eager attention, one thread. The mixture-of-experts specifics (per-expert
files vs transformers 5's fused experts, per-expert LoRA vs PEFT's fused LoRA, the router's
auxiliary loss) live in moe_lora.py (layouts, index maps, routing) and moe_peft.py (PEFT).
The QLoRA case loads the model through transformers' BitsAndBytesConfig (NF4, bitsandbytes'
Linear4bit under PEFT).

For every case below the script
  1. writes `spec.json` (an HF config.json-style model shape) into tests/golden/<case>/,
  2. runs `anvil init-model --spec spec.json --seed SEED --dtype f32` into a temporary
     directory (anvil's weights are a deterministic function of (seed, tensor name,
     element index), so the C++ tests rebuild the identical model at test time and the
     weights are never committed),
  3. loads that directory with transformers and checks it loaded exactly what anvil
     wrote (every tensor bit for bit, tied/untied head, llama3 RoPE actually applied),
  4. wraps it with PEFT LoRA on all seven projections, overwrites every lora_A/lora_B
     with seeded nonzero values (PEFT's zero B would make every A gradient zero) and
     saves them with PEFT's own save_pretrained (adapter_config.json,
     adapter_model.safetensors),
  5. runs a fixed batch and writes golden.safetensors: input_ids, targets, logits, loss,
     grad.<adapter tensor name> for every LoRA A and B, and the loss / pre-clip gradient
     norm before each of 5 AdamW steps (+ the adapter after those steps), and case.json.

Loss convention (the same as anvil's): targets[b, t] is the token to predict after
position t (already aligned, no shift); -100 is ignored; loss = sum of token
cross-entropies / number of counted tokens. MoE cases add router_aux_loss_coef * aux_loss,
transformers' load_balancing_loss_func over the router logits of all MoE layers (no mask).

Regenerate (from the repository root, after `ninja -C build anvil`):

    .venv/bin/python scripts/reference/make_golden.py --anvil build/src/cli/anvil --out tests/golden

`--check` recomputes everything and compares with the committed files instead of
writing (tolerance 1e-5 relative): a changed library version shows up there.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import peft
import torch
import transformers
from safetensors.torch import load_file, save_file

import moe_lora
import moe_peft

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from quant_checkpoint import nf4_values_by_layout  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
B = 2
STEPS = 5
ADAMW = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)

# Case 1 is the base; the others override it. max_norm is picked per case (by looking at
# the printed norms) so that clipping is active on some steps and, where possible, not on
# others: both branches of the clip get tested.
BASE_SPEC = {
    "model_type": "llama", "hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 320,
    "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "tie_word_embeddings": False, "hidden_act": "silu",
}
CASES = {
    "gqa_untied": dict(spec={}, seed=11, T=16, r=4, alpha=8, rslora=False, max_norm=0.05),
    "tied": dict(spec={"tie_word_embeddings": True}, seed=12, T=16, r=8, alpha=16, rslora=True, max_norm=1.9),
    "odd_mqa": dict(spec={"hidden_size": 72, "num_attention_heads": 3, "num_key_value_heads": 1,
                          "intermediate_size": 200, "num_hidden_layers": 3, "vocab_size": 301},
                    seed=13, T=16, r=3, alpha=5, rslora=False, max_norm=0.8),
    # head_dim 16 and theta 500000 give wavelengths 6.3, 32.4, 167, ...: with
    # original_max_position_embeddings 64 (bands: < 16 kept, 16..64 smoothed, > 64
    # divided by the factor) every one of llama3's three branches is used.
    "llama3_rope": dict(spec={"rope_theta": 500000.0,
                              "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}},
                        seed=14, T=64, r=4, alpha=8, rslora=False, max_norm=0.195),
}
# The other families: complete specs (HF hub config.json keys), odd sizes on purpose.
QWEN3_SPEC = {
    "model_type": "qwen3", "hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 24,  # 4*24 != 64: head_dim explicit
    "vocab_size": 320, "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
    "tie_word_embeddings": False, "hidden_act": "silu", "attention_bias": False,
}
QWEN3_MOE_SPEC = {
    "model_type": "qwen3_moe", "hidden_size": 96, "num_hidden_layers": 2, "num_attention_heads": 3,
    "num_key_value_heads": 1, "head_dim": 32, "vocab_size": 301, "max_position_embeddings": 256,
    "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": False, "hidden_act": "silu",
    "attention_bias": False, "num_experts": 6, "num_experts_per_tok": 2, "moe_intermediate_size": 40,
    "intermediate_size": 120, "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [],
    "output_router_logits": True, "router_aux_loss_coef": 0.01,
}
MIXTRAL_SPEC = {
    "model_type": "mixtral", "hidden_size": 64, "intermediate_size": 48, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 301, "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5, "rope_theta": 1000000.0, "tie_word_embeddings": False, "hidden_act": "silu",
    "num_local_experts": 5, "num_experts_per_tok": 2, "sliding_window": None, "router_jitter_noise": 0.0,
    "output_router_logits": True, "router_aux_loss_coef": 0.02,
}
CASES.update({
    # norm_std: norm weights 1 + N(0, 0.2), so that the q/k norms' weights, and their place
    # before RoPE, change the result (at ones a per-head RMSNorm commutes with RoPE).
    "qwen3_dense": dict(spec=QWEN3_SPEC, seed=21, T=16, r=4, alpha=8, rslora=False, max_norm=0.68, norm_std=0.2),
    "qwen3_moe": dict(spec=QWEN3_MOE_SPEC, seed=32, T=24, r=3, alpha=7, rslora=False, max_norm=0.594, norm_std=0.2),
    # decoder_sparse_step 2 over 4 layers: dense, MoE, dense, MoE (intermediate_size is then
    # the dense MLP's width); top-k weights not renormalised.
    "qwen3_moe_sparse_step": dict(spec=dict(QWEN3_MOE_SPEC, num_hidden_layers=4, decoder_sparse_step=2,
                                            norm_topk_prob=False),
                                  seed=34, T=16, r=4, alpha=8, rslora=False, max_norm=1.02, norm_std=0.2),
    "mixtral": dict(spec=MIXTRAL_SPEC, seed=36, T=16, r=2, alpha=4, rslora=False, max_norm=0.272, norm_std=0.2),
    # QLoRA: the seven projections of every layer NF4 with double quantization, loaded the way
    # users do it (transformers' BitsAndBytesConfig), PEFT LoRA on the bitsandbytes Linear4bit
    # layers. Every in_features is a multiple of 64 (intermediate 192): bitsandbytes 0.50.2's
    # CPU dequantize_4bit expands the blocks of a weight whose rows are not whole blocks
    # wrongly ((64, 176) is off by 0.1; asserted below for each weight), and its forward and
    # backward go through that dequantize.
    "qlora_nf4": dict(spec={"intermediate_size": 192}, seed=15, T=16, r=4, alpha=8, rslora=False, max_norm=0.6011,
                      quant="nf4"),
})
REGEN = ".venv/bin/python scripts/reference/make_golden.py --anvil build/src/cli/anvil --out tests/golden"


def make_model_dir(anvil, spec_path, seed, out, python_weights=False, norm_std=0.0):
    if python_weights:  # development only: see moe_lora.python_model_dir
        with open(spec_path) as f:
            moe_lora.python_model_dir(json.load(f), seed, out)
        return
    cmd = [anvil, "init-model", "--spec", spec_path, "--seed", str(seed), "--out", out, "--dtype", "f32"]
    if norm_std:  # norm weights 1 + N(0, norm_std): the norms' weights (and where they act) must matter
        cmd += ["--norm-std", str(norm_std)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def check_weights_loaded(model, model_dir, tied, lay):
    """transformers must hold exactly what anvil wrote, with the head tied iff asked (per-expert
    tensors fused by our own code first: transformers 5 fuses them at load)."""
    on_disk = {}
    for name in sorted(os.listdir(model_dir)):
        if name.endswith(".safetensors"):
            on_disk.update(load_file(os.path.join(model_dir, name)))
    if lay is not None:
        on_disk = moe_lora.fuse_disk_weights(on_disk, lay)
    state = model.state_dict()
    for name, t in on_disk.items():
        assert name in state, f"{name} written by anvil but not in the HF model"
        assert torch.equal(state[name], t), f"{name}: HF's copy differs from the file"
    missing = set(state) - set(on_disk)
    head_shared = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    if tied:  # anvil writes no lm_head.weight; HF must share the embedding
        assert missing == {"lm_head.weight"} and head_shared, (missing, head_shared)
    else:
        assert not missing and not head_shared, (missing, head_shared)


def llama3_inv_freq(theta, dim, p):
    """Our own float64 llama3 RoPE frequencies (Meta's reference formula)."""
    inv = 1.0 / theta ** (np.arange(0, dim, 2) / dim)
    wavelen = 2 * math.pi / inv
    lo_w = p["original_max_position_embeddings"] / p["low_freq_factor"]
    hi_w = p["original_max_position_embeddings"] / p["high_freq_factor"]
    smooth = (p["original_max_position_embeddings"] / wavelen - p["low_freq_factor"]) / (
        p["high_freq_factor"] - p["low_freq_factor"])
    out = np.where(wavelen > lo_w, inv / p["factor"], (1 - smooth) * inv / p["factor"] + smooth * inv)
    out = np.where(wavelen < hi_w, inv, out)
    bands = tuple(int(m.sum()) for m in (wavelen < hi_w, (wavelen >= hi_w) & (wavelen <= lo_w), wavelen > lo_w))
    return inv, out, bands


def check_rope(model, spec):
    rot = model.model.rotary_emb
    dim = spec.get("head_dim") or spec["hidden_size"] // spec["num_attention_heads"]
    hf = rot.inv_freq.double().numpy()
    scaling = spec.get("rope_scaling")
    if scaling is None:
        plain = 1.0 / spec["rope_theta"] ** (np.arange(0, dim, 2) / dim)
        assert np.allclose(hf, plain, rtol=1e-6), "unscaled RoPE frequencies differ"
        return
    plain, scaled, bands = llama3_inv_freq(spec["rope_theta"], dim, scaling)
    assert rot.rope_type == "llama3", rot.rope_type
    assert rot.attention_scaling == 1.0, rot.attention_scaling
    assert all(n > 0 for n in bands), f"a llama3 band is empty: {bands}"
    assert not np.allclose(hf, plain, rtol=1e-3), "transformers ignored rope_scaling"
    assert np.allclose(hf, scaled, rtol=1e-6), (hf, scaled)
    print(f"  llama3 rope: bands kept/smoothed/divided = {bands}, inv_freq {np.array2string(hf, precision=4)}")


def make_batch(rng, vocab, T):
    """Random tokens; targets aligned per position (next token, a random last one),
    with a 5-token "prompt" of row 0 and a few scattered positions ignored."""
    ids = rng.integers(0, vocab, size=(B, T + 1))
    input_ids = ids[:, :T].astype(np.int32)
    targets = ids[:, 1:].astype(np.int32)
    targets[0, :5] = -100
    for b, t in [(0, T // 2), (1, 0), (1, T // 3), (1, T - 1)]:
        targets[b, t] = -100
    return input_ids, targets


def lora_params(model):
    """(adapter file name, parameter) of every LoRA weight, in a fixed order."""
    out = []
    for name, p in model.named_parameters():
        if "lora_" in name:
            out.append((name.replace(".default.", "."), p))  # PEFT drops the adapter name on save
    return out


def lora_value(name, shape, rng):
    """Nonzero, well-scaled values: A ~ U(+-1/sqrt(in)), B ~ N(0, 0.02)."""
    if ".lora_A." in name:
        bound = 1.0 / math.sqrt(shape[1])
        v = rng.uniform(-bound, bound, size=tuple(shape))
    else:
        v = rng.normal(0.0, 0.02, size=tuple(shape))
    return torch.from_numpy(v.astype(np.float32))


def init_lora(params, rng):
    with torch.no_grad():
        for name, p in params:
            p.copy_(lora_value(name, p.shape, rng))


def masked_mean_ce(logits, targets):
    count = (targets != -100).sum()
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).long(),
                                           ignore_index=-100, reduction="sum")
    return ce / count


ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM",
                 "mixtral": "MixtralForCausalLM"}


def load_model(model_dir, spec, quant=None):
    kw = {}
    if quant == "nf4":  # the QLoRA recipe: 4-bit NF4, double quantization, compute in fp32
        kw = dict(device_map="cpu", quantization_config=transformers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32))
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                              attn_implementation="eager", **kw)
    assert type(model).__name__ == ARCHITECTURES[spec["model_type"]], type(model).__name__
    model.eval()  # no dropout anywhere (there is none in these models, but be explicit)
    return model


class DenseAdapter:
    """PEFT's LoRA tensors one to one (no fused experts): the interface of moe_peft.MoeAdapter."""

    def __init__(self, pm):
        self.pairs = lora_params(pm)
        self.params = [p for _, p in self.pairs]

    def named(self, grads=False):
        return {n: (p.grad if grads else p.detach()).clone() for n, p in self.pairs}

    def separate_gate_up(self):
        pass


def dense_lora(model, cfg, case_dir, rng):
    """PEFT LoRA on the seven projections, seeded, saved with PEFT's own save_pretrained."""
    lcfg = peft.LoraConfig(r=cfg["r"], lora_alpha=cfg["alpha"], use_rslora=cfg["rslora"], lora_dropout=0.0,
                           target_modules=TARGETS, bias="none", task_type="CAUSAL_LM")
    pm = peft.get_peft_model(model, lcfg)
    adapter = DenseAdapter(pm)
    init_lora(adapter.pairs, rng)

    # PEFT's own files, so the C++ side reads exactly the real format.
    # (save_embedding_layers=False: no embedding is adapted, and "auto" would look the
    # base model up on the hub.)
    pm.save_pretrained(case_dir, safe_serialization=True, save_embedding_layers=False)
    readme = os.path.join(case_dir, "README.md")  # a model-card stub nobody needs
    if os.path.exists(readme):
        os.remove(readme)
    # PEFT keeps target_modules as a set, so its order in the file follows Python's string
    # hashing and changes from run to run; sort it so regenerating gives identical bytes.
    config_path = os.path.join(case_dir, "adapter_config.json")
    with open(config_path) as f:
        adapter_config = json.load(f)
    assert sorted(adapter_config["target_modules"]) == sorted(TARGETS), adapter_config["target_modules"]
    adapter_config["target_modules"] = sorted(TARGETS)
    with open(config_path, "w") as f:
        f.write(json.dumps(adapter_config, indent=2, sort_keys=True))  # PEFT's own formatting
    return pm, adapter, adapter.named()


def check_nf4_base(model, model_dir):
    """Every projection a bitsandbytes Linear4bit whose codes are bitsandbytes' quantize_4bit of
    the file's weight, and whose dequantize_4bit (what its forward and backward multiply by)
    equals the values its state gives by the documented layout; the rest as on disk.
    Returns the number of 4-bit weights."""
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnbf
    on_disk = load_file(os.path.join(model_dir, "model.safetensors"))
    n = 0
    for name, mod in model.named_modules():
        if not isinstance(mod, bnb.nn.Linear4bit):
            continue
        # no inference-only repacking of the weight for a bf16 CPU kernel (AVX512-BF16
        # machines do it in eval mode): the reference must not depend on the CPU it ran on
        mod.support_avx512bf16_for_cpu = False
        w, st = mod.weight, mod.weight.quant_state
        assert name.rsplit(".", 1)[-1] in TARGETS and st.nested and st.blocksize == 64, name
        want_q, _ = bnbf.quantize_4bit(on_disk[name + ".weight"], blocksize=64, compress_statistics=True,
                                       quant_type="nf4")
        assert torch.equal(w.data.reshape(-1), want_q.reshape(-1)), name
        by_layout = nf4_values_by_layout(w.data, st, tuple(st.shape))
        assert torch.equal(bnbf.dequantize_4bit(w.data, st), by_layout), f"{name}: dequantize_4bit != layout"
        n += 1
    for name, t in on_disk.items():
        if not name.endswith("_proj.weight"):
            assert torch.equal(model.state_dict()[name], t), name
    return n


def model_loss(pm, ids, tgt, spec):
    """(logits, loss, ce, aux, router logits): loss = ce (+ coef * aux for MoE)."""
    out = pm(input_ids=ids)  # no labels: HF would shift them
    ce = masked_mean_ce(out.logits, tgt)
    if "router_aux_loss_coef" not in spec:
        return out.logits, ce, ce, None, None
    return out.logits, ce + spec["router_aux_loss_coef"] * out.aux_loss, ce, out.aux_loss, out.router_logits


def run_case(name, cfg, anvil, case_dir, work, python_weights=False):
    spec = dict(BASE_SPEC, **cfg["spec"]) if cfg["spec"].get("model_type", "llama") == "llama" else dict(cfg["spec"])
    lay = moe_lora.moe_layout(spec)
    os.makedirs(case_dir, exist_ok=True)
    spec_path = os.path.join(case_dir, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f, indent=2, sort_keys=True)
        f.write("\n")
    model_dir = os.path.join(work, name)
    make_model_dir(anvil, spec_path, cfg["seed"], model_dir, python_weights, cfg.get("norm_std", 0.0))

    torch.manual_seed(cfg["seed"])
    model = load_model(model_dir, spec)
    check_weights_loaded(model, model_dir, spec["tie_word_embeddings"], lay)
    check_rope(model, spec)
    if cfg.get("quant"):
        model = load_model(model_dir, spec, cfg["quant"])
        n_quant = check_nf4_base(model, model_dir)
        assert n_quant == 7 * spec["num_hidden_layers"], n_quant
    model.name_or_path = None  # no hub model: keeps the temporary path out of adapter_config.json

    rng = np.random.default_rng(cfg["seed"])  # batch first, then the LoRA values
    input_ids, targets = make_batch(rng, spec["vocab_size"], cfg["T"])
    want_scale = cfg["alpha"] / (math.sqrt(cfg["r"]) if cfg["rslora"] else cfg["r"])
    if lay is None:
        pm, adapter, initial = dense_lora(model, cfg, case_dir, rng)
        n_want = 7 * spec["num_hidden_layers"]
    else:
        assert not cfg["rslora"], "rsLoRA: PEFT's doubled alpha on the rank-2r gate_up LoRA would change the scale"
        pm, adapter, initial, moe_meta = moe_peft.moe_lora_setup(model, lay, spec, cfg, case_dir, rng, want_scale,
                                                                  lora_value)
        n_want = 4 * spec["num_hidden_layers"] + 3 * len(lay.dense_layers) + 2 * len(lay.moe_layers)
    n_lora_layers = 0
    for mod in pm.modules():
        if isinstance(mod, peft.tuners.lora.LoraLayer):
            assert math.isclose(mod.scaling["default"], want_scale, rel_tol=1e-12), mod.scaling
            n_lora_layers += 1
    assert n_lora_layers == n_want, (n_lora_layers, n_want)
    trainable = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert len(trainable) == len(adapter.params) == 2 * n_lora_layers, "only the LoRA weights may train"

    saved = load_file(os.path.join(case_dir, "adapter_model.safetensors"))
    assert sorted(saved) == sorted(initial), (sorted(saved)[:3], sorted(initial)[:3])
    for n, t in initial.items():
        assert torch.equal(saved[n], t), n

    ids_t = torch.from_numpy(input_ids).long()
    tgt_t = torch.from_numpy(targets).long()
    if lay is not None:
        out_err, grad_err = moe_peft.check_experts_against_own(pm, adapter, ids_t, initial, lay, spec, want_scale)
        assert out_err < 1e-5 and grad_err < 1e-4, (out_err, grad_err)
        moe_meta["own_float64_expert_block_worst_rel_error"] = {"output": out_err, "lora_gradients": grad_err}

    # One forward/backward: logits, loss and every LoRA gradient.
    logits, loss, ce, aux, router_logits = model_loss(pm, ids_t, tgt_t, spec)
    assert logits.shape == (B, cfg["T"], spec["vocab_size"]) and logits.dtype == torch.float32
    loss.backward()
    adapter.separate_gate_up()
    # The adapter must matter: a wrong LoRA scale in the C++ code has to show in the logits.
    with torch.no_grad(), pm.disable_adapter():
        base_logits = pm(input_ids=ids_t).logits
    lora_effect = ((logits - base_logits).abs().max() / base_logits.abs().max()).item()
    assert lora_effect > 0.01, f"LoRA changes the logits by only {lora_effect:.3g} (relative)"
    out = {"input_ids": torch.from_numpy(input_ids), "targets": torch.from_numpy(targets),
           "logits": logits.detach().clone(), "loss": loss.detach().reshape(1).clone()}
    if lay is not None:
        out["loss_ce"] = ce.detach().reshape(1).clone()
        out["aux_loss"] = aux.detach().reshape(1).clone()
        moe_meta.update(moe_peft.moe_checks(pm, ids_t, tgt_t, spec, lay, loss, aux, router_logits, out))
        moe_meta["peft_loads_per_expert_adapter"] = moe_peft.check_peft_loads(
            load_model(model_dir, spec), case_dir, ids_t, logits.detach(), initial, lay, cfg["r"])
        moe_meta["peft_fused_save_reload_rel_logit_difference"] = moe_peft.check_fused_save_reloads(
            pm, lambda: load_model(model_dir, spec), os.path.join(work, name + "-fused"), ids_t, logits.detach())
    for n, g in adapter.named(grads=True).items():
        assert g.abs().max() > 0, f"{n}: zero gradient"
        out["grad." + n] = g

    # AdamW over the LoRA weights only, clipping the global norm before each step.
    opt = torch.optim.AdamW(adapter.params, foreach=False, **ADAMW)
    losses, norms, clipped = [], [], []
    for step in range(STEPS):
        opt.zero_grad(set_to_none=True)
        step_loss = model_loss(pm, ids_t, tgt_t, spec)[1]
        step_loss.backward()
        adapter.separate_gate_up()
        norm = torch.nn.utils.clip_grad_norm_(adapter.params, max_norm=cfg["max_norm"])
        losses.append(step_loss.item())
        norms.append(norm.item())
        clipped.append(bool(norm.item() > cfg["max_norm"]))
        opt.step()
    assert losses[0] == loss.item(), "the first AdamW loss must repeat the golden loss exactly"
    out["adamw_losses"] = torch.tensor(losses, dtype=torch.float32)
    out["adamw_grad_norms"] = torch.tensor(norms, dtype=torch.float32)
    for n, t in adapter.named().items():
        out["after_adamw." + n] = t

    meta = {
        "case": name, "spec": "spec.json", "seed": cfg["seed"], "B": B, "T": cfg["T"],
        "model_command": f"anvil init-model --spec spec.json --seed {cfg['seed']} --dtype f32 --out DIR" +
                         (f" --norm-std {cfg['norm_std']}" if cfg.get("norm_std") else ""),
        "lora": {"r": cfg["r"], "alpha": cfg["alpha"], "rslora": cfg["rslora"], "scaling": want_scale,
                 "targets": TARGETS, "dropout": 0.0,
                 "init": "A ~ U(-1/sqrt(in), 1/sqrt(in)), B ~ N(0, 0.02), numpy default_rng(seed) after the batch"},
        "loss": "sum of CE over targets != -100 / their count; targets already aligned (no shift)",
        "optimizer": {"name": "torch.optim.AdamW (decoupled weight decay, eps added after bias-corrected sqrt)",
                      "lr": ADAMW["lr"], "betas": list(ADAMW["betas"]), "eps": ADAMW["eps"],
                      "weight_decay": ADAMW["weight_decay"], "steps": STEPS},
        "clip": {"max_norm": cfg["max_norm"], "rule": "g *= min(1, max_norm / (norm + 1e-6)), norm = global L2",
                 "clipped_per_step": clipped},
        "results": {"loss": loss.item(), "max_abs_logit": logits.abs().max().item(),
                    "lora_effect_on_logits": lora_effect, "adamw_losses": losses, "adamw_grad_norms": norms},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__, "numpy": np.__version__, "python": sys.version.split()[0]},
        "regenerate": REGEN,
    }
    if cfg.get("norm_std"):
        meta["norm_std"] = cfg["norm_std"]
    if cfg.get("quant"):
        import bitsandbytes
        meta["quant"] = cfg["quant"]
        meta["quant_base"] = ("every q/k/v/o/gate/up/down_proj a bitsandbytes Linear4bit: NF4, blocksize 64, double "
                              "quantization, compute dtype float32, from transformers' BitsAndBytesConfig at load; "
                              "lm_head, embeddings and norms dense; anvil: model.quant nf4, default quant_skip")
        meta["versions"]["bitsandbytes"] = bitsandbytes.__version__
    if python_weights:
        meta["model_command"] = ("NOT anvil: transformers from_config + save_pretrained "
                                 "(--python-weights, development only)")
    if lay is not None:
        meta["lora"]["targets"] = lay.lora_targets()
        meta["lora"]["init"] += "; per-expert tensors in moe_lora.per_expert_lora_shapes order"
        meta["lora"]["experts"] = ("one LoRA (A, B) per expert per projection, scale alpha/r; trained as PEFT's fused "
                                   "expert LoRA (gate_up rank 2r, alpha 2*alpha) with the off-diagonal gate/up blocks "
                                   "of its B held at 0 (gradients zeroed before clipping and every AdamW step), "
                                   "which is exactly separate per-expert LoRAs; the router is not adapted")
        meta["loss"] += (f" + router_aux_loss_coef ({spec['router_aux_loss_coef']}) * aux_loss; aux_loss = "
                         "transformers' load_balancing_loss_func over all MoE layers' router logits, no mask")
        meta["adapter_files"] = ("per-expert (transformers v4) naming as anvil exports it, written by "
                                 "moe_peft.write_per_expert_adapter, not by PEFT's save_pretrained")
        meta["results"].update(loss_ce=ce.item(), aux_loss=aux.item())
        meta["moe"] = dict(moe_meta, moe_layers=lay.moe_layers, dense_layers=lay.dense_layers,
                           experts=lay.n_experts, top_k=lay.top_k)
    return out, meta


def compare(case_dir, scratch, out, meta):
    """--check: the recomputed files and tensors against the committed ones."""
    for name in ("spec.json", "adapter_config.json", "adapter_model.safetensors"):
        with open(os.path.join(case_dir, name), "rb") as a, open(os.path.join(scratch, name), "rb") as b:
            assert a.read() == b.read(), f"{name} differs from the committed one"
    old = load_file(os.path.join(case_dir, "golden.safetensors"))
    assert sorted(old) == sorted(out), "tensor names differ"
    worst = 0.0
    for n, t in out.items():
        o = old[n]
        assert o.shape == t.shape and o.dtype == t.dtype, n
        if t.dtype == torch.int32:
            assert torch.equal(o, t), n
            continue
        err = ((o - t).abs().max() / t.abs().max().clamp_min(1e-30)).item()
        worst = max(worst, err)
        assert err < 1e-5, f"{n}: relative difference {err:.3g}"
    with open(os.path.join(case_dir, "case.json")) as f:
        assert json.load(f)["clip"]["clipped_per_step"] == meta["clip"]["clipped_per_step"]
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--anvil", default="build/src/cli/anvil", help="the anvil binary (for init-model)")
    ap.add_argument("--out", default="tests/golden", help="where the case directories go")
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    ap.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    ap.add_argument("--python-weights", action="store_true",
                    help="development only: make the models with transformers instead of anvil init-model")
    args = ap.parse_args()

    torch.set_default_dtype(torch.float32)
    torch.set_num_threads(1)  # one thread: reductions in one fixed order
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notes from PEFT
    # PEFT matches rank/alpha_pattern against module names before its ParamWrappers exist and
    # warns that the gate_up_proj pattern matched nothing; the rank 2r and alpha 2*alpha are
    # applied all the same (moe_peft asserts the shapes, run_case the scaling).
    warnings.filterwarnings("ignore", message="The following (rank|alpha)_pattern keys did not match")
    anvil = os.path.abspath(args.anvil)
    assert args.python_weights or os.access(anvil, os.X_OK), \
        f"{anvil}: not an executable (build it: ninja -C build anvil)"

    with tempfile.TemporaryDirectory(prefix="anvil-golden-") as work:
        for name in args.cases:
            case_dir = os.path.join(args.out, name)
            target = os.path.join(work, "check", name) if args.check else case_dir
            if args.check:  # spec.json and the adapter files go to the scratch copy
                shutil.copytree(case_dir, target)
            out, meta = run_case(name, CASES[name], anvil, target, work, args.python_weights)
            r = meta["results"]
            print(f"{name}: loss {r['loss']:.6f}, max |logit| {r['max_abs_logit']:.4f}, "
                  f"grad norms {np.array2string(np.array(r['adamw_grad_norms']), precision=4)}, "
                  f"clipped {meta['clip']['clipped_per_step']}, LoRA effect {r['lora_effect_on_logits']:.3f}, "
                  f"adamw losses {np.array2string(np.array(r['adamw_losses']), precision=6)}")
            if "moe" in meta:
                m = meta["moe"]
                own = m["own_float64_expert_block_worst_rel_error"]
                print(f"  own float64 expert blocks: output {own['output']:.2g}, "
                      f"LoRA gradients {own['lora_gradients']:.2g}")
                print(f"  CE {r['loss_ce']:.6f} + aux {r['aux_loss']:.6f}, router top-k gap "
                      f"{m['router_min_topk_probability_gap']:.3g}, PEFT conversion drops dense MLP targets: "
                      f"{m['peft_conversion_drops_dense_mlp_targets']}, PEFT loads the per-expert adapter: "
                      f"{m['peft_loads_per_expert_adapter']}")
            if args.check:
                print(f"  matches the committed files (worst relative difference {compare(case_dir, target, out, meta):.3g})")
                continue
            save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(case_dir, "golden.safetensors"))
            with open(os.path.join(case_dir, "case.json"), "w") as f:
                json.dump(meta, f, indent=2)
                f.write("\n")


if __name__ == "__main__":
    main()
