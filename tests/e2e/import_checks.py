"""More `anvil import` checks for test_import.py (which passes in its GGUF writer):
SentencePiece-style tokenizers against transformers' own GGUF loader and HF tokenizers on
the tokenizer parity corpus, Llama 3 rope scaling recovered from rope_freqs.weight, and
anvil's logits on an imported model against transformers'."""
import subprocess
import json
import math
import os
import random
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.environ["ANVIL_SOURCE_DIR"], "scripts", "fixtures"))
import gguf_sentencepiece  # noqa: E402
import make_tokenizers  # noqa: E402  (the parity corpus)


def parity_corpus():
    """The tokenizer parity corpus (tests/unit's tokenizer_fixtures write the same texts)."""
    return make_tokenizers.make_corpus(random.Random(20240601), random_lines=1500)


def anvil_ids(anvil, model_dir, lines, add_special):
    out = anvil("tokenize", model_dir, *(["--add-special"] if add_special else []), stdin="\n".join(lines) + "\n")
    return [json.loads(line)["ids"] for line in out.splitlines() if line.startswith("{")]


def transformers_tokenizer(tmp, gguf_path):
    """transformers' own reading of the GGUF file, or None where transformers is missing."""
    try:
        import torch  # noqa: F401  transformers' GGUF reader needs it (mlx-lm installs transformers alone)
        from transformers import AutoTokenizer
    except ImportError:
        print("import: torch/transformers missing, SentencePiece ids checked against HF tokenizers only")
        return None
    return AutoTokenizer.from_pretrained(os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path))


def merges_from_ids(tokenizer_json):
    """The same tokenizer with merges ranked by token id instead of score: the fixture is
    built so that this tokenizes the corpus differently (the order matters)."""
    from tokenizers import Tokenizer
    data = json.loads(tokenizer_json)
    vocab = data["model"]["vocab"]
    merges = []
    for token, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
        merges += [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in vocab and token[i:] in vocab]
    data["model"]["merges"] = merges
    return Tokenizer.from_str(json.dumps(data))


def check_sentencepiece(tmp, write_gguf, hf_weights, anvil):
    from tokenizers import Tokenizer
    texts = parity_corpus()
    tokens = gguf_sentencepiece.sentencepiece_vocab(texts)[0]
    path = os.path.join(tmp, "sp.gguf")
    write_gguf(path, "llama", hf_weights(np.random.default_rng(5), "llama", True, vocab=len(tokens)),
               tokenizer=lambda w: gguf_sentencepiece.add_sentencepiece_tokenizer(w, texts))
    out = os.path.join(tmp, "sp-hf")
    anvil("import", path, "--out", out)
    tok_json = open(os.path.join(out, "tokenizer.json"), encoding="utf-8").read()
    ours = Tokenizer.from_str(tok_json)
    want = [e.ids for e in ours.encode_batch(texts)]
    # anvil reads what import wrote and agrees with HF tokenizers (line by line: no '\n').
    lines = [i for i, t in enumerate(texts) if "\n" not in t and "\r" not in t]
    for special in (True, False):
        hf = want if special else [e.ids for e in ours.encode_batch(texts, add_special_tokens=False)]
        got = anvil_ids(anvil, out, [texts[i] for i in lines], special)
        bad = [i for i, g in zip(lines, got) if g != hf[i]]
        assert len(got) == len(lines) and not bad, (special, [(texts[i], hf[i]) for i in bad[:3]])
    assert [e.ids for e in merges_from_ids(tok_json).encode_batch(texts)] != want, "the merge order must matter"
    cfg = json.load(open(os.path.join(out, "tokenizer_config.json")))
    assert (cfg["bos_token"], cfg["eos_token"], cfg["unk_token"], cfg["pad_token"], cfg["add_bos_token"]) == \
        ("<s>", "</s>", "<unk>", "<unk>", True), cfg
    check_sentencepiece_variants(tmp, write_gguf, hf_weights, anvil, texts, len(tokens))
    ref = transformers_tokenizer(tmp, path)
    if ref is None:
        return
    ref_json = json.loads(ref.backend_tokenizer.to_str())
    assert [tuple(m) for m in json.loads(tok_json)["model"]["merges"]] == \
        [tuple(m) for m in ref_json["model"]["merges"]], "merges differ from transformers' derivation"
    ref_ids = [ref(t).input_ids for t in texts]
    bad = [i for i in range(len(texts)) if ref_ids[i] != want[i]]
    assert not bad, [(texts[i], ref_ids[i], want[i]) for i in bad[:3]]
    decoded = [ours.decode(ids) for ids in want[:200]]
    assert decoded == [ref.decode(ids, skip_special_tokens=True) for ids in want[:200]]
    print(f"import: SentencePiece tokenizer, {len(texts)} parity texts: anvil = HF tokenizers = transformers GGUF")


