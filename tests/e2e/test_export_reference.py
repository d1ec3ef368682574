"""`anvil export` against the Python references: train a few steps on the demo data with the
tiny model, export the step-4 checkpoint merged (one file, and sharded) and as a PEFT
adapter, then
  - PyPI safetensors reads every file written; the index lists every tensor once;
  - HF transformers loads the merged directory (fp32, CPU) and its tokenizer, and its
    logits on fixed prompts equal those of the base model + the exported adapter loaded
    with peft.PeftModel (relative 1e-4): anvil's merge is PEFT's merge;
  - anvil itself agrees (generate on the merged model = generate with the adapter);
  - anvil inspect reads the checkpoint; a wrong base model and a non-empty output are
    refused with exit 2.
Needs the reference set (scripts/setup.sh --reference); without it the test is skipped
(exit 77)."""
import json
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    import transformers
    from peft import PeftModel
    from safetensors.numpy import load_file
except ImportError as e:
    print(f"SKIP: the Python references are not installed ({e}); run scripts/setup.sh --reference")
    sys.exit(77)

ANVIL = os.environ["ANVIL_BIN"]
SRC = os.environ["ANVIL_SOURCE_DIR"]
CONFIG = os.path.join(SRC, "configs", "demo-cpu.yaml")
PROMPTS = ["The capital of France is", "1 + 2 =", "Grüße, мир! tabs\tand  spaces"]


def anvil(*args, expect=0):
    p = subprocess.run([ANVIL, *args], capture_output=True, text=True, cwd=SRC)
    assert p.returncode == expect, f"anvil {' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout + p.stderr


def rel_error(a, b):
    return float((a - b).abs().max() / b.abs().max())


def read_all_safetensors(d):
    """Every .safetensors file of d through PyPI safetensors, and the index against them."""
    files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
    assert files, d
    where = {}
    for f in files:
        for name in load_file(os.path.join(d, f)):
            assert name not in where, f"{name} in {where.get(name)} and {f}"
            where[name] = f
    index = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(index):
        assert len(files) > 1, files
        assert json.load(open(index))["weight_map"] == where
    return where


@torch.no_grad()
def logits_of(model, tok):
    out = []
    for text in PROMPTS:
        ids = tok(text, return_tensors="pt").input_ids
        out.append(model(input_ids=ids).logits[0].float())
    return torch.cat(out)


def load_causal_lm(d):
    return transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()


def main():
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="anvil_e2e_export_") as tmp:
        check_export(tmp)
    print("export reference: OK")


def check_export(tmp):
    model = os.path.join(tmp, "model")
    anvil("init-model", "--preset", "tiny", "--out", model, "--seed", "1", "--init-std", "0.1")
    run = os.path.join(tmp, "run")
    sets = [f"model.path={model}", f"output_dir={run}", "train.steps=4", "train.warmup_steps=1",
            "checkpoint.every=2", "train.eval_every=0", "data.seq_len=64"]
    anvil("train", CONFIG, *[a for s in sets for a in ("--set", s)])
    ckpt = os.path.join(run, "checkpoints", "step_4.h5")

    info = anvil("inspect", ckpt, "--config")
    for want in ("step: 4", f"base model: {model}", "r 8, alpha 16", "28 tensors", "checksums verified",
                 "resolved config:"):
        assert want in info, (want, info)

    merged, sharded, adapter = (os.path.join(tmp, d) for d in ("merged", "sharded", "adapter"))
    anvil("export", ckpt, "--out", merged)
    anvil("export", ckpt, "--out", sharded, "--max-shard-size", "150KB")
    anvil("export", ckpt, "--out", adapter, "--format", "peft")
    one = read_all_safetensors(merged)
    many = read_all_safetensors(sharded)
    assert set(one.values()) == {"model.safetensors"} and len(set(many.values())) > 2, many
    assert one.keys() == many.keys() == load_file(os.path.join(model, "model.safetensors")).keys()
    read_all_safetensors(adapter)
    cfg = json.load(open(os.path.join(merged, "config.json")))
    assert cfg.get("torch_dtype", cfg.get("dtype")) == "float32", cfg
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if os.path.exists(os.path.join(model, f)):
            assert open(os.path.join(merged, f), "rb").read() == open(os.path.join(model, f), "rb").read(), f

    # The references: transformers on the merged directory, transformers + PEFT on the base.
    tok = transformers.AutoTokenizer.from_pretrained(merged)
    got = logits_of(load_causal_lm(merged), tok)
    base = load_causal_lm(model)
    plain = logits_of(base, tok)
    want = logits_of(PeftModel.from_pretrained(base, adapter).eval(), tok)
    err, moved = rel_error(got, want), rel_error(plain, want)
    print(f"merged vs base + PEFT adapter: relative error {err:.2e} (the adapter moves logits by {moved:.2e})")
    assert err < 1e-4, err
    assert moved > 10 * err, "the adapter must change the logits measurably"
    assert rel_error(logits_of(load_causal_lm(sharded), tok), got) < 1e-6

    # anvil agrees with itself: the merged model decodes as the base model with the adapter.
    gen = ["generate", "--prompt", PROMPTS[0], "--max-new-tokens", "8"]
    assert anvil(*gen[:1], merged, *gen[1:]) == anvil(*gen[:1], model, "--adapter", adapter, *gen[1:])

    # Refusals: a non-empty output without --force, a base model that is not the one trained on.
    out = anvil("export", ckpt, "--out", merged, expect=2)
    assert "--force" in out, out
    anvil("export", ckpt, "--out", merged, "--force", "--dtype", "bf16")
    assert json.load(open(os.path.join(merged, "config.json"))).get("torch_dtype") == "bfloat16"
    other = os.path.join(tmp, "other")
    anvil("init-model", "--preset", "tiny-tied", "--out", other)
    out = anvil("export", ckpt, "--out", os.path.join(tmp, "wrong"), "--base", other, expect=2)
    assert other in out and model in out, out
    assert not os.path.exists(os.path.join(tmp, "wrong"))


if __name__ == "__main__":
    main()
