"""Preemption through Slurm. A demo job (slurm/demo-cpu.sbatch, 2 ranks) is signalled in the
middle of its run the way --signal=B:USR1@T does it (scancel --batch --signal=USR1: to the
batch script, which forwards the signal to the ranks); the ranks save a checkpoint and
exit 75, the script requeues the job, and the requeued job resumes from the checkpoint
and finishes with the adapter bytes of an uninterrupted job. Then the same with the
signal sent to the ranks directly (scancel --signal=USR1, Slurm's job steps). Skips (77)
when Slurm could not start here."""
import os
import re
import subprocess
import tempfile
import time

from slurm_util import (cluster_env, demo_args, job_fields, make_model, read, read_text, sbatch, steps_done,
                        wait_job_done)

STEPS = 200
SETS = [f"train.steps={STEPS}", "train.eval_every=0", "checkpoint.every=100", "checkpoint.keep=10",
        "lora.dropout=0.1", "log.every=1000"]


def preempt(env, job, out, log, at_step, scancel_args, restarts):
    """Waits for step `at_step` of run number `restarts`, signals the job, and waits until
    Slurm has requeued it; returns the step the ranks saved."""
    deadline = time.time() + 120
    while steps_done(out) < at_step:
        f = job_fields(env, job)
        assert f.get("JobState") in ("PENDING", "RUNNING", "CONFIGURING"), f"{f}\n{read_text(log)}"
        assert time.time() < deadline, f"job {job} did not reach step {at_step}: {f}\n{read_text(log)}"
        time.sleep(0.1)
    subprocess.run(["scancel", *scancel_args, "--signal=USR1", job], env=env, check=True)
    deadline = time.time() + 60
    while True:
        f = job_fields(env, job)
        if int(f.get("Restarts", "0")) >= restarts and f.get("JobState") == "PENDING":
            break
        assert f.get("JobState") in ("RUNNING", "PENDING", "REQUEUED", "COMPLETING", "CONFIGURING"), \
            f"{f}\n{read_text(log)}"
        assert time.time() < deadline, f"job {job} was not requeued: {f}\n{read_text(log)}"
        time.sleep(0.2)
    # Slurm holds a requeued job back for a couple of minutes (BeginTime); the test waits 2 s
    # instead (a start within the second of the requeue fails: "Job credential revoked").
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now+2"], env=env, check=True)
    saved = [int(s) for s in re.findall(r"preempted after step (\d+)", read_text(log))]
    assert len(saved) == restarts, read_text(log)
    return saved[-1]


def main():
    env = cluster_env()
    with tempfile.TemporaryDirectory(prefix="anvil_slurm_preempt_") as tmp:
        model = make_model(tmp)
        ref = os.path.join(tmp, "uninterrupted")
        ref_log = os.path.join(tmp, "uninterrupted.log")
        _, rc = sbatch(env, ref_log, demo_args(model, ref, *SETS), wait=True)
        assert rc == 0, f"uninterrupted job: exit {rc}\n{read_text(ref_log)}"
        want = read(os.path.join(ref, "adapter", "adapter_model.safetensors"))

        out = os.path.join(tmp, "preempted")
        log = os.path.join(tmp, "preempted.log")
        job = sbatch(env, log, demo_args(model, out, *SETS))
        first = preempt(env, job, out, log, 20, ["--batch"], restarts=1)
        assert os.path.exists(os.path.join(out, "checkpoints", f"step_{first}.h5"))
        print(f"job {job}: USR1 to the batch script; the ranks saved step {first}, exit 75, requeued")
        second = preempt(env, job, out, log, first + 20, [], restarts=2)
        assert second > first and os.path.exists(os.path.join(out, "checkpoints", f"step_{second}.h5"))
        print(f"job {job}: USR1 to the job's ranks; they saved step {second}, exit 75, requeued")

        f = wait_job_done(env, job, timeout=150)
        text = read_text(log)
        assert f.get("JobState") == "COMPLETED" and f.get("ExitCode") == "0:0", f"{f}\n{text}"
        assert f.get("Restarts") == "2", f
        assert text.count("requeueing job") == 2, text
        assert f"after step {first}" in text and f"after step {second}" in text, text
        assert "anvil train exited 0" in text, text
        got = read(os.path.join(out, "adapter", "adapter_model.safetensors"))
        assert got == want, "the preempted and requeued job's adapter differs from the uninterrupted job's"
        print(f"job {job}: resumed twice, completed; the adapter is the uninterrupted job's, byte for byte")

        # ANVIL_MAX_RESTARTS caps the requeues: with 0, the first preemption ends the job
        # (exit 75) with its checkpoint saved, and nothing is requeued.
        capped = os.path.join(tmp, "capped")
        capped_log = os.path.join(tmp, "capped.log")
        job = sbatch(dict(env, ANVIL_MAX_RESTARTS="0"), capped_log, demo_args(model, capped, *SETS))
        deadline = time.time() + 120
        while steps_done(capped) < 10:
            assert time.time() < deadline, f"job {job} did not reach step 10\n{read_text(capped_log)}"
            time.sleep(0.1)
        subprocess.run(["scancel", "--batch", "--signal=USR1", job], env=env, check=True)
        f = wait_job_done(env, job, timeout=120)
        text = read_text(capped_log)
        assert f.get("ExitCode") == "75:0" and f.get("Restarts") == "0", f"{f}\n{text}"
        assert "not requeueing" in text and "requeueing job" not in text, text
        saved = re.findall(r"preempted after step (\d+)", text)
        assert len(saved) == 1 and os.path.exists(os.path.join(capped, "checkpoints", f"step_{saved[0]}.h5")), text
        print(f"job {job}: ANVIL_MAX_RESTARTS=0: preempted after step {saved[0]}, exit 75, not requeued")


if __name__ == "__main__":
    main()