def check_sentencepiece_variants(tmp, write_gguf, hf_weights, anvil, texts, vocab):
    """add_space_prefix false (llama.cpp puts no "▁" before the text; transformers ignores
    the key): anvil and HF tokenizers still agree on what import wrote. add_eos_token: EOS
    after the text in all three. Scores that do not match the tokens: exit 2 naming the key."""
    from tokenizers import Tokenizer
    weights = hf_weights(np.random.default_rng(5), "llama", True, vocab=vocab)
    path = os.path.join(tmp, "sp-noprefix.gguf")
    write_gguf(path, "llama", weights, tokenizer=lambda w: gguf_sentencepiece.add_sentencepiece_tokenizer(
        w, texts, add_bos=None, add_space_prefix=False))
    out = os.path.join(tmp, "sp-noprefix-hf")
    anvil("import", path, "--out", out)
    tok = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    assert tok.pre_tokenizer.prepend_scheme == "never"
    lines = [t for t in texts[:400] if "\n" not in t and "\r" not in t]
    # add_bos absent from the file: llama.cpp's default for SentencePiece, BOS on.
    assert anvil_ids(anvil, out, lines, True) == [e.ids for e in tok.encode_batch(lines)]
    assert all(e.ids[:1] == [1] for e in tok.encode_batch(lines))

    # BOS off and EOS on: the same ids as transformers' GGUF loading gives.
    path = os.path.join(tmp, "sp-eos.gguf")
    write_gguf(path, "llama", weights, tokenizer=lambda w: gguf_sentencepiece.add_sentencepiece_tokenizer(
        w, texts, add_bos=False, add_eos=True))
    out = os.path.join(tmp, "sp-eos-hf")
    anvil("import", path, "--out", out)
    want = [e.ids for e in Tokenizer.from_file(os.path.join(out, "tokenizer.json")).encode_batch(lines)]
    tok = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    assert tok.encode("hi").ids[-1] == 2 and tok.encode("hi").ids[0] != 1
    assert anvil_ids(anvil, out, lines, True) == want
    ref = transformers_tokenizer(tmp, path)
    if ref is not None:
        assert [ref(t).input_ids for t in lines] == want

    def short_scores(w):
        gguf_sentencepiece.add_sentencepiece_tokenizer(w, texts)
        w.kv_data[0].pop("tokenizer.ggml.scores")  # replaced by one score too few
        w.add_token_scores([0.0] * (vocab - 1))

    path = os.path.join(tmp, "sp-bad.gguf")
    write_gguf(path, "llama", weights, tokenizer=short_scores)
    msg = anvil("import", path, "--out", os.path.join(tmp, "sp-bad-hf"), expect=2)
    assert f"tokenizer.ggml.scores has {vocab - 1} entries for {vocab} tokens" in msg and path in msg, msg


def check_invalid_utf8(tmp, write_gguf, hf_weights, anvil, vocab):
    """A token that is not UTF-8 cannot go into tokenizer.json: exit 2 naming it, nothing written."""
    def tokenizer(w):
        w.add_tokenizer_model("gpt2")
        w.add_token_list([b"\xff\xfe" if i == 7 else f"t{i}".encode() for i in range(vocab)])

    path = os.path.join(tmp, "bad-utf8.gguf")
    write_gguf(path, "llama", hf_weights(np.random.default_rng(1), "llama", True), tokenizer=tokenizer)
    out = os.path.join(tmp, "bad-utf8-hf")
    msg = anvil("import", path, "--out", out, expect=2)
    assert "tokenizer.ggml.tokens must be a list of UTF-8 strings (entry 7 is not)" in msg and path in msg, msg
    assert not os.path.exists(out)


