"""Reference tier: the real SmolLM2-135M-Instruct GGUF (scripts/fetch_model.sh) imported by
anvil against transformers' own GGUF loader. The same weights (transformers dequantizes
with the `gguf` package too), the same logits for a prompt within 1e-4 (transformers on the
imported directory, and anvil's own training forward and generation path, through
logits_tool, argv[1]), the tokens of the tokenizer parity corpus (transformers' GGUF
tokenizer, which ignores the file's "smollm" pre-tokenizer, equals the import's without its
digit splitting; anvil tokenize equals HF tokenizers on the import), and anvil generate's
greedy text is transformers' greedy text.
Exit 77 (skipped) without torch/transformers or without the package registry."""
import json
import os
import subprocess
import sys

import numpy as np

ANVIL = os.environ["ANVIL_BIN"]
LOGITS_TOOL = sys.argv[1]
SOURCE = os.environ["ANVIL_SOURCE_DIR"]
PROMPT = "The capital of France is"
NEW_TOKENS = 12

try:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
except ImportError as e:
    print(f"skipped: needs torch and transformers (scripts/setup.sh --reference): {e}")
    sys.exit(77)

from real_model import fetch_smollm2  # noqa: E402
from import_checks import parity_corpus  # noqa: E402


def check_peak_rss(gguf, tmp_out):
    """anvil import holds about one tensor in f32 at a time: its peak RSS stays under three
    times the largest tensor (the 49152 x 576 embedding, 113 MB in f32)."""
    probe = ("import resource, subprocess, sys; "
             "p = subprocess.run(sys.argv[1:], capture_output=True); "
             "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", probe, ANVIL, "import", gguf, "--out", tmp_out, "--force"],
                         capture_output=True, text=True, check=True).stdout.split()
    rc, peak_kb = int(out[0]), int(out[1])
    largest = 49152 * 576 * 4
    assert rc == 0 and peak_kb * 1024 <= 3 * largest, (rc, peak_kb)
    return peak_kb


def check_anvil_logits(model_dir, ids, ref):
    """anvil's logits for every position of the prompt, from both of its forward paths,
    against transformers' GGUF-loaded model in f32."""
    prefix = model_dir + ".logits"
    p = subprocess.run([LOGITS_TOOL, model_dir, prefix, *map(str, ids[0].tolist())], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    with torch.no_grad():
        want = ref(ids).logits[0].numpy()  # (T, V)
    worst = 0.0
    for path in ("forward", "generate"):
        got = np.fromfile(f"{prefix}.{path}.f32", dtype=np.float32).reshape(want.shape)
        os.remove(f"{prefix}.{path}.f32")
        d = float(np.abs(got - want).max())
        assert d <= 1e-4, f"anvil's {path} logits differ from transformers' by {d}"
        worst = max(worst, d)
    return worst


def main():
    model_dir, gguf = fetch_smollm2(ANVIL, SOURCE)
    peak_kb = check_peak_rss(gguf, model_dir + ".rss-check")
    subprocess.run(["rm", "-rf", model_dir + ".rss-check"], check=True)
    ref = AutoModelForCausalLM.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf),
                                               dtype=torch.float32).eval()
    ours = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    assert sorted(ref_sd) == sorted(our_sd), sorted(set(ref_sd) ^ set(our_sd))
    worst = max((ref_sd[k] - our_sd[k]).abs().max().item() for k in ref_sd)
    assert worst == 0.0, f"weights differ from transformers' GGUF loader by {worst}"

    ref_tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
    our_tok = AutoTokenizer.from_pretrained(model_dir)
    texts = [PROMPT, "Hello, world! 12345 <|im_start|>user hi<|im_end|>", "  naïve café, 日本語 👩🏽‍💻",
             "don't STOP-believing... 3.14159 in 1000000 years"]
    # and the tokenizer parity corpus (its one-line texts: anvil tokenize reads lines)
    texts += [t for t in parity_corpus() if t and "\n" not in t and "\r" not in t]
    # transformers' GGUF loader ignores tokenizer.ggml.pre ("smollm": llama.cpp splits digits
    # one by one, as SmolLM2's own tokenizer.json does) and pre-tokenizes with plain
    # ByteLevel. So: the import's tokenizer without its Digits step gives transformers' ids on
    # every text, and the two differ only where digits other than 0-9 meet (Arabic-Indic,
    # Devanagari, ...: ByteLevel's regex groups those, \p{N}).
    from tokenizers import Tokenizer, pre_tokenizers
    plain = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    assert "Digits" in repr(plain.pre_tokenizer), plain.pre_tokenizer
    plain.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    differ = 0
    for text in texts:
        assert ref_tok(text).input_ids == plain.encode(text, add_special_tokens=False).ids, text
        differ += ref_tok(text).input_ids != our_tok(text).input_ids
    print(f"tokens: {len(texts)} texts; transformers' GGUF tokenizer = the import's without digit splitting on all; "
          f"the import's own (digits split, as llama.cpp's smollm) differs on {differ}")
    # anvil's own tokenizer on the imported tokenizer.json (add_bos_token is false: no specials).
    p = subprocess.run([ANVIL, "tokenize", model_dir], input="\n".join(texts) + "\n", capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    got = [json.loads(line)["ids"] for line in p.stdout.splitlines() if line.startswith("{")]
    assert got == [our_tok(t).input_ids for t in texts], got

    ids = ref_tok(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        delta = (ref(ids).logits - ours(ids).logits).abs().max().item()
        greedy = ref.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)
    assert delta <= 1e-4, f"logits differ by {delta}"
    anvil_delta = check_anvil_logits(model_dir, ids, ref)
    want = ref_tok.decode(greedy[0, ids.shape[1]:], skip_special_tokens=True)

    p = subprocess.run([ANVIL, "generate", model_dir, "--prompt", PROMPT, "--max-new-tokens", str(NEW_TOKENS)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == want.strip(), (p.stdout, want)
    print(f"import_reference: ok (weights identical, logits within {delta:.2e}, anvil's logits within "
          f"{anvil_delta:.2e}, greedy {want!r}, "
          f"import peak RSS {peak_kb // 1024} MiB)")


if __name__ == "__main__":
    main()
