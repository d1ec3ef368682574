"""What the slurm tests share: the private cluster of scripts/slurm-local.sh (skip with its
reason when it could not start), sbatch of slurm/demo-cpu.sbatch, job states, adapters.

Environment: ANVIL_BIN, ANVIL_SOURCE_DIR, ANVIL_SLURM_STATE (the cluster's state dir)."""
import json
import os
import subprocess
import sys
import time

ANVIL = os.environ["ANVIL_BIN"]
SRC = os.environ["ANVIL_SOURCE_DIR"]
STATE = os.environ["ANVIL_SLURM_STATE"]
DEMO = os.path.join(SRC, "slurm", "demo-cpu.sbatch")
CONFIG = os.path.join(SRC, "configs", "demo-cpu.yaml")
SKIP = 77


def cluster_env():
    """The environment that points the Slurm clients at the test cluster; exits 77 (skip)
    with the reason when the cluster is not running."""
    reason_file = os.path.join(STATE, "unavailable")
    if os.path.exists(reason_file):
        with open(reason_file) as f:
            print(f"SKIP: Slurm could not start on this machine: {f.read().strip()}")
        sys.exit(SKIP)
    if not os.path.exists(os.path.join(STATE, "env")):
        print(f"SKIP: the test cluster is not running ({STATE}/env missing; scripts/slurm-local.sh start)")
        sys.exit(SKIP)
    env = dict(os.environ)
    env["SLURM_CONF"] = os.path.join(STATE, "slurm.conf")
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin"
    env["ANVIL_BIN"] = ANVIL
    env["ANVIL_STEP_MARKERS"] = os.path.join(STATE, "step-markers")  # not in the source tree
    for k in [k for k in env if k.startswith("SLURM_") and k != "SLURM_CONF"]:
        del env[k]  # a test run inside a Slurm job must not leak that job's settings
    return env


def make_model(tmp):
    model = os.path.join(tmp, "model")
    subprocess.run([ANVIL, "init-model", "--preset", "tiny", "--out", model, "--seed", "1", "--init-std", "0.1"],
                   check=True, capture_output=True)
    return model


def demo_args(model, out, *sets):
    args = [CONFIG, "--set", f"output_dir={out}", "--set", f"model.path={model}"]
    for s in sets:
        args += ["--set", s]
    return args


def sbatch(env, log, args, wait=False, timeout=240):
    """Submits slurm/demo-cpu.sbatch ARGS from the repository root; returns the job id (and
    with wait=True, sbatch --wait's exit code, the job's)."""
    cmd = ["sbatch", "--parsable", f"--output={log}"] + (["--wait"] if wait else []) + [DEMO] + list(args)
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=SRC, env=env, timeout=timeout)
    job = p.stdout.strip().split(";")[0]
    if wait:
        return job, p.returncode
    assert p.returncode == 0 and job, f"sbatch failed: {p.stdout}{p.stderr}"
    return job


def job_fields(env, job):
    """scontrol show job's KEY=VALUE fields (JobState, Restarts, ExitCode, ...)."""
    p = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, env=env)
    fields = {}
    for tok in p.stdout.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            fields[k] = v
    return fields


def wait_job_done(env, job, timeout):
    """Waits until the job has ended for good (not requeued); returns its fields."""
    deadline = time.time() + timeout
    while True:
        f = job_fields(env, job)
        if f.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            return f
        if time.time() > deadline:
            subprocess.run(["scancel", job], env=env)
            raise AssertionError(f"job {job} not done after {timeout} s: {f}")
        time.sleep(0.5)


def steps_done(out):
    try:
        with open(os.path.join(out, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return max((r["step"] for r in rows if "loss" in r), default=0)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return f"({path} missing)"
