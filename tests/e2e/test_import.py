"""`anvil import` end to end on tiny GGUF files written with llama.cpp's `gguf` package:
random HF-layout weights go in (q/k rows interleaved the way llama.cpp's converter does for
llama files), and the imported model.safetensors must hold them again under HF names, as
gguf's own dequantizer gives them; config.json follows the metadata; errors exit 2 and
leave nothing behind; the malformed-GGUF corpus exits 2 through the CLI. With torch, anvil's
logits on the imported llama and qwen2 (q/k/v biases) models are transformers'."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter, quants
from safetensors.numpy import load_file

ANVIL = os.environ["ANVIL_BIN"]
LOGITS_TOOL = sys.argv[1] if len(sys.argv) > 1 else None  # tests/e2e/logits_tool.cpp
sys.path.insert(0, os.path.join(os.environ["ANVIL_SOURCE_DIR"], "scripts", "fixtures"))
import gguf_cases  # noqa: E402  (the malformed corpus)
import make_gguf  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import import_checks  # noqa: E402  (SentencePiece tokenizers, Llama 3 rope scaling)

HIDDEN, INTER, LAYERS, HEADS, KV_HEADS, VOCAB, CTX = 64, 128, 2, 4, 2, 96, 256
HEAD_DIM = HIDDEN // HEADS


def anvil(*args, expect=0, stdin=None):
    p = subprocess.run([ANVIL, *args], capture_output=True, text=True, input=stdin)
    assert p.returncode == expect, f"anvil {' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout + p.stderr


def interleave_heads(w, n_head):
    """llama.cpp's converter: each head's rotary halves interleaved row by row."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_weights(rng, arch, tied, vocab=VOCAB):
    w = {"model.embed_tokens.weight": rng.standard_normal((vocab, HIDDEN)),
         "model.norm.weight": 1 + 0.1 * rng.standard_normal(HIDDEN)}
    if not tied:
        w["lm_head.weight"] = rng.standard_normal((vocab, HIDDEN))
    for l in range(LAYERS):
        p = f"model.layers.{l}."
        for name, shape in [("self_attn.q_proj", (HIDDEN, HIDDEN)), ("self_attn.k_proj", (KV_HEADS * HEAD_DIM, HIDDEN)),
                            ("self_attn.v_proj", (KV_HEADS * HEAD_DIM, HIDDEN)), ("self_attn.o_proj", (HIDDEN, HIDDEN)),
                            ("mlp.gate_proj", (INTER, HIDDEN)), ("mlp.up_proj", (INTER, HIDDEN)),
                            ("mlp.down_proj", (HIDDEN, INTER))]:
            w[p + name + ".weight"] = rng.standard_normal(shape)
            if arch == "qwen2" and name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                w[p + name + ".bias"] = rng.standard_normal(shape[0])
        w[p + "input_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(HIDDEN)
        w[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(HIDDEN)
    return {k: v.astype(np.float32) for k, v in w.items()}


GGUF_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output",
              "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
# Layer 1's matrices and the embeddings go through every quant gguf can write; layer 0 and
# the norms stay f32, so there the round trip (and the q/k row order) must be exact.
LAYER1_TYPES = {"attn_q": Q.Q4_0, "attn_k": Q.Q4_1, "attn_v": Q.Q5_0, "attn_output": Q.Q5_1,
                "ffn_gate": Q.F16, "ffn_up": Q.BF16, "ffn_down": Q.Q8_0}


def gguf_name(hf):
    stem, suffix = hf.rsplit(".", 1)
    if stem.startswith("model.layers."):
        _, _, l, module = stem.split(".", 3)
        return f"blk.{l}.{GGUF_NAMES[module]}.{suffix}", int(l)
    return f"{GGUF_NAMES[stem]}.{suffix}", None


def write_gguf(path, arch, weights, unsupported=False, tokenizer=None, extra=None):
    """Returns what the import must produce: each HF tensor as gguf dequantizes it.
    tokenizer: (HF Tokenizer, tokenizer.ggml.pre) to store as llama.cpp's converter does, or
    a function that writes the tokenizer metadata; extra(writer) adds more keys or tensors."""
    w = GGUFWriter(path, arch)
    w.add_context_length(CTX)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(INTER)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(50000.0)
    w.add_layer_norm_rms_eps(1e-6)
    if tokenizer is None:
        w.add_token_list([f"t{i}".encode() for i in range(VOCAB)])
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
    elif callable(tokenizer):
        tokenizer(w)
    else:
        add_tokenizer(w, *tokenizer)
    if extra is not None:
        extra(w)
    expected = {}
    for hf, value in weights.items():
        name, layer = gguf_name(hf)
        stem = name.split(".")[-2]
        stored = value
        if arch == "llama" and stem in ("attn_q", "attn_k") and name.endswith(".weight"):
            stored = interleave_heads(value, HEADS if stem == "attn_q" else KV_HEADS)
        qtype = Q.Q8_0 if stem in ("token_embd", "output") else Q.F32
        if layer == 1 and value.ndim == 2:
            qtype = LAYER1_TYPES[stem]
        if unsupported and stem == "ffn_down":
            qtype = Q.IQ4_NL
        data = stored if qtype == Q.F32 else quants.quantize(stored, qtype) if qtype != Q.IQ4_NL else \
            np.zeros((stored.shape[0], stored.shape[1] // 32 * 18), dtype=np.uint8)
        w.add_tensor(name, data, raw_dtype=qtype)
        back = quants.dequantize(data, qtype).astype(np.float32) if qtype != Q.IQ4_NL else None
        if back is not None and stored is not value:  # undo the interleaving in numpy
            n = HEADS if stem == "attn_q" else KV_HEADS
            back = back.reshape(n, back.shape[0] // n // 2, 2, -1).swapaxes(1, 2).reshape(back.shape)
        expected[hf] = back
    make_gguf.finish(w)
    return expected


SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEXTS = ["Hello world, it's 2024!", "  leading spaces and\ttabs\n\nnew lines", "Grüße, мир! 日本語 12345",
         "<|im_start|>user\nhi there<|im_end|>", "don't STOP-believing... 3.14159", "in 1000000 years, 123456"]


def train_tokenizer(pre):
    """A small byte-level BPE with the pre-tokenizer of one llama.cpp `pre` family."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(ignore_merges=pre == "llama-bpe"))
    # Trained on GPT-2's split, which keeps digit runs whole, so the merges join digits and
    # the families' own splits (one digit, up to three) change the ids.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = TEXTS + ["the quick brown fox jumps over the lazy dog", "2024 12345 123 99 1000000"]
    tok.train_from_iterator(corpus * 20, trainer)
    bl = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=pre in ("gpt2", "smollm"))
    if pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), bl])
    elif pre in ("llama-bpe", "qwen2", "llama4"):
        sys.path.insert(0, os.path.join(os.environ["ANVIL_SOURCE_DIR"], "scripts", "fixtures"))
        import make_tokenizers
        pattern = {"llama-bpe": make_tokenizers.LLAMA3_PATTERN, "qwen2": make_tokenizers.QWEN2_PATTERN,
                   "llama4": make_tokenizers.LLAMA4_PATTERN}[pre]
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False), bl])
    return tok


def add_tokenizer(w, tok, pre, model="gpt2"):
    """What llama.cpp's converter stores for a byte-level BPE tokenizer."""
    spec = json.loads(tok.to_str())
    vocab = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
    special = {t["id"] for t in spec["added_tokens"] if t["special"]}
    w.add_tokenizer_model(model)
    w.add_tokenizer_pre(pre)
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([3 if i in special else 1 for _, i in vocab])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
    w.add_bos_token_id(tok.token_to_id("<|im_start|>"))
    w.add_eos_token_id(tok.token_to_id("<|im_end|>"))
    w.add_add_bos_token(False)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}")


def check_tokenizer(tmp, pre):
    from tokenizers import Tokenizer
    tok = train_tokenizer(pre)
    weights = hf_weights(np.random.default_rng(3), "llama", True, vocab=tok.get_vocab_size())
    path = os.path.join(tmp, f"tok-{pre}.gguf")
    write_gguf(path, "llama", weights, tokenizer=(tok, pre))
    out = os.path.join(tmp, f"tok-{pre}-hf")
    anvil("import", path, "--out", out)
    imported = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    for text in TEXTS:
        assert imported.encode(text).ids == tok.encode(text).ids, (pre, text)
    # anvil's own tokenizer reads what import wrote and agrees with HF.
    lines = [t for t in TEXTS if "\n" not in t]
    got = anvil("tokenize", out, stdin="\n".join(lines) + "\n")
    got = [json.loads(line)["ids"] for line in got.splitlines() if line.startswith("{")]
    assert got == [tok.encode(t).ids for t in lines], (pre, got)
    cfg = json.load(open(os.path.join(out, "tokenizer_config.json")))
    assert cfg["bos_token"] == "<|im_start|>" and cfg["eos_token"] == "<|im_end|>", cfg
    assert cfg["add_bos_token"] is False and cfg["chat_template"].startswith("{% for m in messages %}"), cfg


def check_import(tmp, arch, tied):
    rng = np.random.default_rng(7)
    weights = hf_weights(rng, arch, tied)
    path = os.path.join(tmp, f"{arch}.gguf")
    expected = write_gguf(path, arch, weights)
    out = os.path.join(tmp, f"{arch}-hf")
    anvil("import", path, "--out", out)
    got = load_file(os.path.join(out, "model.safetensors"))
    assert sorted(got) == sorted(expected), sorted(set(got) ^ set(expected))
    for k, want in expected.items():
        assert got[k].dtype == np.float32 and np.array_equal(got[k], want), k
    # Unquantized q/k come back bit for bit: the interleaving is undone exactly.
    q0 = "model.layers.0.self_attn.q_proj.weight"
    assert np.array_equal(got[q0], weights[q0]) and np.array_equal(got[q0.replace("q_proj", "k_proj")],
                                                                    weights[q0.replace("q_proj", "k_proj")])
    cfg = json.load(open(os.path.join(out, "config.json")))
    want_cfg = {"model_type": arch, "hidden_size": HIDDEN, "intermediate_size": INTER, "num_hidden_layers": LAYERS,
                "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "vocab_size": VOCAB,
                "max_position_embeddings": CTX, "rope_theta": 50000.0, "rms_norm_eps": 1e-6,
                "tie_word_embeddings": tied, "bos_token_id": 1, "eos_token_id": 2}
    assert {k: cfg.get(k) for k in want_cfg} == want_cfg, cfg
    listing = anvil("inspect", out)  # anvil's own model reader takes the directory
    assert "model.layers.1.self_attn.k_proj.weight" in listing, listing
    gen = json.load(open(os.path.join(out, "generation_config.json")))
    assert gen["bos_token_id"] == 1 and gen["eos_token_id"] == 2
    return path, out, expected


def check_dtype_and_force(path, out, expected):
    anvil("import", path, "--out", out, expect=2)  # exists: refused without --force
    anvil("import", path, "--out", out, "--force", "--dtype", "f16")
    got = load_file(os.path.join(out, "model.safetensors"))
    for k, want in expected.items():
        assert got[k].dtype == np.float16 and np.array_equal(got[k], want.astype(np.float16)), k
    assert json.load(open(os.path.join(out, "config.json")))["torch_dtype"] == "float16"


def check_refused_tokenizers(tmp):
    tok = train_tokenizer("gpt2")
    weights = hf_weights(np.random.default_rng(3), "llama", True, vocab=tok.get_vocab_size())
    for model, pre, fragment in [("gpt2", "falcon", "tokenizer.ggml.pre 'falcon' is not supported"),
                                 ("bert", "default", "tokenizer.ggml.model 'bert' is not supported")]:
        path = os.path.join(tmp, f"refused-{pre}.gguf")
        write_gguf(path, "llama", weights, tokenizer=(tok, pre, model))
        msg = anvil("import", path, "--out", os.path.join(tmp, "refused"), expect=2)
        assert fragment in msg, msg


def check_failure_leaves_nothing(tmp):
    path = os.path.join(tmp, "iq4.gguf")
    write_gguf(path, "llama", hf_weights(np.random.default_rng(1), "llama", False), unsupported=True)
    out = os.path.join(tmp, "iq4-hf")
    msg = anvil("import", path, "--out", out, expect=2)
    assert "has type IQ4_NL, which anvil cannot convert" in msg, msg
    assert not [n for n in os.listdir(tmp) if n.startswith("iq4-hf")], os.listdir(tmp)


def check_malformed_corpus(tmp):
    for name, (blob, fragment) in gguf_cases.malformed_cases().items():
        path = os.path.join(tmp, name + ".gguf")
        with open(path, "wb") as f:
            f.write(blob)
        msg = anvil("import", path, "--out", os.path.join(tmp, "never"), expect=2)
        assert fragment in msg and path in msg, (name, msg)
    assert not os.path.exists(os.path.join(tmp, "never"))


def main():
    with tempfile.TemporaryDirectory() as tmp:
        path, out, expected = check_import(tmp, "llama", tied=False)
        import_checks.check_logits(out, LOGITS_TOOL)
        check_dtype_and_force(path, out, expected)
        import_checks.check_logits(check_import(tmp, "qwen2", tied=True)[1], LOGITS_TOOL)
        for pre in ("gpt2", "smollm", "llama-bpe", "qwen2", "llama4"):
            check_tokenizer(tmp, pre)
        import_checks.check_sentencepiece(tmp, write_gguf, hf_weights, anvil)
        import_checks.check_rope_freqs(tmp, write_gguf, hf_weights, anvil)
        check_refused_tokenizers(tmp)
        import_checks.check_invalid_utf8(tmp, write_gguf, hf_weights, anvil, VOCAB)
        check_failure_leaves_nothing(tmp)
        check_malformed_corpus(tmp)
    print("import: ok")


if __name__ == "__main__":
    main()
