"""A full disk while a checkpoint is written: the run ends with exit 2 and an error naming
the checkpoint, the earlier checkpoint stays intact (no .partial left), and once there is
room again the run resumes from it and ends with the same adapter as a run that never
failed. The output directory is a small tmpfs mounted for the test, so it needs root (or
CAP_SYS_ADMIN): without it the test says so and skips (exit 77).

Usage: test_disk_full.py   (ANVIL_BIN, ANVIL_SOURCE_DIR from the environment)"""
import os
import subprocess
import sys
import tempfile

ANVIL = os.environ["ANVIL_BIN"]
SRC = os.environ["ANVIL_SOURCE_DIR"]
CONFIG = os.path.join(SRC, "configs", "demo-cpu.yaml")
SKIP = 77


def run(args, expect=0):
    p = subprocess.run([ANVIL, *args], capture_output=True, text=True, cwd=SRC)
    assert p.returncode == expect, f"anvil {' '.join(args)}: exit {p.returncode}, want {expect}\n{p.stdout}\n{p.stderr}"
    return p.stdout + p.stderr


def train(model, out, *sets, expect=0):
    args = ["train", CONFIG, "--set", f"model.path={model}", "--set", f"output_dir={out}", "--set", "train.steps=4",
            "--set", "train.warmup_steps=1", "--set", "train.eval_every=0", "--set", "checkpoint.every=2"]
    for s in sets:
        args += ["--set", s]
    return run(args, expect=expect)


def fill(path, leave):
    """Fills the file system of `path` up to `leave` free bytes with one file."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    with open(os.path.join(path, "filler"), "wb") as f:
        f.write(b"\0" * max(0, free - leave))
        f.flush()
        os.fsync(f.fileno())


def main():
    with tempfile.TemporaryDirectory(prefix="anvil_disk_full_") as tmp:
        mnt = os.path.join(tmp, "small")
        os.makedirs(mnt)
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt], capture_output=True, text=True)
        if p.returncode != 0:
            print(f"SKIP: cannot mount a tmpfs here ({p.stderr.strip() or 'not permitted'}); needs root")
            return SKIP
        try:
            check(tmp, mnt)
        finally:
            subprocess.run(["umount", "-l", mnt])
    print("disk full during a checkpoint: error named, earlier checkpoint intact, resume gives the same adapter; "
          "a GGUF export onto it fails before writing and leaves nothing")
    return 0


def check(tmp, mnt):
    model = os.path.join(tmp, "model")
    run(["init-model", "--preset", "tiny", "--out", model, "--seed", "1", "--init-std", "0.1"])
    # The uninterrupted run, on a roomy disk.
    whole = os.path.join(tmp, "whole")
    train(model, whole)

    out = os.path.join(mnt, "run")
    run(["train", CONFIG, "--set", f"model.path={model}", "--set", f"output_dir={out}", "--set", "train.steps=4",
         "--set", "train.warmup_steps=1", "--set", "train.eval_every=0", "--set", "checkpoint.every=2",
         "--stop-after", "2"])
    ckpts = os.path.join(out, "checkpoints")
    assert sorted(os.listdir(ckpts)) == ["latest", "step_2.h5"], os.listdir(ckpts)
    with open(os.path.join(ckpts, "step_2.h5"), "rb") as f:
        saved = f.read()

    fill(mnt, 48 * 1024)  # room for the metrics lines, not for a checkpoint
    msg = train(model, out, expect=2)
    assert "step_4.h5 not written" in msg and "intact" in msg, msg
    assert sorted(os.listdir(ckpts)) == ["latest", "step_2.h5"], f"left behind: {os.listdir(ckpts)}"
    with open(os.path.join(ckpts, "step_2.h5"), "rb") as f:
        assert f.read() == saved, "the earlier checkpoint changed"
    with open(os.path.join(ckpts, "latest")) as f:
        assert f.read().strip() == "step_2.h5"

    os.remove(os.path.join(mnt, "filler"))
    log = train(model, out)
    assert "resumed from" in log and "step_2.h5" in log, log
    with open(os.path.join(out, "adapter", "adapter_model.safetensors"), "rb") as a, \
            open(os.path.join(whole, "adapter", "adapter_model.safetensors"), "rb") as b:
        assert a.read() == b.read(), "the resumed run's adapter differs from the uninterrupted run's"

    # A GGUF export onto the full disk: its whole size is allocated before any tensor is
    # computed, so it fails at once, naming the file, and leaves no partial file.
    step4 = os.path.join(ckpts, "step_4.h5")
    fill(mnt, 16 * 1024)
    msg = run(["export", step4, "--format", "gguf", "--type", "f32", "--out", os.path.join(mnt, "m.gguf")], expect=2)
    assert "m.gguf" in msg and "No space left" in msg, msg
    assert not [n for n in os.listdir(mnt) if n.startswith("m.gguf")], os.listdir(mnt)
    os.remove(os.path.join(mnt, "filler"))


if __name__ == "__main__":
    sys.exit(main())