def llama3_factors(half, theta, factor, low, high, old):
    """convert_hf_to_gguf.py's rope_freqs.weight for Llama 3 rope scaling."""
    out = []
    for i in range(half):
        freq = float(np.float32(1.0 / theta ** (2 * i / (2 * half))))
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def check_rope_freqs(tmp, write_gguf, hf_weights, anvil, head_dim=16, theta=50000.0):
    """Llama 3.1-style files: the parameters come back into config.json (with the two
    frequencies between the long and short wavelengths, from the tensor itself; with one,
    Meta's low/high factors); rope_freqs.weight is no model tensor; other factors refused."""
    from safetensors.numpy import load_file
    cases = [("default", (8.0, 1.0, 4.0, 8192), None),
             ("band", (16.0, 0.5, 8.0, 4096), 4096),
             ("longrope", None, None)]
    for name, params, orig_ctx in cases:
        factors = llama3_factors(head_dim // 2, theta, *params) if params else \
            np.linspace(1.0, 3.0, head_dim // 2, dtype=np.float32) ** 1.7

        def extra(w, factors=factors, orig_ctx=orig_ctx):
            w.add_tensor("rope_freqs.weight", factors)
            if orig_ctx is not None:
                w.add_rope_scaling_orig_ctx_len(orig_ctx)

        path = os.path.join(tmp, f"rope-{name}.gguf")
        write_gguf(path, "llama", hf_weights(np.random.default_rng(2), "llama", True), extra=extra)
        out = os.path.join(tmp, f"rope-{name}-hf")
        if params is None:
            msg = anvil("import", path, "--out", out, expect=2)
            assert "tensor 'rope_freqs.weight' is not Llama 3 rope scaling" in msg and path in msg, msg
            continue
        anvil("import", path, "--out", out)
        cfg = json.load(open(os.path.join(out, "config.json")))
        factor, low, high, old = params
        want = {"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
                "original_max_position_embeddings": old}
        assert cfg["rope_scaling"] == want, (name, cfg["rope_scaling"])
        assert "rope_freqs.weight" not in load_file(os.path.join(out, "model.safetensors"))
        check_rope_against_transformers(out, factors, head_dim, theta)
    print("import: Llama 3 rope scaling from rope_freqs.weight")


def check_rope_against_transformers(model_dir, factors, head_dim, theta):
    """transformers' llama3 frequencies for the written config are llama.cpp's: the base
    frequencies divided by the file's factors."""
    try:
        import torch  # noqa: F401  the rope functions compute in torch
        from transformers import AutoConfig
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    except ImportError:
        return
    inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](AutoConfig.from_pretrained(model_dir), "cpu")
    base = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)
    assert np.allclose(inv_freq.numpy(), base / factors, rtol=1e-5), (inv_freq, base / factors)


def check_logits(model_dir, logits_tool):
    """anvil's training forward and its generation path (logits_tool) give transformers'
    logits on an imported directory; for qwen2 this covers the q/k/v biases in anvil's
    forward (training such a model is still refused)."""
    try:
        import torch
        from transformers import AutoModelForCausalLM
    except ImportError:
        print("import: torch/transformers missing, anvil's logits not compared")
        return
    if logits_tool is None:
        return
    ids = [3, 17, 5, 60, 2, 9, 44, 1]
    prefix = model_dir + ".logits"
    p = subprocess.run([logits_tool, model_dir, prefix, *map(str, ids)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()  # (T, V)
    for path in ("forward", "generate"):
        got = np.fromfile(f"{prefix}.{path}.f32", dtype=np.float32).reshape(want.shape)
        os.remove(f"{prefix}.{path}.f32")
        # Random weights give logits near 25: relative to the largest, as f32 rounding is.
        err = float(np.abs(got - want).max() / np.abs(want).max())
        assert err <= 1e-5, f"{model_dir}: anvil's {path} logits differ from transformers' by {err:.2e} (relative)"
    print(f"import: anvil's logits = transformers' on {os.path.basename(model_dir)}")
