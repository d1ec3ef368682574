"""PEFT on transformers 5's fused experts, driven in anvil's per-expert LoRA terms (used by
make_golden.py; the index maps are in moe_lora.py).

PEFT 0.21 on a transformers-5 MoE model adapts the fused expert parameters (ParamWrapper,
`target_parameters`): it converts the per-expert target names of a transformers-v4 adapter
(gate_proj/up_proj/down_proj, Mixtral w1/w3/w2) into `target_parameters` gate_up_proj (rank
2r, alpha 2*alpha) and down_proj, and the per-expert adapter tensors into the fused ones when
loading. What the reference relies on, and the quirks found, are checked here each run.
"""
import contextlib
import json
import os
import re
import warnings
from unittest import mock

import peft
import peft.utils.transformers_weight_conversion as peft_conversion
import torch
from peft.tuners.lora.layer import ParamWrapper
from safetensors.torch import save_file

from moe_lora import (ATTENTION, DENSE_MLP, down_join, down_split, expert_name, gate_up_join, gate_up_offdiag,
                      gate_up_split, load_balancing_loss, per_expert_lora_shapes, router_topk)


def fused_lora_config(lay, r, alpha):
    """The transformers-5 form of a per-expert adapter: what PEFT's conversion
    (peft/utils/transformers_weight_conversion.py) makes of the v4 targets, except that the
    dense layers' gate/up/down stay targeted (PEFT 0.21 drops them: see moe_peft_model)."""
    return dict(target_modules=sorted(ATTENTION + (DENSE_MLP if lay.dense_layers else [])),
                target_parameters=["down_proj", "gate_up_proj"],
                rank_pattern={r".*\.gate_up_proj": 2 * r}, alpha_pattern={r".*\.gate_up_proj": 2 * alpha})


def peft_converted_targets(model, lay, r, alpha):
    """What PEFT 0.21's own conversion does with the v4 target list on this model."""
    cfg = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=lay.lora_targets(), lora_dropout=0.0)
    peft_conversion.convert_peft_config_for_transformers(cfg, model, None)
    return dict(target_modules=sorted(cfg.target_modules), target_parameters=sorted(cfg.target_parameters),
                rank_pattern=dict(cfg.rank_pattern), alpha_pattern=dict(cfg.alpha_pattern))


class MoeAdapter:
    """The trainable LoRA tensors of a PEFT model on a transformers-5 MoE model, seen in
    anvil's per-expert naming: attention and dense-MLP LoRAs one to one, the fused expert
    LoRAs through the index maps above."""

    def __init__(self, pm, lay, r):
        self.lay, self.r = lay, r
        self.plain = {}   # v4 name -> PEFT parameter
        self.wrappers = {}  # (layer, gate_up_proj | down_proj) -> PEFT ParamWrapper
        for name, mod in pm.named_modules():
            if isinstance(mod, ParamWrapper) and "default" in mod.lora_A:
                self.wrappers[(int(re.search(r"layers\.(\d+)\.", name).group(1)), mod.parameter_name)] = mod
        self.fused = {k: (m.lora_A["default"].weight, m.lora_B["default"].weight) for k, m in self.wrappers.items()}
        for name, p in pm.named_parameters():
            if "lora_" in name and ".experts." not in name:
                self.plain[name.replace(".default.", ".")] = p
        self.params = list(self.plain.values()) + [t for pair in self.fused.values() for t in pair]
        self.offdiag = gate_up_offdiag(lay, r)

    def set(self, per):
        with torch.no_grad():
            for n, p in self.plain.items():
                p.copy_(per[n])
            for (l, which), (A, B) in self.fused.items():
                a, b = (gate_up_join if which == "gate_up_proj" else down_join)(self.lay, l, per, self.r)
                assert A.shape == a.shape and B.shape == b.shape, (which, A.shape, a.shape, B.shape, b.shape)
                A.copy_(a)
                B.copy_(b)

    def named(self, grads=False):
        """{v4 name: value or gradient}; checks the off-diagonal gate_up B blocks are zero."""
        get = (lambda p: p.grad) if grads else (lambda p: p.detach())
        out = {n: get(p).clone() for n, p in self.plain.items()}
        for (l, which), (A, B) in self.fused.items():
            if which == "gate_up_proj":
                assert not get(B)[self.offdiag].any(), f"layer {l}: gate/up coupling in the fused B"
                out.update(gate_up_split(self.lay, l, get(A), get(B), self.r))
            else:
                out.update(down_split(self.lay, l, get(A), get(B), self.r))
        return out

    def separate_gate_up(self):
        """Zero the fused B's off-diagonal gradients: the reference then trains separate
        per-expert gate and up LoRAs (the blocks start at 0 and AdamW keeps them there)."""
        for (l, which), (_, B) in self.fused.items():
            if which == "gate_up_proj" and B.grad is not None:
                B.grad[self.offdiag] = 0.0

    def check_merged_deltas(self, per, scale):
        """PEFT's own merged delta weight per expert (ParamWrapper.get_delta_weight) against
        scale * B_e A_e of the per-expert tensors: the proof of the index map. Worst relative
        difference."""
        worst = 0.0
        for (l, which), wrapper in self.wrappers.items():
            delta = wrapper.get_delta_weight("default").detach()  # (E, out, in)
            for e in range(self.lay.n_experts):
                roles = ("gate", "up") if which == "gate_up_proj" else ("down",)
                want = torch.cat([per[expert_name(self.lay, l, e, ro, "B")] @ per[expert_name(self.lay, l, e, ro, "A")]
                                  for ro in roles]) * scale
                worst = max(worst, ((delta[e] - want).abs().max() / want.abs().max()).item())
        return worst


