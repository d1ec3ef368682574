"""A Llama4ForConditionalGeneration checkpoint, as Meta publishes Scout and Maverick (the
text model under language_model.*, a vision tower beside it, config.json's text model in
text_config), trained and exported as it is: no re-saving of the text model first.

The fixture is a tiny llama4_text model (anvil init-model) re-saved in that layout by this
script: every tensor renamed language_model.<name>, vision_model.* and
multi_modal_projector.* tensors added, config.json wrapped. Checked against the same model
as a plain Llama4ForCausalLM directory:
  - training gives the same losses, step for step (the same weights, the vision tower
    unread);
  - `--format hf` keeps the checkpoint's layout: the text model under language_model.
    equal to the text directory's merged export bit for bit, the vision tensors the base's
    own bytes, the multimodal config.json;
  - `--format gguf` and `--format mlx` write the text model: the same tensors as from the
    text directory;
  - `--format peft` names the adapter's tensors base_model.model.language_model.* with the
    text directory's values, and target_modules is a regular expression over the language
    model only (PEFT fullmatches it), so the vision tower's q_proj/k_proj/... stay unadapted;
  - a tensor outside both the language model and the vision tower is refused by name (exit 2).
With --reference (transformers + PEFT, scripts/setup.sh --reference; else exit 77):
transformers' Llama4ForConditionalGeneration loads the merged export with anvil's text
logits, and PEFT loads the adapter onto the multimodal base with the merged model's logits.

Usage: test_llama4_multimodal.py LOGITS_TOOL [--reference]"""
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file, save_file

import test_export_moe as moe
from test_export_llama4 import SPEC, TARGETS
from test_export_moe import anvil

REFERENCE = "--reference" in sys.argv[1:]
if REFERENCE and not all(importlib.util.find_spec(m) for m in ("torch", "transformers", "peft")):
    print("SKIP: the Python references (torch, transformers, peft) are not installed; run scripts/setup.sh --reference")
    sys.exit(77)

# A vision tower of transformers' Llama4VisionModel shape, small (its values are never read).
VISION_CONFIG = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                 "image_size": 28, "patch_size": 14, "num_channels": 3, "vision_output_dim": 64,
                 "projector_input_dim": 64, "projector_output_dim": 64, "pixel_shuffle_ratio": 0.5,
                 "norm_eps": 1e-5, "rope_theta": 10000, "model_type": "llama4_vision_model"}


def vision_tensors(rng):
    """A few vision_model.* / multi_modal_projector.* tensors (names as transformers saves them)."""
    names = {"vision_model.patch_embedding.linear.weight": (32, 3 * 14 * 14),
             "vision_model.class_embedding": (32,),
             "vision_model.model.layers.0.self_attn.q_proj.weight": (32, 32),
             "vision_model.model.layers.0.self_attn.q_proj.bias": (32,),
             "multi_modal_projector.linear_1.weight": (64, 64)}
    return {k: rng.standard_normal(v).astype(np.float32) for k, v in names.items()}


