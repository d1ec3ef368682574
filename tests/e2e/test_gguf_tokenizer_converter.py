"""The tokenizer metadata of anvil's GGUF export against llama.cpp's convert_hf_to_gguf.py
itself, run on the same Hugging Face tokenizer directories: the tokenizer fixtures
(tests/unit's tokenizer_fixtures: GPT-2, Llama 3, Qwen2, SmolLM2, Llama 2, Mistral families)
and variants of them with a config.json (vocab padding, Llama's add_space_prefix), a
chat_template.jinja and a list of named templates. The converter comes from the
llama-cpp-python sdist on PyPI (pinned), extracted once into CONVERTER_DIR in the build tree;
gguf_converter_vocab.py runs its set_vocab.

    test_gguf_tokenizer_converter.py TOOL FIXTURES CONVERTER_DIR   (exit 77: no PyPI, torch
                                                                    or transformers)

Every key, in the same order with the same type and value, but where anvil differs on
purpose, for SentencePiece-style tokenizers only (the converter's LlamaHfVocab path):
  - scores: the converter writes -1000 for every token, and llama.cpp then merges left to
    right; anvil ranks tokens by tokenizer.json's merges (checked here against them, and
    llama.cpp's SentencePiece tokenizer, re-implemented here, then gives HF's ids on the
    fixture texts);
  - token types: the unk token is unknown (2), not control; added tokens tokenizer.json
    marks special are control (3), as the converter's byte-level and tokenizer.model paths
    make them, where LlamaHfVocab makes them normal or user-defined.
The pre-tokenizer name is not compared: the converter names only released models (by a hash
of their output); tests/e2e/test_gguf_tokenizer_meta.py checks anvil's names."""
import glob
import heapq
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

TOOL, FIXTURES, CONVERTER = sys.argv[1:4]
HERE = os.path.dirname(os.path.abspath(__file__))
SDIST = "llama-cpp-python==0.3.36"
BYTE_LEVEL = {"gpt2": "gpt-2", "llama3": "llama-bpe", "qwen2": "qwen2", "smollm2": "smollm"}
SENTENCEPIECE = ("llama2", "mistral")

try:
    import torch  # noqa: F401  (convert_hf_to_gguf.py imports it)
    import transformers  # noqa: F401
except ImportError as e:
    print(f"skipped: needs torch and transformers (scripts/setup.sh --reference): {e}")
    sys.exit(77)


def fetch_converter():
    """convert_hf_to_gguf.py's conversion/ and gguf-py/ from the sdist, in CONVERTER/llama.cpp."""
    out = os.path.join(CONVERTER, "llama.cpp")
    if os.path.isdir(os.path.join(out, "conversion")):
        return out
    sdist_dir = os.path.join(CONVERTER, "sdist")
    os.makedirs(sdist_dir, exist_ok=True)
    if not glob.glob(os.path.join(sdist_dir, "*.tar.gz")):
        p = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-python",
                            SDIST, "-d", sdist_dir], capture_output=True, text=True)
        if not glob.glob(os.path.join(sdist_dir, "*.tar.gz")):
            print(f"skipped: the llama-cpp-python sdist cannot be fetched from PyPI\n{p.stdout}\n{p.stderr}")
            sys.exit(77)
    with tarfile.open(glob.glob(os.path.join(sdist_dir, "*.tar.gz"))[0]) as tar:
        for m in tar.getmembers():
            rel = m.name.split("/vendor/llama.cpp/", 1)[-1] if "/vendor/llama.cpp/" in m.name else None
            if m.isfile() and rel and (rel.startswith("conversion/") or rel.startswith("gguf-py/gguf/")):
                os.makedirs(os.path.dirname(os.path.join(out, rel)), exist_ok=True)
                with open(os.path.join(out, rel), "wb") as f:
                    f.write(tar.extractfile(m).read())
    return out