def write_per_expert_adapter(case_dir, per, lay, r, alpha):
    """adapter_config.json + adapter_model.safetensors as PEFT saves an adapter of the
    per-expert (transformers v4) model: anvil's export format."""
    cfg = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=lay.lora_targets(), bias="none",
                          task_type="CAUSAL_LM", inference_mode=True)
    d = cfg.to_dict()
    d["target_modules"] = lay.lora_targets()
    with open(os.path.join(case_dir, "adapter_config.json"), "w") as f:
        f.write(json.dumps(d, indent=2, sort_keys=True))
    save_file({k: v.contiguous() for k, v in sorted(per.items())},
              os.path.join(case_dir, "adapter_model.safetensors"), metadata={"format": "pt"})


def conversion_switched_off():
    """PEFT's v4 -> v5 target conversion as a no-op (the dense-layer workaround)."""
    return mock.patch.object(peft_conversion, "convert_peft_config_for_transformers", lambda *a, **k: None)


def moe_peft_model(model, lay, r, alpha):
    """get_peft_model with the fused-form config. PEFT's own v4 -> v5 target conversion is
    switched off for the call: it would drop the dense layers' gate/up/down (PEFT 0.21 maps
    every target named gate_proj/up_proj/down_proj to the experts' parameters). Returns the
    PEFT model, the conversion PEFT would have made and the one used."""
    converted = peft_converted_targets(model, lay, r, alpha)
    ours = fused_lora_config(lay, r, alpha)
    cfg = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM", **ours)
    with conversion_switched_off():
        pm = peft.get_peft_model(model, cfg)
    return pm, converted, ours


