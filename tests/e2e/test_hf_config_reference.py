"""anvil's reading of config.json against transformers' (needs scripts/setup.sh --reference,
else exit 77):

- every family's config, written by `anvil init-model --config-only`, loaded and saved again
  by transformers (its current spellings: rope_parameters, dtype, Qwen3-MoE's expert count
  as num_local_experts, layer_types, ...), reads back to the same model: anvil's config of
  the re-saved file equals its config of its own (transformers' default bos/eos ids aside);
- the sliding window of Qwen2, Qwen3 and Qwen3-MoE: for every combination of
  use_sliding_window, max_window_layers and layer_types, anvil has a window exactly when a
  layer of transformers' model attends through one (Qwen2/Qwen3: the layers layer_types
  calls sliding_attention, by default those from max_window_layers on; Qwen3-MoE: all).

Usage: test_hf_config_reference.py   (ANVIL_BIN, ANVIL_SOURCE_DIR from the environment)"""
import itertools
import json
import os
import subprocess
import sys
import tempfile

try:
    import transformers
except ImportError as e:
    print(f"SKIP: the Python references are not installed ({e}); run scripts/setup.sh --reference")
    sys.exit(77)

ANVIL = os.environ["ANVIL_BIN"]
SRC = os.environ["ANVIL_SOURCE_DIR"]
GOLDEN = os.path.join(SRC, "tests", "golden")


def anvil_config(spec_path, out):
    """anvil's config.json for `spec_path` (its parse written back), or None if refused."""
    p = subprocess.run([ANVIL, "init-model", "--spec", spec_path, "--config-only", "--out", out],
                       capture_output=True, text=True)
    if p.returncode == 2:
        return None
    assert p.returncode == 0, f"{spec_path}: exit {p.returncode}\n{p.stderr}"
    with open(os.path.join(out, "config.json")) as f:
        return json.load(f)


def check_round_trips(tmp):
    specs = {}
    for case in ("gqa_untied", "tied", "llama3_rope", "qwen3_dense", "qwen3_moe", "qwen3_moe_sparse_step", "mixtral",
                 "llama4"):
        with open(os.path.join(GOLDEN, case, "spec.json")) as f:
            specs[case] = json.load(f)
    specs["mistral"] = dict(specs["gqa_untied"], model_type="mistral", sliding_window=None)
    specs["qwen2"] = dict(specs["gqa_untied"], model_type="qwen2", use_sliding_window=False)
    for name, spec in specs.items():
        d = os.path.join(tmp, name)
        os.makedirs(d)
        with open(os.path.join(d, "spec.json"), "w") as f:
            json.dump(spec, f)
        ours = anvil_config(os.path.join(d, "spec.json"), os.path.join(d, "a"))
        assert ours is not None, name
        transformers.AutoConfig.from_pretrained(os.path.join(d, "a")).save_pretrained(os.path.join(d, "hf"))
        back = anvil_config(os.path.join(d, "hf", "config.json"), os.path.join(d, "b"))
        assert back is not None, f"{name}: anvil refuses transformers' own save of its config"
        diff = {k: (ours.get(k), back.get(k)) for k in set(ours) | set(back)
                if ours.get(k) != back.get(k) and k not in ("bos_token_id", "eos_token_id")}
        assert not diff, f"{name}: {diff}"
    print(f"{len(specs)} families' configs read the same after transformers {transformers.__version__} saved them")


def check_windows(tmp):
    base = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vocab_size": 300, "sliding_window": 16, "max_position_embeddings": 64}
    cases = 0
    windowed = 0
    for t, use, first, types in itertools.product(
            ["qwen2", "qwen3", "qwen3_moe"], [False, True], [None, 0, 1, 28],
            [None, ["full_attention"] * 2, ["full_attention", "sliding_attention"]]):
        spec = dict(base, model_type=t, use_sliding_window=use)
        if first is not None:
            spec["max_window_layers"] = first
        if types is not None:
            spec["layer_types"] = types
        if t == "qwen3_moe":
            spec.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)
        cfg = transformers.AutoConfig.for_model(**spec)
        if t == "qwen3_moe":  # its attention takes config.sliding_window on every layer
            theirs = cfg.sliding_window is not None
        else:
            theirs = cfg.sliding_window is not None and "sliding_attention" in cfg.layer_types
        path = os.path.join(tmp, f"window_{cases}.json")
        with open(path, "w") as f:
            json.dump(spec, f)
        ours = anvil_config(path, os.path.join(tmp, f"window_{cases}"))
        assert ours is not None, spec
        assert ours["use_sliding_window"] == theirs, (spec, theirs, ours["use_sliding_window"])
        cases += 1
        windowed += theirs
    assert 0 < windowed < cases, windowed
    print(f"sliding window: {cases} Qwen configurations, anvil's window where transformers' layers have one "
          f"({windowed} of them)")


def main():
    transformers.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory(prefix="anvil_hf_config_") as tmp:
        check_round_trips(tmp)
        check_windows(tmp)
    print("hf config: ok")


if __name__ == "__main__":
    main()
