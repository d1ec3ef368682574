"""`anvil prepare` under mpirun: the ranks split the lines of every file, rank 0 assembles
the token cache, and the cache must be byte for byte the one a single process writes,
with the per-file report printed once. Data: several weighted files mixing text,
prompt/completion and chat records (the tiny model's Llama-3 template is detected), bad
records among them, an eval split by data.eval_fraction. Then:
- data.on_error: fail ends the job with exit 2 naming the first bad record's file and
  line, the same line on 1 and 3 ranks;
- `anvil train` on 2 ranks reuses the prepared cache and trains on it;
- a changed data file gets a new cache key (never the old cache).

Usage: test_prepare_mpi.py MPIEXEC   (ANVIL_BIN, ANVIL_SOURCE_DIR from the environment)"""
import json
import os
import re
import subprocess
import sys
import tempfile

ANVIL = os.environ["ANVIL_BIN"]
SRC = os.environ["ANVIL_SOURCE_DIR"]
MPIEXEC = sys.argv[1]
CONFIG = os.path.join(SRC, "configs", "demo-cpu.yaml")


def run(cmd, expect=0, timeout=300):
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=SRC, timeout=timeout)
    assert p.returncode == expect, f"{' '.join(cmd)}: exit {p.returncode}, want {expect}\n{p.stdout}\n{p.stderr}"
    return p


def mpi(np):
    return [MPIEXEC, "--oversubscribe", "-np", str(np)] if np > 1 else []


def write_data(tmp):
    a = os.path.join(tmp, "a.jsonl")
    with open(a, "w", encoding="utf-8") as f:
        for i in range(60):
            if i % 3 == 0:
                f.write(json.dumps({"text": f"note {i}: the river is {i % 7} km long"}) + "\n")
            elif i % 3 == 1:
                f.write(json.dumps({"prompt": f"{i} + 1 =", "completion": f" {i + 1}"}) + "\n")
            else:
                f.write(json.dumps({"messages": [{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": f"Double {i}?"},
                                                 {"role": "assistant", "content": f"{2 * i}."}]}) + "\n")
            if i == 20:
                f.write('{"text": 5}\n')  # line 22
            if i == 40:
                f.write('{"text": "unterminated\n\n')  # line 43, then a blank line
    b = os.path.join(tmp, "b.jsonl")
    with open(b, "w", encoding="utf-8") as f:
        for i in range(25):
            f.write(json.dumps({"text": f"b-record {i} " + "x" * (i * 5)}) + "\n")
    return a, b


def prepare(np, model, run_dir, cache, *sets, expect=0):
    args = ["--set", f"model.path={model}", "--set", f"output_dir={run_dir}", "--set", f"data.cache_dir={cache}"]
    for s in sets:
        args += ["--set", s]
    return run(mpi(np) + [ANVIL, "prepare", CONFIG] + args, expect=expect)


def main():
    with tempfile.TemporaryDirectory(prefix="anvil_mpi_prepare_") as tmp:
        model = os.path.join(tmp, "model")
        run([ANVIL, "init-model", "--preset", "tiny", "--out", model, "--seed", "1", "--init-std", "0.1"])
        a, b = write_data(tmp)
        sets = [f"data.train=[{a}, {{path: {b}, weight: 1.5}}]", "data.eval=null", "data.eval_fraction=0.1",
                "data.seq_len=48", "data.overflow=split"]

        outputs = {}
        for np in (1, 3):
            cache = os.path.join(tmp, f"cache{np}")
            p = prepare(np, model, os.path.join(tmp, f"run{np}"), cache, *sets)
            path = p.stdout.strip().splitlines()[-1]
            assert path.startswith(cache) and path.endswith(".bin"), p.stdout
            with open(path, "rb") as f:
                outputs[np] = (os.path.basename(path), f.read())
            log = p.stderr
            # The report, once: both files, the two bad records with their lines.
            assert log.count("a.jsonl: 62 records, 60 samples, 2 skipped (invalid JSON 1, wrong type 1)") == 1, log
            assert re.search(r"a\.jsonl:22: field \"text\" must be a string", log), log
            assert re.search(r"a\.jsonl:43: invalid JSON", log), log
            assert log.count("b.jsonl: 25 records, 25 samples") == 1, log
            assert "packing efficiency" in log and "split" in log, log
            assert not os.listdir(cache) == [], cache
            assert not [n for n in os.listdir(cache) if n.endswith(".parts") or n.endswith(".partial")], os.listdir(cache)
        assert outputs[1][0] == outputs[3][0], "the key must not depend on the ranks"
        assert outputs[1][1] == outputs[3][1], "3 ranks wrote another cache than 1 rank"

        # Fatal bad records: the first one, whatever the ranks.
        for np in (1, 3):
            p = prepare(np, model, os.path.join(tmp, "fail"), os.path.join(tmp, f"fail{np}"), *sets,
                        "data.on_error=fail", expect=2)
            assert re.search(r"a\.jsonl:22: field \"text\" must be a string.*on_error", p.stderr), p.stderr
            assert not os.path.exists(os.path.join(tmp, f"fail{np}")) or not [
                n for n in os.listdir(os.path.join(tmp, f"fail{np}")) if n.endswith(".bin")], "no cache on failure"

        # train on 2 ranks reuses the cache prepared on 3.
        cache3 = os.path.join(tmp, "cache3")
        p = run(mpi(2) + [ANVIL, "train", CONFIG, "--set", f"model.path={model}", "--set",
                          f"output_dir={os.path.join(tmp, 'train')}", "--set", f"data.cache_dir={cache3}",
                          "--set", "train.steps=3", "--set", "train.warmup_steps=1", "--set", "train.eval_every=3",
                          "--set", "checkpoint.every=0"]
                + sum([["--set", s] for s in sets], []))
        assert "data: reused " + os.path.join(cache3, outputs[3][0]) in p.stderr, p.stderr
        assert "eval step 3" in p.stderr + p.stdout, p.stderr

        # A changed file: a new key.
        with open(b, "a", encoding="utf-8") as f:
            f.write(json.dumps({"text": "one more"}) + "\n")
        p = prepare(1, model, os.path.join(tmp, "run1"), os.path.join(tmp, "cache1"), *sets)
        assert os.path.basename(p.stdout.strip().splitlines()[-1]) != outputs[1][0], p.stdout
    print("prepare under mpirun: same cache bytes on 1 and 3 ranks, one report, fatal errors agree, train reuses")


if __name__ == "__main__":
    main()
