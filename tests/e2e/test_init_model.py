"""`anvil init-model` + `anvil inspect` end to end, checked with the Python references:
HF `tokenizers` loads the tokenizer, PyPI `safetensors` the weights, shapes follow config.json."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

ANVIL = os.environ["ANVIL_BIN"]


def anvil(*args, expect=0, stdin=None):
    p = subprocess.run([ANVIL, *args], capture_output=True, text=True, input=stdin)
    assert p.returncode == expect, f"anvil {' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout + p.stderr


def expected_shapes(cfg):
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        shapes.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                       p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
                       p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q),
                       p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
                       p + "mlp.down_proj.weight": (h, i)})
    if not cfg["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (v, h)
    return shapes


def check_model(d, tied):
    cfg = json.load(open(os.path.join(d, "config.json")))
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["tie_word_embeddings"] == tied
    weights = load_file(os.path.join(d, "model.safetensors"))
    want = expected_shapes(cfg)
    assert {k: v.shape for k, v in weights.items()} == want, sorted(set(weights) ^ set(want))
    q = weights["model.layers.0.self_attn.q_proj.weight"]
    assert abs(float(q.mean())) < 0.003 and abs(float(q.std()) - 0.02) < 0.002, (q.mean(), q.std())
    assert np.all(weights["model.norm.weight"] == 1.0)

    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    text = "Grüße, мир! 日本語 👩🏽‍💻 tabs\tand  spaces\n"
    enc = tok.encode(text, add_special_tokens=False)
    assert len(enc.ids) == len(text.encode("utf-8")), "byte-level: one token per byte"
    assert tok.decode(enc.ids) == text
    bos = tok.token_to_id("<|begin_of_text|>")
    assert bos == cfg["bos_token_id"] and tok.token_to_id("<|end_of_text|>") == cfg["eos_token_id"]
    assert tok.encode("hi").ids[0] == bos, "the post-processor puts BOS first"
    assert tok.encode("a<|end_of_text|>b", add_special_tokens=False).ids[1] == cfg["eos_token_id"]
    assert tok.get_vocab_size() <= cfg["vocab_size"]
    # anvil's own tokenizer reads the same file and agrees with HF, specials included.
    lines = [text.rstrip("\n"), "<|begin_of_text|>x<|pad|>", "  leading spaces", "ümlaut €"]
    out = anvil("tokenize", d, "--add-special", stdin="\n".join(lines) + "\n")
    got = [json.loads(line)["ids"] for line in out.splitlines() if line.startswith("{")]
    assert got == [tok.encode(line).ids for line in lines], (got, lines)


M64 = (1 << 64) - 1


def splitmix64(x):
    """splitmix64's finaliser on numpy uint64 arrays (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def reference_normals(seed, name, n):
    """An independent rendering of init-model's generator: FNV-1a of the tensor name keys
    splitmix64; Box-Muller turns the two halves of hash(pair p) into elements 2p, 2p+1."""
    h = 0xCBF29CE484222325
    for c in name.encode():
        h = ((h ^ c) * 0x100000001B3) & M64
    key = splitmix64(np.array([seed ^ h], dtype=np.uint64))[0]
    pairs = np.arange((n + 1) // 2, dtype=np.uint64)
    hp = splitmix64(key ^ splitmix64(pairs))
    u1 = ((hp >> np.uint64(32)).astype(np.float64) + 1.0) * 2.0**-32
    u2 = (hp & np.uint64(0xFFFFFFFF)).astype(np.float64) * 2.0**-32
    r = 0.02 * np.sqrt(-2.0 * np.log(u1))
    out = np.empty(2 * len(pairs))
    out[0::2], out[1::2] = r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)
    return out[:n].astype(np.float32)


