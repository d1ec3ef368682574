"""The tokenizer metadata of anvil's GGUF export against llama.cpp's own: a GGUF goes
through `anvil import`, and the tokenizer.* keys anvil would write for the imported
directory (gguf_tokenizer_meta_tool, argv[1]) must be the GGUF's, read with llama.cpp's
`gguf` package: tokens, token types, merges, pre-tokenizer, special ids, add_bos/add_eos,
chat template.

    test_gguf_tokenizer_meta.py TOOL              tiny GGUFs written with the `gguf` package
                                                  as convert_hf_to_gguf.py writes them: byte-level
                                                  BPE with each pre-tokenizer anvil knows, and
                                                  SentencePiece-style vocabularies
    test_gguf_tokenizer_meta.py TOOL --reference  the real SmolLM2-135M-Instruct GGUF that
                                                  llama.cpp converted (scripts/fetch_model.sh);
                                                  exit 77 (skipped) without the package registry

What may differ, and only in these ways: a key present on one side alone must hold the value
llama.cpp assumes when the key is absent (e.g. add_eos_token false); import's legacy "gpt2"
pre-tokenizer name comes back as llama.cpp's "gpt-2"; SentencePiece scores, which
tokenizer.json does not keep, come back as merge ranks that order the tokens as the original
scores do; a user-defined token that looks special comes back as a control token, as
convert_hf_to_gguf.py writes it."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from gguf import GGUFReader

TOOL = sys.argv[1]
REFERENCE = "--reference" in sys.argv[2:]
ANVIL = os.environ["ANVIL_BIN"]
SOURCE = os.environ["ANVIL_SOURCE_DIR"]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SOURCE, "scripts", "fixtures"))


def exported(model_dir):
    p = subprocess.run([TOOL, model_dir], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return {d["key"]: d for d in map(json.loads, p.stdout.splitlines())}


def original(gguf):
    out = {}
    for key, f in GGUFReader(gguf).fields.items():
        if key.startswith("tokenizer."):
            d = {"key": key, "type": int(f.types[0]), "value": f.contents()}
            if len(f.types) > 1:
                d["elem_type"] = int(f.types[1])
            out[key] = d
    return out


CONTROL, USER_DEFINED = 3, 4


def looks_special(token):
    """convert_hf_to_gguf.py's does_token_look_special: such an added token is written as a
    control token even where tokenizer.json does not mark it special (the SentencePiece
    fixture's user-defined "<|user|>")."""
    return token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or any(
        token.startswith(a) and token.endswith(b) for a, b in (("<|", "|>"), ("<\uff5c", "\uff5c>"), ("<unused", ">")))


def llama_cpp_default(key, model, pre):
    """What llama.cpp's vocabulary loader assumes for a key the file does not have."""
    return {"tokenizer.ggml.add_space_prefix": model == "llama",
            "tokenizer.ggml.add_bos_token": model == "llama" or pre == "llama-bpe",
            "tokenizer.ggml.add_eos_token": False,
            "tokenizer.ggml.add_sep_token": False}.get(key)


def check_scores(want, got, types):
    """Every token a merge makes scores below 0, and sorting those by our score sorts them by
    the original's too (llama.cpp's SentencePiece merges follow the score)."""
    want, got = np.asarray(want["value"]), np.asarray(got["value"])
    made = np.flatnonzero((got < 0) & (np.asarray(types) == 1))
    assert len(made) > 0
    order = made[np.argsort(got[made])]
    assert np.all(np.diff(want[order]) >= 0), "scores out of the original order"
    return len(made)


def compare(gguf, model_dir, label):
    want, got = original(gguf), exported(model_dir)
    model = want["tokenizer.ggml.model"]["value"]
    pre = want.get("tokenizer.ggml.pre", {}).get("value")
    for key in sorted(set(want) | set(got)):
        if key in want and key in got:
            w, g = dict(want[key]), dict(got[key])
            if key == "tokenizer.ggml.scores":
                n = check_scores(w, g, want["tokenizer.ggml.token_type"]["value"])
                print(f"{label}: scores of {n} merged tokens in the original order")
                continue
            if key == "tokenizer.ggml.token_type":
                tokens = want["tokenizer.ggml.tokens"]["value"]
                w["value"] = [CONTROL if t == USER_DEFINED and looks_special(s) else t for t, s in zip(w["value"], tokens)]
            if key == "tokenizer.ggml.pre" and w["value"] == "gpt2":
                w["value"] = "gpt-2"  # anvil import's name for llama.cpp's gpt-2
            assert w == g, f"{label}: {key}: GGUF {str(w)[:300]} != export {str(g)[:300]}"
        else:
            side, entry = ("GGUF", want[key]) if key in want else ("export", got[key])
            default = llama_cpp_default(key, model, pre)
            assert default is not None and entry["value"] == default, \
                f"{label}: {key} only in the {side}, {entry['value']!r}, not llama.cpp's default {default!r}"
    print(f"{label}: {len(want)} tokenizer keys as llama.cpp wrote them ({len(want['tokenizer.ggml.tokens']['value'])} "
          "tokens)")


def check_llama_cpp_split(gguf, tok, pre, texts):
    """The pairing itself: llama.cpp's tokens for the GGUF's tokenizer.ggml.pre are those of
    the HF tokenizer whose pre_tokenizer anvil maps to that name, on the parity corpus, but
    for two known differences of llama.cpp's: code points Unicode assigned after 14.0 (its
    tables and HF's Oniguruma class them differently; Python 3.11 knows 14.0, so they are
    unassigned here), and for llama4 a combining mark where no letter precedes it (llama.cpp
    rewrites the o200k pattern's letter classes without \p{M})."""
    import llama_cpp
    import unicodedata
    llm = llama_cpp.Llama(model_path=gguf, vocab_only=True, verbose=False)
    texts = [t for t in texts if not any(unicodedata.category(c) == "Cn" for c in t)]
    bad = [t for t in texts if llm.tokenize(t.encode(), add_bos=False, special=True) != tok.encode(t).ids]
    marks = [t for t in bad if any(unicodedata.category(c) == "Mn" and not (i and texts_letter(t[i - 1]))
                                   for i, c in enumerate(t))] if pre == "llama4" else []
    assert bad == marks, f"{pre}: llama.cpp splits {len(bad)} of {len(texts)} texts another way, e.g. {bad[0]!r}"
    assert len(marks) < len(texts) / 100, (pre, len(marks))
    print(f"{pre}: llama.cpp's tokens are HF's on {len(texts) - len(bad)} of {len(texts)} texts"
          f"{f' (the other {len(marks)}: a combining mark after a non-letter)' if marks else ''}")


def texts_letter(c):
    import unicodedata
    return unicodedata.category(c)[0] in "LM"


def anvil_import(gguf, out):
    p = subprocess.run([ANVIL, "import", gguf, "--out", out], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    return out


def check_tiny(tmp):
    import test_import as ti
    import gguf_sentencepiece
    from import_checks import parity_corpus
    texts = parity_corpus()
    for pre in ("gpt2", "smollm", "llama-bpe", "qwen2", "llama4"):
        tok = ti.train_tokenizer(pre)
        path = os.path.join(tmp, f"tok-{pre}.gguf")
        ti.write_gguf(path, "llama", ti.hf_weights(np.random.default_rng(3), "llama", True, vocab=tok.get_vocab_size()),
                      tokenizer=(tok, pre))
        compare(path, anvil_import(path, os.path.join(tmp, f"tok-{pre}")), f"byte-level {pre}")
        if pre != "gpt2":  # anvil import's legacy name; llama.cpp's is "gpt-2"
            check_llama_cpp_split(path, tok, pre, texts)
    vocab = len(gguf_sentencepiece.sentencepiece_vocab(texts)[0])
    for name, kwargs in [("default", {}), ("no-space-prefix", {"add_space_prefix": False}),
                         ("eos", {"add_eos": True})]:
        path = os.path.join(tmp, f"sp-{name}.gguf")
        ti.write_gguf(path, "llama", ti.hf_weights(np.random.default_rng(5), "llama", True, vocab=vocab),
                      tokenizer=lambda w, kw=kwargs: gguf_sentencepiece.add_sentencepiece_tokenizer(w, texts, **kw))
        compare(path, anvil_import(path, os.path.join(tmp, f"sp-{name}")), f"SentencePiece {name}")


def main():
    if REFERENCE:
        from real_model import fetch_smollm2
        model_dir, gguf = fetch_smollm2(ANVIL, SOURCE)
        compare(gguf, model_dir, "SmolLM2-135M-Instruct")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            check_tiny(tmp)
    print("gguf tokenizer metadata: ok")


if __name__ == "__main__":
    main()