def lines(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, f"{' '.join(cmd)}: {p.stderr[-3000:]}"
    return [json.loads(line) for line in p.stdout.splitlines()]


def check_scores(model_dir, got):
    """Each token a merge makes scores -(1 + the rank of the first merge that makes it)."""
    spec = json.load(open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8"))["model"]
    want = {}
    for rank, m in enumerate(spec["merges"]):
        joined = m.replace(" ", "", 1) if isinstance(m, str) else m[0] + m[1]
        if joined in spec["vocab"]:
            want.setdefault(spec["vocab"][joined], -float(rank + 1))
    assert [want.get(i, 0.0) for i in range(len(got))] == got, "scores are not the merge ranks"


def converter_vocab(converter, cases):
    """{model_dir: the converter's tokenizer.* entries}, from one run (torch loads once)."""
    out = {d: [] for d, _, _ in cases}
    args = [a for d, pre, _ in cases for a in (d, pre)]
    for entry in lines([sys.executable, os.path.join(HERE, "gguf_converter_vocab.py"), converter, *args]):
        out[entry.pop("dir")].append(entry)
    return out


def llama_cpp_sentencepiece(text, ids, scores, add_space_prefix):
    """llama.cpp's SentencePiece tokenizer (llm_tokenizer_spm_session) on text without special
    tokens: characters are merged pairwise, the pair whose joined token scores highest first
    (leftmost on ties); a final piece that is no token is split back, or spelled in bytes."""
    if not text:
        return []  # llama.cpp tokenizes nothing, no prefix either
    text = ((" " if add_space_prefix else "") + text).replace(" ", "\u2581")
    sym = [[i, 1, i - 1, i + 1 if i + 1 < len(text) else -1] for i in range(len(text))]  # start, n, prev, next
    queue, rev_merge = [], {}

    def add_bigram(left, right):
        if left == -1 or right == -1:
            return
        piece = text[sym[left][0]:sym[left][0] + sym[left][1] + sym[right][1]]
        if piece in ids:
            heapq.heappush(queue, (-scores[ids[piece]], left, right, len(piece)))
            rev_merge[piece] = (left, right)

    for i in range(1, len(sym)):
        add_bigram(i - 1, i)
    while queue:
        _, left, right, size = heapq.heappop(queue)
        if sym[left][1] == 0 or sym[right][1] == 0 or sym[left][1] + sym[right][1] != size:
            continue
        sym[left][1] += sym[right][1]
        sym[right][1] = 0
        sym[left][3] = sym[right][3]
        if sym[right][3] >= 0:
            sym[sym[right][3]][2] = left
        add_bigram(sym[left][2], left)
        add_bigram(left, sym[left][3])
    out = []

    def resegment(i):
        piece = text[sym[i][0]:sym[i][0] + sym[i][1]]
        if piece in ids:
            out.append(ids[piece])
        elif piece in rev_merge:
            resegment(rev_merge[piece][0])
            resegment(rev_merge[piece][1])
        else:
            out.extend(ids[f"<0x{b:02X}>"] for b in piece.encode())

    i = 0 if sym else -1
    while i != -1:
        resegment(i)
        i = sym[i][3]
    return out


def check_llama_cpp_ids(model_dir, want, got, label):
    """The ids llama.cpp's tokenizer gives with anvil's scores are HF's on the fixture texts
    (those without added tokens); with the converter's flat scores they are not."""
    spec = json.load(open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8"))
    added = [a["content"] for a in spec["added_tokens"]]
    cases = [json.loads(line) for line in open(os.path.join(model_dir, "expected.jsonl"), encoding="utf-8")]
    cases = [c for c in cases if not any(a in c["text"] for a in added)]
    # HF's Metaspace puts no "\u2581" before a text that starts with a space or "\u2581";
    # llama.cpp's add_space_prefix always does (so does the converter's GGUF): not the
    # metadata's to fix.
    if (spec["pre_tokenizer"] or {}).get("type") == "Metaspace":
        cases = [c for c in cases if not c["text"].startswith((" ", "\u2581"))]
    kv = {g["key"]: g["value"] for g in got}
    ids = {t: i for i, t in enumerate(kv["tokenizer.ggml.tokens"])}
    prefix = kv.get("tokenizer.ggml.add_space_prefix", True)
    bad = [c["text"] for c in cases
           if llama_cpp_sentencepiece(c["text"], ids, kv["tokenizer.ggml.scores"], prefix) != c["ids"]]
    assert not bad, f"{label}: llama.cpp's tokenizer with anvil's scores differs from HF on {len(bad)} texts: {bad[:3]}"
    flat = next(w["value"] for w in want if w["key"] == "tokenizer.ggml.scores")
    differ = sum(llama_cpp_sentencepiece(c["text"], ids, flat, prefix) != c["ids"] for c in cases)
    print(f"{label}: llama.cpp's tokenizer = HF on {len(cases)} texts with anvil's scores "
          f"({differ} differ with the converter's)")


def compare(want, model_dir, pre, label):
    sentencepiece = pre == "default"
    got = lines([TOOL, model_dir])
    assert [w["key"] for w in want] == [g["key"] for g in got], \
        f"{label}: keys\n  converter {[w['key'] for w in want]}\n  anvil     {[g['key'] for g in got]}"
    tokens = next(g["value"] for g in got if g["key"] == "tokenizer.ggml.tokens")
    spec = json.load(open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8"))
    special = {a["id"] for a in spec["added_tokens"] if a["special"]}
    retyped = 0
    for w, g in zip(want, got):
        g.pop("elem_type", None)
        if sentencepiece and w["key"] == "tokenizer.ggml.scores":
            assert set(w["value"]) == {-1000.0}, f"{label}: the converter's scores changed"
            check_scores(model_dir, g["value"])
            if os.path.exists(os.path.join(model_dir, "expected.jsonl")):
                check_llama_cpp_ids(model_dir, want, got, label)
            continue
        if sentencepiece and w["key"] == "tokenizer.ggml.token_type":
            for i, (wt, gt) in enumerate(zip(w["value"], g["value"])):
                if wt != gt:
                    ok = (gt == 2 and tokens[i] == spec["model"]["unk_token"]) or (gt == 3 and i in special)
                    assert ok, f"{label}: token {i} {tokens[i]!r}: type {gt}, the converter's {wt}"
                    retyped += 1
            continue
        assert w == g, f"{label}: {w['key']}: converter {str(w)[:300]} != anvil {str(g)[:300]}"
    print(f"{label}: {len(got)} keys as convert_hf_to_gguf.py writes them"
          + (f" ({retyped} special token types and the scores on purpose otherwise)" if sentencepiece else ""))


def variants(tmp):
    """Fixture copies with what the fixtures lack: config.json (a larger vocab_size: [PADi]
    tokens; Llama's add_prefix_space), chat_template.jinja, a list of named templates."""
    llama3 = os.path.join(tmp, "llama3-padded")
    shutil.copytree(os.path.join(FIXTURES, "llama3"), llama3)
    n = len(json.load(open(os.path.join(llama3, "tokenizer.json")))["model"]["vocab"])
    json.dump({"architectures": ["LlamaForCausalLM"], "vocab_size": n + 13, "bos_token_id": 0},
              open(os.path.join(llama3, "config.json"), "w"))
    cfg = json.load(open(os.path.join(llama3, "tokenizer_config.json")))
    cfg["add_prefix_space"] = False
    json.dump(cfg, open(os.path.join(llama3, "tokenizer_config.json"), "w"))
    with open(os.path.join(llama3, "chat_template.jinja"), "w") as f:
        f.write("{% for m in messages %}<|start_header_id|>{{ m['role'] }}{% endfor %}")
    qwen2 = os.path.join(tmp, "qwen2-templates")
    shutil.copytree(os.path.join(FIXTURES, "qwen2"), qwen2)
    cfg = json.load(open(os.path.join(qwen2, "tokenizer_config.json")))
    cfg["chat_template"] = [{"name": "default", "template": "{{ messages }}"},
                            {"name": "tool use", "template": "{{ tools }}"}]
    json.dump(cfg, open(os.path.join(qwen2, "tokenizer_config.json"), "w"))
    mistral = os.path.join(tmp, "mistral-config")
    shutil.copytree(os.path.join(FIXTURES, "mistral"), mistral)
    json.dump({"architectures": ["MistralForCausalLM"], "eos_token_id": 2},
              open(os.path.join(mistral, "config.json"), "w"))
    return [(llama3, "llama-bpe"), (qwen2, "qwen2"), (mistral, "default")]


def main():
    converter = fetch_converter()
    with tempfile.TemporaryDirectory() as tmp:
        cases = [(os.path.join(FIXTURES, name), pre, name)
                 for name, pre in list(BYTE_LEVEL.items()) + [(n, "default") for n in SENTENCEPIECE]]
        cases += [(d, pre, os.path.basename(d)) for d, pre in variants(tmp)]
        want = converter_vocab(converter, cases)
        for model_dir, pre, label in cases:
            compare(want[model_dir], model_dir, pre, label)
    print("gguf tokenizer metadata = convert_hf_to_gguf.py: ok")


if __name__ == "__main__":
    main()
