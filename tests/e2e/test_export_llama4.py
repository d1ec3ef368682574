"""A Llama 4 text fine-tune in the clients that serve it: a tiny llama4_text model (dense and
sparse layers interleaved, a NoPE layer, Llama 3 rope scaling, qk-norm, a shared expert)
trained a few steps with LoRA on attention, the dense MLPs, the shared experts and every
routed expert, then exported.

`--format gguf` in llama.cpp (its llama4 architecture):
  - the fused experts (gate_up_proj (E, C, 2I), down_proj (E, I, C), x·W) become llama.cpp's
    stacked ffn_{gate,up,down}_exps (ggml [in, out, E]): expert e's block is the merged HF
    export's fused tensor transposed, bit for bit in f32; the router is ffn_gate_inp (f32),
    the shared expert ffn_*_shexp, a dense layer's MLP ffn_*; expert_feed_forward_length,
    interleave_moe_layer_step and rope_freqs.weight are there;
  - llama.cpp's logits on the f32 file equal anvil's within 2e-2; f16, q8_0 and q4_k_m have
    llama-quantize's type for every tensor; gguf-lora on the base GGUF gives the merged
    logits;
  - a Llama 4 whose attention llama.cpp would get wrong (chunk size other than its fixed
    8192) is refused with exit 2, naming the key.
llama.cpp fixes the chunk size and the temperature tuning's floor at 8192, so the model here
has those values and its 64-token sequences exercise neither the chunking nor a temperature
other than 1 (anvil's own tests and the transformers golden test cover those).

`--format mlx` in mlx-lm (its llama4 model: weights under language_model., config.json's
fields in text_config, experts stacked as feed_forward.experts.{gate,up,down}_proj): the f32
export's logits equal anvil's within 1e-4 (relative); --bits 8 and 4 are exactly what
mlx_lm's quantize_model makes of the bf16 export, and load and run."""
import json
import os
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file

import test_export_moe as moe
from test_export_moe import anvil

SPEC = {"model_type": "llama4_text", "hidden_size": 64, "intermediate_size": 32, "intermediate_size_mlp": 96,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "vocab_size": 320, "num_local_experts": 6, "num_experts_per_tok": 1, "interleave_moe_layer_step": 2,
        "no_rope_layers": [1, 1, 1, 0], "attention_chunk_size": 8192, "use_qk_norm": True,
        "attn_temperature_tuning": True, "floor_scale": 8192, "attn_scale": 0.1, "max_position_embeddings": 16384,
        "rms_norm_eps": 1e-6, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192}}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "shared_expert", "experts"]
C, I, I_MLP, E = SPEC["hidden_size"], SPEC["intermediate_size"], SPEC["intermediate_size_mlp"], SPEC["num_local_experts"]


def check_layout(path, hf):
    """The llama4 file's metadata and tensors; the stacked experts against the merged HF export."""
    r = moe.GGUFReader(path)
    f = {k: v.contents() for k, v in r.fields.items() if not k.startswith("tokenizer.ggml.")}
    assert f["general.architecture"] == "llama4", f
    assert f["llama4.expert_count"] == E and f["llama4.expert_used_count"] == 1, f
    assert f["llama4.expert_feed_forward_length"] == I and f["llama4.feed_forward_length"] == I_MLP, f
    assert f["llama4.interleave_moe_layer_step"] == 2, f
    t = {x.name: x for x in r.tensors}
    assert list(t["rope_freqs.weight"].shape) == [SPEC["head_dim"] // 2], t["rope_freqs.weight"].shape
    for l in range(SPEC["num_hidden_layers"]):
        if l % 2 == 0:  # dense
            assert list(t[f"blk.{l}.ffn_gate.weight"].shape) == [C, I_MLP]
            assert f"blk.{l}.ffn_gate_exps.weight" not in t
            continue
        assert list(t[f"blk.{l}.ffn_gate_inp.weight"].shape) == [C, E]
        assert t[f"blk.{l}.ffn_gate_inp.weight"].tensor_type.name == "F32"
        assert list(t[f"blk.{l}.ffn_down_shexp.weight"].shape) == [I, C]
        assert f"blk.{l}.ffn_gate.weight" not in t
        gate_up = hf[f"model.layers.{l}.feed_forward.experts.gate_up_proj"]  # (E, C, 2I)
        down = hf[f"model.layers.{l}.feed_forward.experts.down_proj"]        # (E, I, C)
        stacks = {"gate": gate_up[:, :, :I], "up": gate_up[:, :, I:], "down": down}
        for stem, fused in stacks.items():
            x = t[f"blk.{l}.ffn_{stem}_exps.weight"]
            want_dims = [C, I, E] if stem != "down" else [I, C, E]
            assert list(x.shape) == want_dims, (stem, x.shape)
            for e in range(E):  # numpy reads ggml [in, out, E] as (E, out, in)
                assert np.array_equal(x.data[e], fused[e].T), (l, stem, e)


def check_refusals(tmp):
    """A chunk size llama.cpp does not have: exit 2 naming it, no file left behind."""
    model = moe.init_model(dict(SPEC, attention_chunk_size=16), tmp, "chunk16")
    out = os.path.join(tmp, "chunk16.gguf")
    err = anvil("export", model, "--format", "gguf", "--type", "f32", "--out", out, expect=2)
    assert "attention_chunk_size is 16" in err and not os.path.exists(out), err


def main():
    with tempfile.TemporaryDirectory(prefix="anvil_l4export_") as tmp:
        model = moe.init_model(SPEC, tmp, "llama4", "--init-std", "0.1", "--norm-std", "0.2")
        ckpt = moe.train(model, os.path.join(tmp, "llama4_run"), TARGETS)
        merged = os.path.join(tmp, "llama4_hf")
        anvil("export", ckpt, "--out", merged, "--dtype", "f32")
        want = moe.anvil_logits(merged, tmp)

        f32 = os.path.join(tmp, "llama4-f32.gguf")
        anvil("export", ckpt, "--format", "gguf", "--type", "f32", "--out", f32)
        check_layout(f32, load_file(os.path.join(merged, "model.safetensors")))
        err = np.abs(moe.llama_logits(f32) - want).max()
        assert err < 2e-2, f"llama.cpp's logits on the f32 GGUF differ from anvil's by {err}"
        moe.check_quant_types("llama4", ckpt, tmp)
        lora_err = moe.check_lora("llama4", model, ckpt, want, tmp, I, C)
        print(f"llama4: f32 GGUF logits within {err:.2e} of anvil's, LoRA GGUF within {lora_err:.2e}")
        moe.check_mlx("llama4", ckpt, want, tmp, stack=".feed_forward.experts.")
        check_refusals(tmp)
    print("ok")


if __name__ == "__main__":
    sys.exit(main())
