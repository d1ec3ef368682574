#!/usr/bin/env python3
"""Golden reference for anvil's Llama 4 text model: transformers' Llama4ForCausalLM + LoRA.

The same outputs as make_golden.py's cases (logits, loss, every LoRA gradient, 5 AdamW
steps with clipping) for a tiny Llama 4 with every feature on: dense and MoE layers
interleaved (interleave_moe_layer_step 2), a NoPE layer with attention temperature
tuning, chunked attention shorter than the sequence on the RoPE layers, weightless qk-norm,
llama3 RoPE scaling, a top-1 sigmoid router with the shared expert, and norms whose
weights are not 1 (init-model --norm-std).

LoRA: PEFT (peft.get_peft_model) adapts q/k/v/o and gate/up/down, which by PEFT's suffix
match is the dense MLPs and the shared experts alike. The routed experts are two fused
3-D parameters in transformers (gate_up_proj (E, H, 2I), down_proj (E, I, H)); PEFT's
target_parameters LoRA on them shares one adapter between gate and up of an expert, so
it cannot express anvil's separate per-expert gate/up/down adapters. Their LoRA is
therefore our own: Llama4TextExperts.forward is replaced by a per-expert computation in
torch (fp32 autograd) that adds scale * B_e A_e x to each expert's gate, up and down, with
every other part of the model (router, input scaling, shared expert, attention) being
transformers' own code.

The adapter files are written in anvil's per-expert PEFT naming
(base_model.model.model.layers.L.feed_forward.experts.E.gate_proj.lora_A.weight, ...),
not by PEFT's save_pretrained.

Regenerate (from the repository root, after `ninja -C build anvil`):

    .venv/bin/python scripts/reference/llama4_golden.py --anvil build/src/cli/anvil --out tests/golden
"""
import argparse
import json
import math
import os
import sys
import tempfile
import types
import warnings

import numpy as np
import peft
import torch
import transformers
from safetensors.torch import load_file, save_file

import make_golden as mg

SPEC = {
    "model_type": "llama4_text", "hidden_size": 96, "intermediate_size": 40, "intermediate_size_mlp": 112,
    "num_hidden_layers": 4, "num_attention_heads": 3, "num_key_value_heads": 1, "head_dim": 32,
    "vocab_size": 301, "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 64},
    "tie_word_embeddings": False, "hidden_act": "silu", "attention_bias": False,
    "num_local_experts": 6, "num_experts_per_tok": 1, "interleave_moe_layer_step": 2,
    # layer 2 (dense) is NoPE; chunks of 8 on the RoPE layers of a 24-token sequence
    "no_rope_layers": [1, 1, 0, 1], "attention_chunk_size": 8, "use_qk_norm": True,
    # floor_scale 4: the temperature changes every 4 positions (HF's default 8192 would be 1)
    "attn_temperature_tuning": True, "floor_scale": 4, "attn_scale": 0.1,
    "router_jitter_noise": 0.0, "output_router_logits": False,
}
CASE = dict(name="llama4", seed=51, T=32, r=4, alpha=8, max_norm=0.668, norm_std=0.2)
LEAVES = ["gate_proj", "up_proj", "down_proj"]
REGEN = ".venv/bin/python scripts/reference/llama4_golden.py --anvil build/src/cli/anvil --out tests/golden"


class ExpertLora:
    """Per-expert LoRA (A (r, in), B (out, r)) on gate, up and down of every routed expert."""

    def __init__(self, model, scale, r, rng):
        self.scale = scale
        self.pairs = []  # (anvil/PEFT-style name, parameter)
        for l, layer in enumerate(model.model.layers):
            if not layer.is_moe_layer:
                continue
            ex = layer.feed_forward.experts
            E, H, I = ex.num_experts, ex.hidden_size, ex.expert_dim
            ex.lora = {}
            for e in range(E):
                for leaf, (out_f, in_f) in zip(LEAVES, [(I, H), (I, H), (H, I)]):
                    base = f"base_model.model.model.layers.{l}.feed_forward.experts.{e}.{leaf}"
                    a = torch.nn.Parameter(mg.lora_value(".lora_A.", (r, in_f), rng))
                    b = torch.nn.Parameter(mg.lora_value(".lora_B.", (out_f, r), rng))
                    self.pairs += [(base + ".lora_A.weight", a), (base + ".lora_B.weight", b)]
                    ex.lora[(e, leaf)] = (a, b)
            ex.lora_scale = scale
            ex.forward = types.MethodType(experts_forward, ex)


