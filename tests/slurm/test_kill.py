"""A rank killed outright (SIGKILL: the OOM killer, a segfault) under Slurm never reaches
MPI_Abort. The job must still end within seconds, its other rank gone, the batch log naming
the killed task, and not be requeued (only exit 75 is). What ends it is Open MPI's PMIx
client, which learns of the dead peer and aborts the survivors, and srun --kill-on-bad-exit=1
in the batch scripts (a preemption exits 0 through slurm/anvil-task.sh, so -K1 never ends a
step being requeued). The collective watchdog is set far away, so it is not what ends it.
Skips (77) when Slurm could not start."""
import os
import subprocess
import tempfile
import time

from slurm_util import cluster_env, demo_args, job_fields, make_model, read_text, sbatch, steps_done, wait_job_done

WATCHDOG_S = 600  # the collective watchdog stays far away: only srun can end the job quickly


def rank_pids(env, job):
    """{SLURM_PROCID: pid} of the job's anvil processes on this node."""
    p = subprocess.run(["scontrol", "listpids", job], capture_output=True, text=True, env=env)
    ranks = {}
    for line in p.stdout.splitlines()[1:]:
        fields = line.split()
        if not fields or not fields[0].isdigit():
            continue
        pid = int(fields[0])
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
        except OSError:
            continue
        if os.path.basename(argv[0]) == b"anvil" and b"SLURM_PROCID" in environ:
            ranks[int(environ[b"SLURM_PROCID"])] = pid
    return ranks


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def main():
    env = cluster_env()
    with tempfile.TemporaryDirectory(prefix="anvil_slurm_kill_") as tmp:
        model = make_model(tmp)
        out = os.path.join(tmp, "run")
        log = os.path.join(tmp, "job.log")
        job = sbatch(env, log, demo_args(model, out, "train.steps=100000", "train.eval_every=0", "checkpoint.every=0",
                                         f"parallel.collective_timeout_s={WATCHDOG_S}", "log.every=1000"))
        deadline = time.time() + 120
        while steps_done(out) < 3 or len(rank_pids(env, job)) < 2:
            f = job_fields(env, job)
            assert f.get("JobState") in ("PENDING", "RUNNING", "CONFIGURING"), f"{f}\n{read_text(log)}"
            assert time.time() < deadline, f"job {job} did not start training: {f}\n{read_text(log)}"
            time.sleep(0.2)
        pids = rank_pids(env, job)
        os.kill(pids[1], 9)
        killed_at = time.time()
        f = wait_job_done(env, job, timeout=WATCHDOG_S / 4)
        took = time.time() - killed_at
        text = read_text(log)
        assert took < 60, f"the job took {took:.0f} s to end after rank 1 was killed\n{text}"
        assert f.get("JobState") == "FAILED" and f.get("Restarts") == "0", f"{f}\n{text}"
        assert not alive(pids[0]), f"rank 0 (pid {pids[0]}) still runs after the job ended"
        assert "task 1" in text and "Killed" in text, text
        assert "requeueing" not in text, text
        print(f"job {job}: rank 1 SIGKILLed at step {steps_done(out)}; the job ended in {took:.1f} s "
              f"({f.get('JobState')}, exit {f.get('ExitCode')}), rank 0 gone, not requeued")


if __name__ == "__main__":
    main()
