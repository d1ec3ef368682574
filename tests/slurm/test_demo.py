"""`sbatch --wait slurm/demo-cpu.sbatch` on the test cluster (2 tasks through srun --mpi=pmix)
completes, with metrics for every step, the evaluations, the periodic checkpoints and the
adapter, and exit code 0. Skips (77) when Slurm could not start here."""
import os
import tempfile

from slurm_util import cluster_env, demo_args, make_model, read_text, sbatch, job_fields, steps_done


def main():
    env = cluster_env()
    with tempfile.TemporaryDirectory(prefix="anvil_slurm_demo_") as tmp:
        model = make_model(tmp)
        out = os.path.join(tmp, "run")
        log = os.path.join(tmp, "job.log")
        job, rc = sbatch(env, log, demo_args(model, out), wait=True)
        text = read_text(log)
        assert rc == 0, f"sbatch --wait: exit {rc}\n{text}"
        fields = job_fields(env, job)
        assert fields.get("JobState") == "COMPLETED" and fields.get("ExitCode") == "0:0", fields
        assert "2 ranks" in text and "anvil train exited 0" in text, text
        assert steps_done(out) == 200, read_text(os.path.join(out, "metrics.jsonl"))
        metrics = read_text(os.path.join(out, "metrics.jsonl"))
        assert metrics.count('"eval_loss"') == 5, metrics  # before step 1, then every 50
        ckpts = sorted(os.listdir(os.path.join(out, "checkpoints")))
        assert ckpts == ["latest", "step_100.h5", "step_200.h5"], ckpts
        assert os.path.getsize(os.path.join(out, "adapter", "adapter_model.safetensors")) > 0
        print(f"job {job}: 200 steps on 2 ranks, 5 evaluations, {ckpts}, adapter written")


if __name__ == "__main__":
    main()
