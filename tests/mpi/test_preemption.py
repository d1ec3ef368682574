"""Preemption and crashes under mpirun (2 ranks, dp 2).

- SIGUSR1 to one rank (rank 1, not the writer) in the middle of the run, then more
  SIGUSR1s to both ranks while they save: the job exits 75, the checkpoint of the step
  they agreed on exists and `latest` names it; the same command (checkpoint.resume: auto)
  finishes with the adapter bytes of an uninterrupted run.
- SIGKILL to one rank of a running `anvil train`: mpirun ends every rank within 30 s,
  with a non-zero exit code.

Usage: test_preemption.py MPIEXEC   (ANVIL_BIN, ANVIL_SOURCE_DIR from the environment)"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

ANVIL = os.environ["ANVIL_BIN"]
SRC = os.environ["ANVIL_SOURCE_DIR"]
MPIEXEC = sys.argv[1]
CONFIG = os.path.join(SRC, "configs", "demo-cpu.yaml")
EXIT_PREEMPTED = 75
STEPS = 300


def command(model, out, steps=STEPS):
    sets = [f"output_dir={out}", f"model.path={model}", f"train.steps={steps}", "train.eval_every=0",
            "checkpoint.every=100", "lora.dropout=0.1", "log.every=1000"]
    cmd = [MPIEXEC, "--oversubscribe", "-np", "2", ANVIL, "train", CONFIG]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=SRC, timeout=300)
    return p.returncode, p.stdout + p.stderr


def steps_done(out):
    try:
        with open(os.path.join(out, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return max((r["step"] for r in rows if "loss" in r), default=0)


def descendants(root):
    """Pids of every process below `root`, from /proc."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(name))
    found, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    return found


def rank_pids(launcher):
    """{world rank: pid} of the anvil ranks under an mpirun, from their environments."""
    ranks = {}
    for pid in descendants(launcher):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if os.path.basename(exe) == "anvil" and b"OMPI_COMM_WORLD_RANK" in env:
            ranks[int(env[b"OMPI_COMM_WORLD_RANK"])] = pid
    return ranks


def start_and_wait_for_step(cmd, out, step, timeout=120):
    """Starts `cmd`, waits until metrics.jsonl shows `step`, returns (process, {rank: pid})."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=SRC)
    deadline = time.time() + timeout
    while steps_done(out) < step:
        assert p.poll() is None, f"the run ended before step {step}: exit {p.returncode}\n{p.stdout.read()}"
        assert time.time() < deadline, f"no step {step} after {timeout} s"
        time.sleep(0.05)
    ranks = rank_pids(p.pid)
    assert sorted(ranks) == [0, 1], f"rank pids not found under mpirun {p.pid}: {ranks}"
    return p, ranks


def check_preemption(tmp, model):
    ref = os.path.join(tmp, "uninterrupted")
    rc, log = run(command(model, ref))
    assert rc == 0, f"uninterrupted run: exit {rc}\n{log}"
    with open(os.path.join(ref, "adapter", "adapter_model.safetensors"), "rb") as f:
        want = f.read()

    out = os.path.join(tmp, "preempted")
    cmd = command(model, out)
    p, ranks = start_and_wait_for_step(cmd, out, 20)
    signalled_at = steps_done(out)
    os.kill(ranks[1], signal.SIGUSR1)
    # More signals to both ranks while they agree and save: they must change nothing.
    while p.poll() is None:
        time.sleep(0.02)
        for pid in ranks.values():
            try:
                os.kill(pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass
    log = p.stdout.read()
    assert p.returncode == EXIT_PREEMPTED, f"preempted run: exit {p.returncode}, want {EXIT_PREEMPTED}\n{log}"
    m = re.search(r"preempted after step (\d+) of (\d+)", log)
    assert m, log
    step = int(m.group(1))
    assert signalled_at <= step < STEPS, (signalled_at, step)
    ckpt_dir = os.path.join(out, "checkpoints")
    assert os.path.exists(os.path.join(ckpt_dir, f"step_{step}.h5")), os.listdir(ckpt_dir)
    with open(os.path.join(ckpt_dir, "latest")) as f:
        assert f.read().strip() == f"step_{step}.h5"
    assert not [n for n in os.listdir(ckpt_dir) if n.endswith(".partial")], os.listdir(ckpt_dir)
    assert not os.path.exists(os.path.join(out, "adapter")), "an adapter after a preemption"
    print(f"SIGUSR1 to rank 1 at step {signalled_at}: both ranks saved step {step} and exited {EXIT_PREEMPTED}")

    rc, log = run(cmd)
    assert rc == 0, f"resumed run: exit {rc}\n{log}"
    assert f"after step {step}" in log, log
    with open(os.path.join(out, "adapter", "adapter_model.safetensors"), "rb") as f:
        got = f.read()
    assert got == want, "the resumed run's adapter differs from the uninterrupted run's"
    print(f"resumed from step {step}: the adapter is the uninterrupted run's, byte for byte")


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"  # a zombie has ended; only its parent has not reaped it


def check_killed_rank(tmp, model):
    out = os.path.join(tmp, "killed")
    p, ranks = start_and_wait_for_step(command(model, out, steps=100000), out, 5)
    t0 = time.time()
    os.kill(ranks[1], signal.SIGKILL)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        for pid in ranks.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        raise AssertionError("mpirun still runs 30 s after a rank was killed")
    seconds = time.time() - t0
    log = p.stdout.read()
    assert p.returncode != 0, f"mpirun exited 0 after a rank was killed\n{log}"
    left = [pid for pid in ranks.values() if alive(pid)]
    assert not left, f"ranks still alive after mpirun ended: {left}"
    print(f"SIGKILL to rank 1: mpirun ended every rank in {seconds:.1f} s, exit {p.returncode}")


def main():
    with tempfile.TemporaryDirectory(prefix="anvil_mpi_preempt_") as tmp:
        model = os.path.join(tmp, "model")
        subprocess.run([ANVIL, "init-model", "--preset", "tiny", "--out", model, "--seed", "1", "--init-std", "0.1"],
                       check=True, capture_output=True)
        check_preemption(tmp, model)
        check_killed_rank(tmp, model)


if __name__ == "__main__":
    main()
