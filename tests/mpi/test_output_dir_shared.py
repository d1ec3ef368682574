"""output_dir must be one directory for every rank. `anvil train` on 2 ranks where rank 1
is made to look elsewhere (ANVIL_OUTPUT_DIR_NODE_LOCAL=1 with ANVIL_NODE_SIZE=1: each rank
its own simulated node, and output_dir node-local): the job exits 2 before training, the
error names the blind rank, its host and the token's path, and the token is gone. The same
run without the override trains.

Usage: test_output_dir_shared.py MPIEXEC   (ANVIL_BIN, ANVIL_SOURCE_DIR from the environment)"""
import os
import subprocess
import sys
import tempfile

ANVIL = os.environ["ANVIL_BIN"]
SRC = os.environ["ANVIL_SOURCE_DIR"]
MPIEXEC = sys.argv[1]
CONFIG = os.path.join(SRC, "configs", "demo-cpu.yaml")


def train(model, out, *env):
    cmd = [MPIEXEC, "--oversubscribe", "-np", "2"]
    for e in env:
        cmd += ["-x", e]
    cmd += [ANVIL, "train", CONFIG, "--set", f"model.path={model}", "--set", f"output_dir={out}",
            "--set", "train.steps=25", "--set", "train.eval_every=0", "--set", "checkpoint.every=0"]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=SRC, timeout=240)


def main():
    with tempfile.TemporaryDirectory(prefix="anvil_shared_dir_") as tmp:
        model = os.path.join(tmp, "model")
        subprocess.run([ANVIL, "init-model", "--preset", "tiny", "--out", model, "--seed", "1"], check=True,
                       capture_output=True)
        out = os.path.join(tmp, "run")
        p = train(model, out, "ANVIL_OUTPUT_DIR_NODE_LOCAL=1", "ANVIL_NODE_SIZE=1")
        assert p.returncode == 2, f"exit {p.returncode}\n{p.stderr}"
        want = (f"error: output_dir must be on a shared filesystem: world rank 0 on host node-0 wrote "
                f"{out}/.anvil-shared-check-")
        assert want in p.stderr, p.stderr
        assert "but it is not visible to world rank 1 on host node-1;" in p.stderr, p.stderr
        assert sorted(os.listdir(out)) == [], os.listdir(out)  # no token left, nothing trained
        p = train(model, out)
        assert p.returncode == 0, p.stderr
        assert not [f for f in os.listdir(out) if f.startswith(".anvil-shared-check-")], os.listdir(out)
        assert os.path.exists(os.path.join(out, "adapter")), os.listdir(out)
    print("a rank that does not see output_dir: exit 2 naming it; a shared one: trained, no token left")


if __name__ == "__main__":
    main()