def check_peft_loads(base, case_dir, ids, logits, per, lay, r):
    """PeftModel.from_pretrained of the per-expert adapter files onto a fresh transformers-5
    model: which LoRA tensors arrive (through PEFT's conversion to the fused form), bit for
    bit or not, and how far its logits are from the reference."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lm = peft.PeftModel.from_pretrained(base, case_dir)
    loaded = MoeAdapter(lm, lay, r).named()
    missing = sorted(set(per) - set(loaded))
    differ = sorted(n for n in loaded if not torch.equal(loaded[n], per[n]))
    with torch.no_grad():
        got = lm(input_ids=ids).logits
    rel = ((got - logits).abs().max() / logits.abs().max()).item()
    notes = sorted({str(w.message).split("\n")[0][:200] for w in caught if "lora" in str(w.message).lower()})
    return {"reproduces_reference_logits": not missing and not differ and rel < 1e-6,
            "lora_tensors_missing": len(missing), "lora_tensors_missing_first": missing[:3],
            "lora_tensors_not_bit_identical": len(differ), "max_rel_logit_difference": rel, "peft_warnings": notes}


def check_fused_save_reloads(pm, load_base, out_dir, ids, logits):
    """The other form: PEFT's own save_pretrained of the fused reference model, reloaded by
    PeftModel.from_pretrained as is, and with PEFT's v4 -> v5 target conversion switched off
    (the workaround when dense layers are adapted). Relative logit differences."""
    pm.save_pretrained(out_dir, save_embedding_layers=False)
    result = {}
    for how, off in (("as_is", False), ("conversion_off", True)):
        with conversion_switched_off() if off else contextlib.nullcontext():
            lm = peft.PeftModel.from_pretrained(load_base(), out_dir)
        with torch.no_grad():
            got = lm(input_ids=ids).logits
        result[how] = ((got - logits).abs().max() / logits.abs().max()).item()
    return result


def moe_lora_setup(model, lay, spec, cfg, case_dir, rng, want_scale, lora_value):
    """Separate per-expert LoRAs, trained through PEFT's fused expert LoRA, and the adapter
    files in anvil's per-expert export naming. lora_value(name, shape, rng) draws the values."""
    r, alpha = cfg["r"], cfg["alpha"]
    pm, converted, used = moe_peft_model(model, lay, r, alpha)
    drops_dense = bool(lay.dense_layers) and converted["target_modules"] != used["target_modules"]
    if not lay.dense_layers:  # without dense layers PEFT's conversion is exactly ours
        assert converted == used, (converted, used)
    adapter = MoeAdapter(pm, lay, r)
    per = {n: lora_value(n, shape, rng) for n, shape in per_expert_lora_shapes(lay, spec, r)}
    adapter.set(per)
    back = adapter.named()
    assert sorted(back) == sorted(per) and all(torch.equal(back[n], per[n]) for n in per), "index map round trip"
    delta_err = adapter.check_merged_deltas(per, want_scale)
    assert delta_err < 1e-6, f"PEFT's merged expert deltas differ from scale * B_e A_e by {delta_err:.3g}"
    for name, p in pm.named_parameters():  # the router stays frozen and unadapted
        if ".gate." in name or name.endswith(".gate.weight"):
            assert "lora" not in name and not p.requires_grad, name
    write_per_expert_adapter(case_dir, per, lay, r, alpha)
    meta = {"peft_conversion_of_v4_targets": converted, "fused_lora_config_used": used,
            "peft_conversion_drops_dense_mlp_targets": drops_dense,
            "merged_delta_check_worst_rel_error": delta_err}
    return pm, adapter, per, meta


def moe_checks(pm, ids, tgt, spec, lay, loss, aux, router_logits, out):
    """Routing and aux loss: the top-k experts per layer into `out`, a margin so that they
    are not a rounding accident, our own aux loss and transformers' own labelled loss."""
    assert len(router_logits) == len(lay.moe_layers), len(router_logits)
    gaps = []
    for layer, g in zip(lay.moe_layers, router_logits):
        top, gap = router_topk(g.detach(), lay.top_k)
        out[f"router_topk.{layer}"] = top  # (B*T, k) int32, most probable first
        gaps.append(gap)
        hits = torch.bincount(top.reshape(-1).long(), minlength=lay.n_experts)
        assert (hits > 0).all(), f"layer {layer}: an expert gets no token ({hits.tolist()})"
    assert min(gaps) > 1e-4, f"a near tie in routing (gap {min(gaps):.3g}): pick another seed"
    own = load_balancing_loss([g.detach() for g in router_logits], lay.n_experts, lay.top_k)
    assert abs(own.item() - aux.item()) < 1e-6 * own.item(), (own.item(), aux.item())
    with torch.no_grad():  # transformers' own total: CE with our aligned targets + coef * aux
        hf = pm(input_ids=ids, labels=tgt, shift_labels=tgt).loss
    assert abs(hf.item() - loss.item()) < 1e-6 * loss.item(), (hf.item(), loss.item())
    return {"router_min_topk_probability_gap": min(gaps), "aux_loss_float64_own": own.item(),
            "hf_labelled_loss": hf.item()}


