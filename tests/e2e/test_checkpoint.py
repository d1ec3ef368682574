"""Checkpoints end to end on the demo config with the tiny model (one rank):

- exact resume: 8 steps straight vs `--stop-after 4` then resume (auto): the same per-step
  losses bit for bit and the same adapter bytes, with shuffling, dropout, mid-epoch;
- the files: step_N.h5 every checkpoint.every steps, `latest`, checkpoint.keep pruning that
  spares the checkpoint resumed from;
- resume: auto never picks a .partial; a rank killed (SIGKILL) while saving leaves the
  previous checkpoint loadable;
- integrity: a flipped byte, a truncated file, a missing dataset, another base model and an
  incompatible config are refused with exit 2 and a message naming file and dataset;
  `anvil inspect` reads every dataset (adapter, AdamW state, sampler state) and exits 2
  naming each damaged one; resume: auto skips a damaged newest checkpoint with a warning
  and still reproduces the uninterrupted run's losses bit for bit;
- format 1 (one dataset per matrix, made by MAKE_V1 from a format-2 file through the kept
  format-1 writer): it resumes with the same losses and exports the same adapter bytes.

Usage: test_checkpoint.py MAKE_V1   (ANVIL_BIN, ANVIL_SOURCE_DIR from the environment)"""
import json
import os
import shutil
import re
import subprocess
import sys
import tempfile

from safetensors.numpy import load_file

ANVIL = os.environ["ANVIL_BIN"]
SRC = os.environ["ANVIL_SOURCE_DIR"]
CONFIG = os.path.join(SRC, "configs", "demo-cpu.yaml")


def run(args, expect=0, env=None):
    p = subprocess.run(args, capture_output=True, text=True, cwd=SRC, env={**os.environ, **(env or {})})
    out = p.stdout + p.stderr
    assert p.returncode == expect, f"{' '.join(args)}: exit {p.returncode}, expected {expect}\n{out}"
    return out


def train(model, out, *extra, expect=0, env=None):
    sets = [f"output_dir={out}", f"model.path={model}", "train.steps=8", "train.warmup_steps=2",
            "train.eval_every=0", "checkpoint.every=2", "checkpoint.keep=2", "lora.dropout=0.1", "log.every=100"]
    args = [ANVIL, "train", CONFIG]
    for s in sets:
        args += ["--set", s]
    return run(args + list(extra), expect, env)