def experts_forward(self, hidden_states):
    """Llama4TextExperts.forward (rows grouped by expert, (E*N, H)) plus each expert's LoRA."""
    x = hidden_states.view(self.num_experts, -1, self.hidden_size)
    I = self.expert_dim
    outs = []
    for e in range(self.num_experts):
        def lin(inp, w, leaf):
            a, b = self.lora[(e, leaf)]
            return inp @ w + self.lora_scale * ((inp @ a.t()) @ b.t())
        gate = lin(x[e], self.gate_up_proj[e][:, :I], "gate_proj")
        up = lin(x[e], self.gate_up_proj[e][:, I:], "up_proj")
        outs.append(lin(up * self.act_fn(gate), self.down_proj[e], "down_proj"))
    return torch.stack(outs).view(-1, self.hidden_size)


def run(anvil, out_root, work):
    cfg = CASE
    case_dir = os.path.join(out_root, cfg["name"])
    os.makedirs(case_dir, exist_ok=True)
    spec_path = os.path.join(case_dir, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(SPEC, f, indent=2, sort_keys=True)
        f.write("\n")
    model_dir = os.path.join(work, cfg["name"])
    mg.make_model_dir(anvil, spec_path, cfg["seed"], model_dir, norm_std=cfg["norm_std"])

    torch.manual_seed(cfg["seed"])
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                              attn_implementation="eager")
    assert type(model).__name__ == "Llama4ForCausalLM", type(model).__name__
    model.eval()
    mg.check_weights_loaded(model, model_dir, False, None)
    c = model.config
    assert c.moe_layers == [1, 3] and c.layer_types == ["chunked_attention"] * 2 + ["full_attention", "chunked_attention"]
    assert [m.self_attn.use_rope for m in model.model.layers] == [1, 1, 0, 1]
    assert model.model.rotary_emb.rope_type == "llama3"
    model.name_or_path = None

    rng = np.random.default_rng(cfg["seed"])
    input_ids, targets = mg.make_batch(rng, SPEC["vocab_size"], cfg["T"])
    scale = cfg["alpha"] / cfg["r"]
    lcfg = peft.LoraConfig(r=cfg["r"], lora_alpha=cfg["alpha"], lora_dropout=0.0, target_modules=mg.TARGETS,
                           bias="none", task_type="CAUSAL_LM")
    pm = peft.get_peft_model(model, lcfg)
    dense = mg.lora_params(pm)
    # 4 attention projections per layer, 3 MLP or shared-expert projections per layer
    assert len(dense) == 2 * 7 * SPEC["num_hidden_layers"], len(dense)
    assert not any("router" in n for n, _ in dense)
    mg.init_lora(dense, rng)
    experts = ExpertLora(model, scale, cfg["r"], rng)
    pairs = dense + experts.pairs
    params = [p for _, p in pairs]
    named = lambda grads=False: {n: (p.grad if grads else p.detach()).clone() for n, p in pairs}

    save_file({n: t.contiguous() for n, t in named().items()}, os.path.join(case_dir, "adapter_model.safetensors"))
    adapter_config = {"peft_type": "LORA", "r": cfg["r"], "lora_alpha": cfg["alpha"], "use_rslora": False,
                      "lora_dropout": 0.0, "bias": "none", "task_type": "CAUSAL_LM",
                      "target_modules": sorted(mg.TARGETS), "base_model_name_or_path": None}
    with open(os.path.join(case_dir, "adapter_config.json"), "w") as f:
        f.write(json.dumps(adapter_config, indent=2, sort_keys=True))

    # the routing, captured from transformers' router: top-1 by logit
    topk, gaps = {}, []
    def hook(l):
        def f(mod, inp, out):
            logits = out[1].detach()
            v, i = torch.topk(logits, SPEC["num_experts_per_tok"] + 1, dim=1)
            gaps.append((v[:, -2] - v[:, -1]).min().item())
            topk[l] = i[:, :SPEC["num_experts_per_tok"]].to(torch.int32).clone()
        return f
    handles = [layer.feed_forward.router.register_forward_hook(hook(l))
               for l, layer in enumerate(model.model.layers) if layer.is_moe_layer]

    ids_t = torch.from_numpy(input_ids).long()
    tgt_t = torch.from_numpy(targets).long()
    logits = pm(input_ids=ids_t).logits
    for h in handles:
        h.remove()
    assert min(gaps) > 1e-4, f"a near tie in routing (gap {min(gaps):.3g}): pick another seed"
    loss = mg.masked_mean_ce(logits, tgt_t)
    loss.backward()
    with torch.no_grad(), pm.disable_adapter():
        saved_forward = {}
        for layer in model.model.layers:  # the experts' own LoRA off as well
            if layer.is_moe_layer:
                saved_forward[layer] = layer.feed_forward.experts.lora_scale
                layer.feed_forward.experts.lora_scale = 0.0
        base_logits = pm(input_ids=ids_t).logits
        for layer, s in saved_forward.items():
            layer.feed_forward.experts.lora_scale = s
    lora_effect = ((logits - base_logits).abs().max() / base_logits.abs().max()).item()
    assert lora_effect > 0.01, lora_effect
    out = {"input_ids": torch.from_numpy(input_ids), "targets": torch.from_numpy(targets),
           "logits": logits.detach().clone(), "loss": loss.detach().reshape(1).clone(),
           "loss_ce": loss.detach().reshape(1).clone(), "aux_loss": torch.zeros(1)}
    for l, t in topk.items():
        out[f"router_topk.{l}"] = t
    for n, g in named(grads=True).items():
        assert g is not None and g.abs().max() > 0, f"{n}: zero gradient"
        out["grad." + n] = g

    opt = torch.optim.AdamW(params, foreach=False, **mg.ADAMW)
    losses, norms, clipped = [], [], []
    for step in range(mg.STEPS):
        opt.zero_grad(set_to_none=True)
        step_loss = mg.masked_mean_ce(pm(input_ids=ids_t).logits, tgt_t)
        step_loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm=cfg["max_norm"])
        losses.append(step_loss.item())
        norms.append(norm.item())
        clipped.append(bool(norm.item() > cfg["max_norm"]))
        opt.step()
    assert losses[0] == loss.item()
    out["adamw_losses"] = torch.tensor(losses, dtype=torch.float32)
    out["adamw_grad_norms"] = torch.tensor(norms, dtype=torch.float32)
    for n, t in named().items():
        out["after_adamw." + n] = t

    meta = {
        "case": cfg["name"], "spec": "spec.json", "seed": cfg["seed"], "B": mg.B, "T": cfg["T"],
        "model_command": f"anvil init-model --spec spec.json --seed {cfg['seed']} --dtype f32 --out DIR "
                         f"--norm-std {cfg['norm_std']}",
        "norm_std": cfg["norm_std"],
        "lora": {"r": cfg["r"], "alpha": cfg["alpha"], "rslora": False, "scaling": scale,
                 "targets": mg.TARGETS + ["experts"], "dropout": 0.0,
                 "init": "A ~ U(-1/sqrt(in), 1/sqrt(in)), B ~ N(0, 0.02), numpy default_rng(seed) after the batch, "
                         "PEFT's tensors first, then each MoE layer's experts in order (gate, up, down)",
                 "experts": "per-expert LoRA computed by our own Llama4TextExperts.forward (fp32 torch autograd); "
                            "PEFT's target_parameters LoRA on the fused gate_up_proj cannot hold separate gate and "
                            "up adapters; the router is not adapted"},
        "loss": "sum of CE over targets != -100 / their count; targets already aligned (no shift); "
                "Llama 4 has no router aux loss in transformers' forward",
        "optimizer": {"name": "torch.optim.AdamW", "lr": mg.ADAMW["lr"], "betas": list(mg.ADAMW["betas"]),
                      "eps": mg.ADAMW["eps"], "weight_decay": mg.ADAMW["weight_decay"], "steps": mg.STEPS},
        "clip": {"max_norm": cfg["max_norm"], "rule": "g *= min(1, max_norm / (norm + 1e-6)), norm = global L2",
                 "clipped_per_step": clipped},
        "results": {"loss": loss.item(), "max_abs_logit": logits.abs().max().item(),
                    "lora_effect_on_logits": lora_effect, "adamw_losses": losses, "adamw_grad_norms": norms,
                    "router_min_top1_logit_gap": min(gaps)},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__, "numpy": np.__version__, "python": sys.version.split()[0]},
        "regenerate": REGEN,
    }
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(case_dir, "golden.safetensors"))
    with open(os.path.join(case_dir, "case.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"llama4: loss {loss.item():.6f}, norms {np.array2string(np.array(norms), precision=4)}, "
          f"clipped {clipped}, LoRA effect {lora_effect:.3f}, router gap {min(gaps):.3g}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--anvil", default="build/src/cli/anvil")
    ap.add_argument("--out", default="tests/golden")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)
    with tempfile.TemporaryDirectory(prefix="anvil-llama4-golden-") as work:
        run(os.path.abspath(args.anvil), args.out, work)


if __name__ == "__main__":
    main()
