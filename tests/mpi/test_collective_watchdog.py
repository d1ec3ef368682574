"""The collective watchdog: one rank of a 2-rank `anvil train` is stopped (SIGSTOP) in
the middle of training; the other waits in the step's collectives until
parallel.collective_timeout_s runs out, then ends the job: mpirun exits non-zero within
a bounded time, and the error names the collective, its group and the setting. With the
watchdog off (0) the same job would wait forever; that is not run. Then a rank that stalls
before the Runtime's collective set-up (grid splits, device views, NCCL init): the set-up's
own watchdog (parallel.setup_timeout_s) ends the job.

Usage: test_collective_watchdog.py MPIEXEC   (ANVIL_BIN, ANVIL_SOURCE_DIR from the environment)"""
import os
import signal
import subprocess
import sys
import tempfile
import time

ANVIL = os.environ["ANVIL_BIN"]
SRC = os.environ["ANVIL_SOURCE_DIR"]
MPIEXEC = sys.argv[1]
CONFIG = os.path.join(SRC, "configs", "demo-cpu.yaml")
TIMEOUT_S = 3


def rank_pid(marker, rank):
    """The pid of the anvil process of world rank `rank` whose command line has `marker`."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if cmd and os.path.basename(cmd[0]) == b"anvil" and marker.encode() in b" ".join(cmd) and \
                f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
            return int(pid)
    return None


def end_stopped(job, pid):
    """However the test went: no mpirun and no stopped rank left behind."""
    if job.poll() is None:
        job.kill()
    if pid:
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main():
    with tempfile.TemporaryDirectory(prefix="anvil_watchdog_") as tmp:
        model = os.path.join(tmp, "model")
        subprocess.run([ANVIL, "init-model", "--preset", "tiny", "--out", model, "--seed", "1"], check=True,
                       capture_output=True)
        out = os.path.join(tmp, "run")
        cmd = [MPIEXEC, "--oversubscribe", "-np", "2", ANVIL, "train", CONFIG, "--set", f"model.path={model}",
               "--set", f"output_dir={out}", "--set", "train.steps=100000", "--set", "train.eval_every=0",
               "--set", "checkpoint.every=0", "--set", f"parallel.collective_timeout_s={TIMEOUT_S}"]
        job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=SRC)
        stopped = None
        try:
            metrics = os.path.join(out, "metrics.jsonl")
            deadline = time.time() + 120
            while time.time() < deadline:
                if os.path.exists(metrics) and sum(1 for _ in open(metrics)) >= 3:
                    break
                assert job.poll() is None, job.communicate()
                time.sleep(0.2)
            else:
                raise AssertionError("training did not start")
            stopped = rank_pid(out, 1)
            assert stopped, "rank 1 not found"
            os.kill(stopped, signal.SIGSTOP)
            t0 = time.time()
            _, err = job.communicate(timeout=60)
            waited = time.time() - t0
        finally:
            end_stopped(job, stopped)
        assert job.returncode != 0, err
        assert "has not finished after" in err and "collective_timeout_s" in err, err
        assert TIMEOUT_S - 1 <= waited <= TIMEOUT_S + 20, f"the job ended {waited:.1f} s after the stop"
    print(f"stopped rank: the watchdog ended the job {waited:.1f} s later (timeout {TIMEOUT_S} s)")
    stalled_setup()


def stalled_setup():
    """Rank 1 stops itself (ANVIL_FAULT_INJECT=1:setup) just before the Runtime's collective
    set-up; rank 0 waits in the set-up's first collective until parallel.setup_timeout_s,
    then ends the job, naming the collective, the group and that setting."""
    with tempfile.TemporaryDirectory(prefix="anvil_watchdog_setup_") as tmp:
        model = os.path.join(tmp, "model")
        subprocess.run([ANVIL, "init-model", "--preset", "tiny", "--out", model, "--seed", "1"], check=True,
                       capture_output=True)
        out = os.path.join(tmp, "run")
        cmd = [MPIEXEC, "--oversubscribe", "-np", "2", "-x", "ANVIL_FAULT_INJECT=1:setup", ANVIL, "train", CONFIG,
               "--set", f"model.path={model}", "--set", f"output_dir={out}",
               "--set", f"parallel.setup_timeout_s={TIMEOUT_S}", "--set", "parallel.collective_timeout_s=600"]
        t0 = time.time()
        job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=SRC)
        try:
            _, err = job.communicate(timeout=90)
        finally:
            end_stopped(job, rank_pid(out, 1))
        waited = time.time() - t0
        assert job.returncode != 0, err
        assert "[rank 0] error: MPI_Comm_split on the world group has not finished after" in err, err
        assert "(parallel.setup_timeout_s)" in err, err
        assert waited <= TIMEOUT_S + 30, f"the job ended {waited:.1f} s after its start"
    print(f"rank stalled in set-up: the watchdog ended the job {waited:.1f} s after its start "
          f"(setup timeout {TIMEOUT_S} s)")


if __name__ == "__main__":
    main()
