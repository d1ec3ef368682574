"""Mixture-of-experts pieces of the golden reference (used by make_golden.py).

Three layouts of the same expert weights meet here:

  on disk (HF hub, what `anvil init-model` writes), one tensor per expert:
      <block>.experts.{e}.<gate>.weight (I, C), <up> (I, C), <down> (C, I)
      <block> = mlp (Qwen3-MoE) or block_sparse_moe (Mixtral: gate/up/down = w1/w3/w2)
  in transformers 5, fused at load time:
      mlp.experts.gate_up_proj (E, 2I, C) = [gate_e; up_e] per expert, mlp.experts.down_proj (E, C, I)
  the LoRA adapter anvil trains and exports: one (A, B) per expert per projection, in PEFT's
  per-expert ("transformers v4") naming
      base_model.model.model.layers.{l}.<block>.experts.{e}.<proj>.lora_A.weight (r, in), lora_B (out, r)

PEFT 0.21 on a transformers-5 model adapts the fused parameters instead (ParamWrapper,
`target_parameters`), with these shapes and index maps (k: rank index, e: expert):

  gate_up_proj, rank 2r:  A (E*2r, C): row e*2r + k      = gate A_e[k]      (k < r)
                                                           up   A_e[k - r]  (k >= r)
                          B (2I, 2r*E): column k*E + e   = gate B_e[:, k]   in rows [0, I)   (k < r)
                                                           up   B_e[:, k-r] in rows [I, 2I)  (k >= r)
                                                           0 elsewhere (the off-diagonal blocks)
  down_proj, rank r:      A (E*r, I): row e*r + k        = down A_e[k]
                          B (C, r*E): column k*E + e     = down B_e[:, k]

A is expert-major, B rank-major. With alpha doubled for the rank-2r gate_up LoRA the scale
alpha/r is unchanged, and the per-expert delta B_e A_e of the fused pair is block-diagonal:
gate rows see only the gate half of A_e, up rows only the up half. So separate per-expert
gate and up LoRAs are exactly the fused LoRA with its off-diagonal B blocks held at zero.
moe_peft.py checks this map numerically on every MoE case (merged deltas per expert, and
PEFT's own loader fed the per-expert file).
"""
from dataclasses import dataclass, field

import torch

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
DENSE_MLP = ["gate_proj", "up_proj", "down_proj"]


@dataclass
class MoeLayout:
    """Where the experts are and what they are called, from an HF config.json (spec)."""
    block: str                  # on-disk module holding router and experts: mlp or block_sparse_moe
    proj: dict                  # role (gate, up, down) -> on-disk leaf name
    n_experts: int              # E
    top_k: int
    width: int                  # I, one expert's intermediate size
    hidden: int                 # C
    n_layers: int
    moe_layers: list = field(default_factory=list)
    dense_layers: list = field(default_factory=list)  # Qwen3-MoE layers with a plain MLP

    def lora_targets(self):
        """The leaf names a per-expert (transformers v4) adapter_config.json lists."""
        return sorted(set(ATTENTION + list(self.proj.values()) + (DENSE_MLP if self.dense_layers else [])))


def moe_layout(spec):
    """None for dense families; Qwen3-MoE and Mixtral layouts otherwise."""
    kind = spec["model_type"]
    layers = range(spec["num_hidden_layers"])
    if kind == "qwen3_moe":
        step, only = spec.get("decoder_sparse_step", 1), set(spec.get("mlp_only_layers", []))
        moe = [l for l in layers if l not in only and (l + 1) % step == 0]
        return MoeLayout("mlp", {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}, spec["num_experts"],
                         spec["num_experts_per_tok"], spec["moe_intermediate_size"], spec["hidden_size"],
                         spec["num_hidden_layers"], moe, [l for l in layers if l not in moe])
    if kind == "mixtral":
        return MoeLayout("block_sparse_moe", {"gate": "w1", "up": "w3", "down": "w2"}, spec["num_local_experts"],
                         spec["num_experts_per_tok"], spec["intermediate_size"], spec["hidden_size"],
                         spec["num_hidden_layers"], list(layers), [])
    return None