def losses(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [(r["step"], r["loss"], r["grad_norm"]) for r in map(json.loads, f) if "loss" in r]


def checkpoints(out):
    return sorted(os.listdir(os.path.join(out, "checkpoints")))


def dataset_offset(path, name):
    """The file offset of a contiguous dataset's bytes (h5dump's storage layout)."""
    out = subprocess.run(["h5dump", "-p", "-H", "-d", "/" + name, path], check=True, capture_output=True,
                         text=True).stdout
    m = re.search(r"OFFSET (\d+)", out)
    assert m, out
    return int(m.group(1))


def damage(src, dst, *names):
    """A copy of src with one bit flipped in each named dataset."""
    data = bytearray(open(src, "rb").read())
    for name in names:
        data[dataset_offset(src, name) + 3] ^= 0x10
    open(dst, "wb").write(data)


def main():
    with tempfile.TemporaryDirectory(prefix="anvil_e2e_ckpt_") as tmp:
        check(tmp)
        check_integrity(tmp)
        check_format_1(tmp, sys.argv[1])


def check(tmp):
    model = os.path.join(tmp, "model")
    run([ANVIL, "init-model", "--preset", "tiny", "--out", model, "--seed", "1", "--init-std", "0.1"])

    # Exact resume.
    straight = os.path.join(tmp, "straight")
    train(model, straight)
    resumed = os.path.join(tmp, "resumed")
    log = train(model, resumed, "--stop-after", "4")
    assert "stopped after step 4 of 8" in log, log
    assert not os.path.exists(os.path.join(resumed, "adapter")), "an adapter after --stop-after"
    assert checkpoints(resumed) == ["latest", "step_2.h5", "step_4.h5"], checkpoints(resumed)
    assert [s for s, _, _ in losses(resumed)] == [1, 2, 3, 4]
    log = train(model, resumed)
    assert "resumed from" in log and "after step 4" in log, log
    assert losses(resumed) == losses(straight), (losses(resumed), losses(straight))
    with open(os.path.join(straight, "adapter", "adapter_model.safetensors"), "rb") as a, \
            open(os.path.join(resumed, "adapter", "adapter_model.safetensors"), "rb") as b:
        assert a.read() == b.read(), "adapters differ"
    # keep 2, but step_4 (resumed from) is spared
    assert checkpoints(resumed) == ["latest", "step_4.h5", "step_6.h5", "step_8.h5"], checkpoints(resumed)
    with open(os.path.join(resumed, "checkpoints", "latest")) as f:
        assert f.read().strip() == "step_8.h5"
    print("exact resume: 8 losses and the adapter bytes identical")

    # auto never picks a .partial; a complete run only writes its adapter again
    ck = os.path.join(resumed, "checkpoints")
    shutil.copy(os.path.join(ck, "step_8.h5"), os.path.join(ck, "step_99.h5.partial"))
    out = train(model, resumed)
    assert "step_8.h5 after step 8" in out and "the run is complete (8 of 8 steps)" in out, out
    assert losses(resumed) == losses(straight)

    # A rank killed while writing step 6's checkpoint: the job dies, step_4 stays loadable.
    killed = os.path.join(tmp, "killed")
    train(model, killed, "--stop-after", "4")
    train(model, killed, expect=-9, env={"ANVIL_FAULT_INJECT": "0:6:save"})  # SIGKILL
    assert "step_6.h5.partial" in checkpoints(killed) and "step_6.h5" not in checkpoints(killed), checkpoints(killed)
    log = train(model, killed)
    assert "after step 4" in log, log
    assert losses(killed) == losses(straight), "the run after the crash differs"
    print("kill -9 during a save: resumed from the previous checkpoint, same losses")

    # Integrity: each damage refused with exit 2, naming the file and the dataset.
    good = os.path.join(ck, "step_8.h5")
    bad = os.path.join(tmp, "bad.h5")

    def resume_error(path, *extra):
        return train(model, os.path.join(tmp, "r"), "--set", f"checkpoint.resume={path}", *extra, expect=2)

    data = bytearray(open(good, "rb").read())
    weight = load_file(os.path.join(resumed, "adapter", "adapter_model.safetensors"))[
        "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"].tobytes()
    at = data.find(weight[:64])
    assert at > 0, "the adapter's bytes are not in the checkpoint"
    data[at + 5] ^= 0x40
    open(bad, "wb").write(data)
    out = resume_error(bad)
    assert f"{bad}: dataset 'adapter/mlp.down_proj.lora_B' fails its checksum at slab 1 of " in out, out

    open(bad, "wb").write(open(good, "rb").read()[: len(data) // 2])
    out = resume_error(bad)
    assert bad in out and ("truncated" in out or "damaged" in out), out

    os.remove(bad)
    for obj in ("anvil_format", "meta", "state", "adapter", "adam_m"):  # no adam_v
        run(["h5copy", "-i", good, "-o", bad, "-s", "/" + obj, "-d", "/" + obj])
    out = resume_error(bad)
    assert f"{bad}: dataset 'adam_v/self_attn.q_proj.lora_A' is missing" in out, out

    other = os.path.join(tmp, "other")
    run([ANVIL, "init-model", "--preset", "tiny", "--out", other, "--seed", "2", "--init-std", "0.1"])
    out = train(other, os.path.join(tmp, "r2"), "--set", f"checkpoint.resume={good}", expect=2)
    assert "written for another base model" in out and "meta/base_model_hash" in out, out

    out = resume_error(good, "--set", "lora.rank=4")
    assert "its LoRA (dataset meta/lora" in out, out
    out = resume_error(good, "--set", "train.seed=7")
    assert "written with train.seed = 42 (dataset meta/config), this config has 7" in out, out
    print("integrity: flipped byte, truncation, missing dataset, other model, other config refused")


def check_integrity(tmp):
    """inspect verifies every dataset; resume: auto falls back past a damaged checkpoint."""
    model = os.path.join(tmp, "model")
    straight = os.path.join(tmp, "straight")
    ck = os.path.join(tmp, "resumed", "checkpoints")
    good = os.path.join(ck, "step_8.h5")
    out = run([ANVIL, "inspect", good])
    assert "format 2" in out and "checksums verified: every dataset" in out, out

    bad = os.path.join(tmp, "bad_state.h5")
    damage(good, bad, "adam_m/mlp.up_proj.lora_A", "adam_v/self_attn.o_proj.lora_B", "state/sampler_cursor")
    out = run([ANVIL, "inspect", bad], expect=2)
    for name in ("adam_m/mlp.up_proj.lora_A", "adam_v/self_attn.o_proj.lora_B", "state/sampler_cursor"):
        assert f"{bad}: dataset '{name}' fails its checksum" in out, (name, out)
    assert "3 damaged or missing datasets" in out and "checksums verified" not in out, out
    os.remove(bad)
    for obj in ("anvil_format", "meta"):
        run(["h5copy", "-i", good, "-o", bad, "-s", "/" + obj, "-d", "/" + obj])
    out = run([ANVIL, "inspect", bad], expect=2)
    assert f"{bad}: dataset 'state/step' is missing" in out and "adam_m/mlp.down_proj.lora_B' is missing" in out, out

    # The newest checkpoint (step 6) has damaged AdamW state: auto resumes from step 4,
    # names what it skipped, and the run still matches the uninterrupted one bit for bit.
    fallback = os.path.join(tmp, "fallback")
    train(model, fallback, "--stop-after", "6")
    assert checkpoints(fallback) == ["latest", "step_4.h5", "step_6.h5"], checkpoints(fallback)
    newest = os.path.join(fallback, "checkpoints", "step_6.h5")
    damage(newest, newest + ".tmp", "adam_v/mlp.gate_proj.lora_B")
    os.replace(newest + ".tmp", newest)
    log = train(model, fallback)
    assert f"skipping {newest}, which is damaged" in log and "adam_v/mlp.gate_proj.lora_B" in log, log
    assert "after step 4" in log, log
    assert losses(fallback) == losses(straight), (losses(fallback), losses(straight))
    # checkpoint.resume: PATH still refuses it.
    damage(os.path.join(ck, "step_6.h5"), bad, "adam_v/mlp.gate_proj.lora_B")
    out = train(model, os.path.join(tmp, "r3"), "--set", f"checkpoint.resume={bad}", expect=2)
    assert f"{bad}: dataset 'adam_v/mlp.gate_proj.lora_B' fails its checksum" in out, out
    print("inspect names each damaged dataset; auto skipped a damaged checkpoint, same losses; PATH refused")


def check_format_1(tmp, make_v1):
    """A format-1 checkpoint resumes (same losses) and exports (same adapter bytes)."""
    model = os.path.join(tmp, "model")
    straight = os.path.join(tmp, "straight")
    half = os.path.join(tmp, "half")
    train(model, half, "--stop-after", "4")
    v2 = os.path.join(half, "checkpoints", "step_4.h5")
    v1 = os.path.join(tmp, "v1.h5")
    run([make_v1, v2, v1])
    listing = subprocess.run(["h5ls", "-r", v1], check=True, capture_output=True, text=True).stdout
    assert "adam_v/base_model.model.model.layers.1.mlp.down_proj.lora_B.weight" in listing, listing
    out = run([ANVIL, "inspect", v1])
    assert "format 1" in out and "checksums verified" in out, out
    for fmt in ("peft", "hf"):
        a, b = os.path.join(tmp, f"x1_{fmt}"), os.path.join(tmp, f"x2_{fmt}")
        run([ANVIL, "export", v1, "--out", a, "--format", fmt])
        run([ANVIL, "export", v2, "--out", b, "--format", fmt])
        for f in sorted(os.listdir(b)):
            assert open(os.path.join(a, f), "rb").read() == open(os.path.join(b, f), "rb").read(), (fmt, f)
    resumed = os.path.join(tmp, "from_v1")
    log = train(model, resumed, "--set", f"checkpoint.resume={v1}")
    assert "after step 4" in log, log
    assert losses(resumed) == losses(straight)[4:], (losses(resumed), losses(straight))
    with open(os.path.join(straight, "adapter", "adapter_model.safetensors"), "rb") as a, \
            open(os.path.join(resumed, "adapter", "adapter_model.safetensors"), "rb") as b:
        assert a.read() == b.read(), "the adapter resumed from format 1 differs"
    print("format 1: inspected, exported byte-identical, resumed with the same losses and adapter")


if __name__ == "__main__":
    main()