def multimodal(text_dir, out, extra=None):
    """text_dir re-saved as a Llama4ForConditionalGeneration checkpoint in out."""
    os.makedirs(out)
    weights = {f"language_model.{k}": v for k, v in load_file(os.path.join(text_dir, "model.safetensors")).items()}
    weights.update(vision_tensors(np.random.default_rng(0)))
    weights.update(extra or {})
    save_file(weights, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    text = json.load(open(os.path.join(text_dir, "config.json")))
    cfg = {"architectures": ["Llama4ForConditionalGeneration"], "model_type": "llama4", "text_config": text,
           "vision_config": VISION_CONFIG, "image_token_index": 300, "boi_token_index": 301, "eoi_token_index": 302,
           "tie_word_embeddings": False}
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
    for f in os.listdir(text_dir):
        if f not in ("model.safetensors", "config.json"):
            shutil.copy(os.path.join(text_dir, f), out)
    return out


def losses(run):
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    return [r["loss"] for r in rows if "loss" in r]


def gguf_tensors(path):
    return {t.name: np.array(t.data) for t in moe.GGUFReader(path).tensors}


def check_exports(tmp, text_ckpt, mm_ckpt, mm_model):
    out = {}
    for name, ckpt in (("text", text_ckpt), ("mm", mm_ckpt)):
        for fmt in ("hf", "peft", "mlx"):
            out[name, fmt] = os.path.join(tmp, f"{name}-{fmt}")
            dtype = [] if fmt == "peft" else ["--dtype", "f32"]
            anvil("export", ckpt, "--format", fmt, *dtype, "--out", out[name, fmt])
        out[name, "gguf"] = os.path.join(tmp, f"{name}.gguf")
        anvil("export", ckpt, "--format", "gguf", "--type", "f32", "--out", out[name, "gguf"])
    # hf: the checkpoint's own layout, the text model merged as from the text directory
    text_hf = load_file(os.path.join(out["text", "hf"], "model.safetensors"))
    mm_hf = load_file(os.path.join(out["mm", "hf"], "model.safetensors"))
    base = load_file(os.path.join(mm_model, "model.safetensors"))
    vision = {k for k in base if not k.startswith("language_model.")}
    assert set(mm_hf) == {f"language_model.{k}" for k in text_hf} | vision, sorted(set(mm_hf) ^ set(base))
    for k, v in text_hf.items():
        assert np.array_equal(mm_hf[f"language_model.{k}"], v), k
    for k in vision:
        assert np.array_equal(mm_hf[k], base[k]), k
    assert json.load(open(os.path.join(out["mm", "hf"], "config.json")))["model_type"] == "llama4"
    # gguf and mlx: the text model, the same tensors
    a, b = gguf_tensors(out["text", "gguf"]), gguf_tensors(out["mm", "gguf"])
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a), sorted(set(a) ^ set(b))
    a = load_file(os.path.join(out["text", "mlx"], "model.safetensors"))
    b = load_file(os.path.join(out["mm", "mlx"], "model.safetensors"))
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a), sorted(set(a) ^ set(b))
    # peft: language_model. in every name, target_modules over the language model only
    a = load_file(os.path.join(out["text", "peft"], "adapter_model.safetensors"))
    b = load_file(os.path.join(out["mm", "peft"], "adapter_model.safetensors"))
    root = "base_model.model."
    assert set(b) == {root + "language_model." + k[len(root):] for k in a}, sorted(b)[:4]
    for k, v in a.items():
        assert np.array_equal(b[root + "language_model." + k[len(root):]], v), k
    targets = json.load(open(os.path.join(out["mm", "peft"], "adapter_config.json")))["target_modules"]
    assert isinstance(targets, str), targets
    assert re.fullmatch(targets, "language_model.model.layers.0.self_attn.q_proj"), targets
    assert not re.fullmatch(targets, "vision_model.model.layers.0.self_attn.q_proj"), targets
    print(f"multimodal: hf export keeps {len(vision)} vision tensors, text model equal to the text directory's; "
          f"gguf, mlx and peft equal too (target_modules {targets!r})")
    return out


def check_reference(out, mm_model, tmp):
    """transformers and PEFT on the multimodal checkpoint."""
    import torch
    import transformers
    from peft import PeftModel
    ids = torch.tensor([moe.IDS])
    merged = transformers.Llama4ForConditionalGeneration.from_pretrained(out["mm", "hf"], torch_dtype=torch.float32)
    with torch.no_grad():
        got = merged(input_ids=ids).logits[0].numpy()
    want = moe.anvil_logits(out["text", "hf"], tmp)
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < 1e-4, f"transformers' logits on the multimodal merged export differ from anvil's by {err}"
    base = transformers.Llama4ForConditionalGeneration.from_pretrained(mm_model, torch_dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, out["mm", "peft"])
    with torch.no_grad():
        adapted = peft_model(input_ids=ids).logits[0].numpy()
    perr = np.abs(adapted - got).max() / np.abs(got).max()
    assert perr < 1e-4, f"PEFT on the multimodal base differs from the merged export by {perr}"
    print(f"reference: transformers {transformers.__version__} within {err:.1e}, PEFT within {perr:.1e}")


def main():
    with tempfile.TemporaryDirectory(prefix="anvil_l4mm_") as tmp:
        text_model = moe.init_model(SPEC, tmp, "text", "--init-std", "0.1")
        mm_model = multimodal(text_model, os.path.join(tmp, "mm_model"))
        text_ckpt = moe.train(text_model, os.path.join(tmp, "text_run"), TARGETS)
        mm_ckpt = moe.train(mm_model, os.path.join(tmp, "mm_run"), TARGETS)
        a, b = losses(os.path.join(tmp, "text_run")), losses(os.path.join(tmp, "mm_run"))
        assert a and a == b, (a, b)
        out = check_exports(tmp, text_ckpt, mm_ckpt, mm_model)
        # A tensor that belongs to neither the language model nor the vision tower.
        bad = multimodal(text_model, os.path.join(tmp, "bad_model"), {"audio_model.w": np.zeros(4, np.float32)})
        err = anvil("export", bad, "--format", "gguf", "--type", "f32", "--out", os.path.join(tmp, "bad.gguf"),
                    expect=2)
        assert "unexpected tensor 'audio_model.w'" in err, err
        if REFERENCE:
            check_reference(out, mm_model, tmp)
    print("ok")


if __name__ == "__main__":
    sys.exit(main())