def fuse_disk_weights(on_disk, lay):
    """What transformers 5 must hold after loading the per-expert files: our own fusion
    (stack the experts, gate rows above up rows), to compare with its conversion bit for bit."""
    out = {}
    consumed = set()
    for l in range(lay.n_layers):
        if l not in lay.moe_layers:
            continue
        pre = f"model.layers.{l}.{lay.block}"
        names = {role: [f"{pre}.experts.{e}.{leaf}.weight" for e in range(lay.n_experts)]
                 for role, leaf in lay.proj.items()}
        gate = torch.stack([on_disk[n] for n in names["gate"]])   # (E, I, C)
        up = torch.stack([on_disk[n] for n in names["up"]])       # (E, I, C)
        down = torch.stack([on_disk[n] for n in names["down"]])   # (E, C, I)
        out[f"model.layers.{l}.mlp.experts.gate_up_proj"] = torch.cat([gate, up], dim=1)  # (E, 2I, C)
        out[f"model.layers.{l}.mlp.experts.down_proj"] = down
        out[f"model.layers.{l}.mlp.gate.weight"] = on_disk[f"{pre}.gate.weight"]       # (E, C) router
        consumed.update(sum(names.values(), []) + [f"{pre}.gate.weight"])
    for name, t in on_disk.items():
        if name not in consumed:
            out[name] = t
    return out


def per_expert_lora_shapes(lay, spec, r):
    """[(v4 adapter tensor name, shape)] in a fixed order: layer by layer, attention, then the
    MLP (dense gate/up/down or, expert by expert, gate/up/down), A before B."""
    C = spec["hidden_size"]
    hd = spec.get("head_dim") or C // spec["num_attention_heads"]
    q, kv = spec["num_attention_heads"] * hd, spec["num_key_value_heads"] * hd
    att_io = {"q_proj": (C, q), "k_proj": (C, kv), "v_proj": (C, kv), "o_proj": (q, C)}
    I_dense = spec.get("intermediate_size")
    out = []

    def add(stem, fan_in, fan_out):
        out.append((f"{stem}.lora_A.weight", (r, fan_in)))
        out.append((f"{stem}.lora_B.weight", (fan_out, r)))

    for l in range(lay.n_layers):
        pre = f"base_model.model.model.layers.{l}"
        for p in ATTENTION:
            add(f"{pre}.self_attn.{p}", *att_io[p])
        if l in lay.moe_layers:
            for e in range(lay.n_experts):
                for role in ("gate", "up", "down"):
                    io = (C, lay.width) if role != "down" else (lay.width, C)
                    add(f"{pre}.{lay.block}.experts.{e}.{lay.proj[role]}", *io)
        else:
            for p in DENSE_MLP:
                add(f"{pre}.mlp.{p}", *((C, I_dense) if p != "down_proj" else (I_dense, C)))
    return out


def expert_name(lay, l, e, role, ab):
    return f"base_model.model.model.layers.{l}.{lay.block}.experts.{e}.{lay.proj[role]}.lora_{ab}.weight"


# --- the per-expert <-> fused index maps (see the module docstring) --------------------------

def gate_up_join(lay, l, per, r):
    """Fused gate_up (A (E*2r, C), B (2I, 2r*E)) from per-expert tensors; off-diagonal B = 0."""
    E, I, C = lay.n_experts, lay.width, lay.hidden
    A = torch.zeros(E, 2 * r, C)
    B = torch.zeros(2 * I, 2 * r, E)
    for e in range(E):
        A[e, :r] = per[expert_name(lay, l, e, "gate", "A")]
        A[e, r:] = per[expert_name(lay, l, e, "up", "A")]
        B[:I, :r, e] = per[expert_name(lay, l, e, "gate", "B")]
        B[I:, r:, e] = per[expert_name(lay, l, e, "up", "B")]
    return A.reshape(E * 2 * r, C), B.reshape(2 * I, 2 * r * E)