def own_expert_block(x, router, gate_up, down, per, lay, l, scale, renorm):
    """Our own dropless MoE MLP with separate per-expert LoRAs, float64: softmax router,
    top-k (renormalised if asked), each expert's tokens through
    down(silu(gate(x)) * up(x)) with W + scale * B_e A_e per projection, combined weighted."""
    I = lay.width
    probs = torch.softmax(x @ router.T, dim=-1)                  # (N, E)
    top_p, top_e = torch.topk(probs, lay.top_k, dim=-1)          # (N, k)
    if renorm:
        top_p = top_p / top_p.sum(dim=-1, keepdim=True)
    y = torch.zeros_like(x)                                      # (N, C)

    def adapted(W, e, role):
        return W + scale * per[expert_name(lay, l, e, role, "B")] @ per[expert_name(lay, l, e, role, "A")]

    for e in range(lay.n_experts):
        rows, slot = (top_e == e).nonzero(as_tuple=True)
        xe = x[rows]                                             # (n_e, C)
        h = (torch.nn.functional.silu(xe @ adapted(gate_up[e, :I], e, "gate").T) *
             (xe @ adapted(gate_up[e, I:], e, "up").T))          # (n_e, I)
        y = y.index_add(0, rows, (h @ adapted(down[e], e, "down").T) * top_p[rows, slot, None])
    return y


def check_experts_against_own(pm, adapter, ids, per, lay, spec, scale):
    """Each MoE block of the PEFT model (fused LoRA, float32) against own_expert_block on the
    block's real input: the output, and the per-expert LoRA gradients of a fixed random
    projection of it (PEFT's fused gradients mapped back through the index maps). Independent
    of PEFT's code, this checks the maps and that the fused training is per-expert training.
    Worst relative errors (output, gradient); leaves no gradient behind."""
    blocks = {l: pm.get_base_model().model.layers[l].mlp for l in lay.moe_layers}
    inputs = {}
    hooks = [b.register_forward_pre_hook(lambda m, a, l=l: inputs.__setitem__(l, a[0].detach()))
             for l, b in blocks.items()]
    with torch.no_grad():
        pm(input_ids=ids)
    for h in hooks:
        h.remove()
    renorm = spec.get("norm_topk_prob", True)  # Mixtral always renormalises
    g = torch.Generator().manual_seed(0)
    worst_out = worst_grad = 0.0
    for l, block in blocks.items():
        x = inputs[l]                                            # (B, T, C)
        proj = torch.randn(x.shape, generator=g, dtype=torch.float64)
        for p in adapter.params:
            p.grad = None
        y = block(x)
        (y.double() * proj).sum().backward()
        adapter.separate_gate_up()
        got = {}
        for (layer, which), (A, B) in adapter.fused.items():
            if layer == l:
                split = gate_up_split if which == "gate_up_proj" else down_split
                got.update(split(lay, l, A.grad, B.grad, adapter.r))
        base = block.experts.get_base_layer()
        own_per = {n: t.double().requires_grad_() for n, t in per.items() if n in got}
        own = own_expert_block(x.reshape(-1, x.shape[-1]).double(), block.gate.weight.double(),
                               base.gate_up_proj.double(), base.down_proj.double(), own_per, lay, l, scale, renorm)
        worst_out = max(worst_out, ((y.reshape(own.shape).double() - own).abs().max() / own.abs().max()).item())
        (own * proj.reshape(own.shape)).sum().backward()
        for n, t in own_per.items():
            worst_grad = max(worst_grad, ((got[n].double() - t.grad).abs().max() / t.grad.abs().max()).item())
    for p in adapter.params:
        p.grad = None
    return worst_out, worst_grad