def check_generator(tmp):
    """A 1.5M-element embedding spans two write chunks and is filled by several threads:
    every element must still be the generator's value for its index, with no gap."""
    cfg = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
           "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 24577, "tie_word_embeddings": True}
    spec, d = os.path.join(tmp, "wide.json"), os.path.join(tmp, "wide")
    json.dump(cfg, open(spec, "w"))
    anvil("init-model", "--spec", spec, "--out", d, "--seed", "77")
    w = load_file(os.path.join(d, "model.safetensors"))
    for name in ("model.embed_tokens.weight", "model.layers.0.mlp.down_proj.weight"):
        got = w[name].reshape(-1)
        want = reference_normals(77, name, got.size)
        assert np.allclose(got, want, rtol=1e-5, atol=1e-9), (name, np.abs(got - want).max())


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tiny, tied = os.path.join(tmp, "tiny"), os.path.join(tmp, "tied")
        anvil("init-model", "--preset", "tiny", "--out", tiny, "--seed", "5")
        anvil("init-model", "--preset", "tiny-tied", "--out", tied)
        check_model(tiny, tied=False)
        check_model(tied, tied=True)
        check_generator(tmp)
        out = anvil("inspect", tiny)
        assert "model.layers.1.mlp.down_proj.weight" in out and "1 file" in out, out
        # Same seed, same bytes; another seed, other bytes.
        again, other = os.path.join(tmp, "again"), os.path.join(tmp, "other")
        anvil("init-model", "--preset", "tiny", "--out", again, "--seed", "5")
        anvil("init-model", "--preset", "tiny", "--out", other, "--seed", "6")
        blob = lambda d: open(os.path.join(d, "model.safetensors"), "rb").read()
        assert blob(tiny) == blob(again) and blob(tiny) != blob(other)
        # bf16 storage, sharded output, a spec taken from a config.json.
        bf = os.path.join(tmp, "bf16")
        anvil("init-model", "--spec", os.path.join(tiny, "config.json"), "--out", bf, "--dtype", "bf16",
              "--max-shard-size", "100KB")
        index = json.load(open(os.path.join(bf, "model.safetensors.index.json")))
        shards = sorted(set(index["weight_map"].values()))
        assert len(shards) > 1 and shards[0].startswith("model-00001-of-"), shards
        assert "BF16" in anvil("inspect", bf)
        # Refusals: existing output without --force, unknown preset, both/neither source.
        assert "--force" in anvil("init-model", "--preset", "tiny", "--out", tiny, expect=2)
        anvil("init-model", "--preset", "tiny", "--out", tiny, "--force")
        assert "tiny-tied" in anvil("init-model", "--preset", "nope", "--out", os.path.join(tmp, "x"), expect=2)
        anvil("init-model", "--out", os.path.join(tmp, "y"), expect=2)
        assert not os.path.exists(os.path.join(tmp, "x")) and not os.path.exists(os.path.join(tmp, "y"))
        assert not [n for n in os.listdir(tmp) if ".tmp-" in n], "temporary directories left behind"
        # --force replaces model directories only, never an arbitrary one.
        junk = os.path.join(tmp, "junk")
        os.makedirs(junk)
        open(os.path.join(junk, "notes.txt"), "w").write("keep me")
        assert "not a model directory" in anvil("init-model", "--preset", "tiny", "--out", junk, "--force",
                                                expect=2)
        assert os.listdir(junk) == ["notes.txt"]
        # A Qwen2-shaped spec keeps its type and its q/k/v biases (zeros).
        qcfg = json.load(open(os.path.join(tiny, "config.json")))
        qcfg.update(model_type="qwen2", architectures=["Qwen2ForCausalLM"])
        for key in ("attention_bias", "mlp_bias"):
            qcfg.pop(key)
        qspec = os.path.join(tmp, "qwen2.json")
        json.dump(qcfg, open(qspec, "w"))
        qdir = os.path.join(tmp, "qwen2")
        anvil("init-model", "--spec", qspec, "--out", qdir)
        qw = load_file(os.path.join(qdir, "model.safetensors"))
        assert json.load(open(os.path.join(qdir, "config.json")))["architectures"] == ["Qwen2ForCausalLM"]
        assert qw["model.layers.0.self_attn.k_proj.bias"].shape == (qcfg["num_key_value_heads"] * qcfg["head_dim"],)
        assert not np.any(qw["model.layers.1.self_attn.q_proj.bias"])
        assert "model.layers.0.self_attn.o_proj.bias" not in qw
        # Shapes only: nothing written even with --out, the exact parameter count printed.
        big = os.path.join(tmp, "big")
        out = anvil("init-model", "--preset", "llama3-8b", "--dry-run", "--out", big)
        assert "8,030,261,248" in out and "[14336, 4096]" in out, out
        assert "70,553,706,496" in anvil("init-model", "--preset", "llama3-70b", "--dry-run", "--out", big)
        assert not os.path.exists(big)
        # Usage errors exit 2 and name the problem.
        assert "exactly one of" in anvil("init-model", "--preset", "tiny", "--spec", qspec, "--out", big,
                                         expect=2)
        assert "f32, bf16" in anvil("init-model", "--preset", "tiny", "--dtype", "f64", "--dry-run", expect=2)
        assert "--max-shard-size" in anvil("init-model", "--preset", "tiny", "--max-shard-size", "lots",
                                           "--dry-run", expect=2)
        assert not os.path.exists(big)
    print("ok")


if __name__ == "__main__":
    main()