def down_join(lay, l, per, r):
    E, I, C = lay.n_experts, lay.width, lay.hidden
    A = torch.stack([per[expert_name(lay, l, e, "down", "A")] for e in range(E)])     # (E, r, I)
    B = torch.stack([per[expert_name(lay, l, e, "down", "B")] for e in range(E)], 2)  # (C, r, E)
    return A.reshape(E * r, I), B.reshape(C, r * E)


def gate_up_split(lay, l, A, B, r):
    """Per-expert tensors (values or gradients) out of the fused gate_up pair."""
    E, I, C = lay.n_experts, lay.width, lay.hidden
    A3, B3 = A.reshape(E, 2 * r, C), B.reshape(2 * I, 2 * r, E)
    out = {}
    for e in range(E):
        out[expert_name(lay, l, e, "gate", "A")] = A3[e, :r].clone()
        out[expert_name(lay, l, e, "up", "A")] = A3[e, r:].clone()
        out[expert_name(lay, l, e, "gate", "B")] = B3[:I, :r, e].clone()
        out[expert_name(lay, l, e, "up", "B")] = B3[I:, r:, e].clone()
    return out


def down_split(lay, l, A, B, r):
    E, I, C = lay.n_experts, lay.width, lay.hidden
    A3, B3 = A.reshape(E, r, I), B.reshape(C, r, E)
    out = {}
    for e in range(E):
        out[expert_name(lay, l, e, "down", "A")] = A3[e].clone()
        out[expert_name(lay, l, e, "down", "B")] = B3[:, :, e].clone()
    return out


def gate_up_offdiag(lay, r):
    """(2I, 2r*E) bool: the fused B entries that couple gate rows to up ranks or back."""
    I, E = lay.width, lay.n_experts
    m = torch.ones(2 * I, 2 * r, E, dtype=torch.bool)
    m[:I, :r] = False
    m[I:, r:] = False
    return m.reshape(2 * I, 2 * r * E)


# --- routing and the auxiliary loss ---------------------------------------------------------

def router_topk(router_logits, top_k):
    """(tokens, k) int32 expert indices, most probable first, and the smallest gap between
    the k-th and (k+1)-th probability over all tokens (a near tie would make routing depend on
    rounding, and the C++ side could legitimately pick another expert)."""
    p = torch.softmax(router_logits.double(), dim=-1)
    top = torch.topk(p, top_k + 1, dim=-1)
    gap = (top.values[:, top_k - 1] - top.values[:, top_k]).min().item()
    return top.indices[:, :top_k].to(torch.int32), gap


def load_balancing_loss(router_logits, n_experts, top_k):
    """Switch-Transformer balance loss over the router logits of all MoE layers together (no
    attention mask): E * sum_e f_e * P_e, f_e = share of top-k picks on expert e, P_e = mean
    router probability of e, both over (layers x tokens). Our own float64 version, to check
    transformers' load_balancing_loss_func against."""
    logits = torch.cat([g.double() for g in router_logits], dim=0)   # (layers*tokens, E)
    p = torch.softmax(logits, dim=-1)
    picks = torch.topk(p, top_k, dim=-1).indices
    f = torch.zeros(n_experts, dtype=torch.float64).scatter_add_(
        0, picks.reshape(-1), torch.ones(picks.numel(), dtype=torch.float64)) / logits.shape[0]
    return n_experts * (f * p.mean(dim=0)).sum()


def python_model_dir(spec, seed, out):
    """Fallback model maker for families `anvil init-model` cannot write yet: transformers'
    own init from the spec, saved with save_pretrained (which writes the per-expert hub names).
    The norm weights (ones after init) get seeded noise so that a missing or misplaced norm
    (q_norm/k_norm included) shows in the logits. Not what the committed cases use: the C++
    tests rebuild the weights with anvil init-model."""
    import transformers
    cfg = transformers.AutoConfig.for_model(**spec)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    model.save_pretrained(out)
