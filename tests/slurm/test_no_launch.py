"""srun can exit 0 for a step whose tasks never ran (a launch that failed while the job was
requeued or cancelled, seen on Slurm 22.05). The batch scripts count the markers each task
leaves before it starts anvil (slurm/anvil-task.sh), and fail the job when the launcher's 0 comes without them.
Here an `srun` on the job's PATH that only prints a launch error and exits 0 stands in for
that launch: the job must end FAILED with exit 1, say why, not requeue, and leave no
markers behind; export.sbatch, whose marker is its output directory, fails likewise. (The
happy path, every task's marker present, is slurm.demo.) Skips (77) when Slurm could not
start."""
import os
import subprocess
import tempfile

from slurm_util import SRC, cluster_env, demo_args, job_fields, make_model, read_text, sbatch

EXPORT = os.path.join(SRC, "slurm", "export.sbatch")


def main():
    env = cluster_env()
    with tempfile.TemporaryDirectory(prefix="anvil_slurm_nolaunch_") as tmp:
        fake = os.path.join(tmp, "bin")
        os.mkdir(fake)
        with open(os.path.join(fake, "srun"), "w") as f:
            f.write("#!/bin/sh\necho 'srun: error: Task launch for StepId=0.0 failed (test stand-in)' >&2\nexit 0\n")
        os.chmod(os.path.join(fake, "srun"), 0o755)
        env["PATH"] = fake + ":" + env["PATH"]
        markers = os.path.join(tmp, "markers")
        env["ANVIL_STEP_MARKERS"] = markers
        model = make_model(tmp)
        out = os.path.join(tmp, "run")
        log = os.path.join(tmp, "job.log")
        job, rc = sbatch(env, log, demo_args(model, out), wait=True)
        text = read_text(log)
        assert rc != 0, f"sbatch --wait: exit {rc}, the job passed without running\n{text}"
        fields = job_fields(env, job)
        assert fields.get("JobState") == "FAILED" and fields.get("ExitCode") == "1:0", fields
        assert fields.get("Restarts") == "0", fields
        assert "test stand-in" in text, text  # it was the fake srun that ran
        assert "the launcher exited 0 but only 0 of 2 tasks started" in text, text
        assert not os.path.exists(out), "anvil ran after all"
        assert os.listdir(markers) == [], os.listdir(markers)
        print(f"job {job}: srun exited 0 without starting a task; the job failed (exit 1) saying so")
        # export.sbatch: its own output is the marker.
        exported = os.path.join(tmp, "exported")
        log = os.path.join(tmp, "export.log")
        p = subprocess.run(["sbatch", "--parsable", "--wait", "--ntasks=1", "--cpus-per-task=1", "--mem=0",
                            f"--output={log}", EXPORT,
                            os.path.join(tmp, "step_1.h5"), exported],
                           capture_output=True, text=True, cwd=SRC, env=env, timeout=240)
        text = read_text(log)
        assert p.returncode != 0, f"export.sbatch passed without running\n{text}"
        assert f"srun exited 0 but {exported} is missing or empty: the step never ran" in text, text
        print(f"job {p.stdout.strip()}: export.sbatch likewise")


if __name__ == "__main__":
    main()
