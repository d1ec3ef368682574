"""`anvil train` on the demo config under mpirun on the grids (tp, dp) = (1,1), (2,1),
(1,2), (2,2), (4,1): the per-step losses and gradient norms, the evaluation losses and the
final adapter weights must match the single-rank run within relative 1e-5. LoRA dropout is
on, so the dropout masks must not depend on the grid either. Also: only rank 0 writes
metrics, and a rank that fails in the middle of a step ends the job within seconds.

With --moe the model is a small Qwen3-MoE (qk-norm, 6 experts top-2, a dense layer between
two sparse ones, the load-balancing loss on) with adapters on the attention, the dense MLP
and every expert (no dropout: experts take none); the per-step aux loss and expert loads
must match too, and the adapters within 1e-5 as well (with AdamW's eps at 1e-6: ADAM_EPS).

With --ep (implies --moe) the grids are (tp, ep, dp) = (1,1,1), (1,2,1), (2,2,1), (1,2,2):
the routed experts split over ep ranks, tokens dispatched to them by all-to-all; every
metric and adapter must meet the same tolerances as the MoE grids, and the PEFT adapter
gathered from the ep ranks' experts must equal the single rank's.

With --llama4 (implies --ep) the model is a small Llama 4 (sigmoid top-1 router scaling the
routed experts' input, shared experts, experts fused on disk, iRoPE attention, dense and
shared-expert MLPs of different widths) on the same grids: the scaled rows travel to their
experts, the router's gradient comes back from theirs, tp splits heads, both MLP widths
and each expert; the same tolerances and checkpoint checks, and an nf4 base at ep 2 gives
the nf4 run at ep 1 within 1e-5 (each expert is quantized alone, wherever it is held) and
at tp 2 within 3% (each rank quantizes its slice, as in mpi.grid_quant); the nf4 and fp8 tp 2
runs' merged exports are W_dq + scale·B·A with W_dq quantized per tp slice as those ranks did
(by torch / bitsandbytes; tp 1's W_dq must not pass). Also top-2 routing at ep 2 against ep 1,
and experts FP8 on disk (fbgemm_fp8, e2e.llama4_fp8's fixture) at tp 2 against tp 1, both
within the grids' tolerances.

Usage: test_grid_equivalence.py MPIEXEC [--moe | --ep | --llama4]   (ANVIL_BIN, ANVIL_SOURCE_DIR from the environment)"""
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from safetensors.numpy import load_file

ANVIL = os.environ["ANVIL_BIN"]
SRC = os.environ["ANVIL_SOURCE_DIR"]
sys.path.insert(0, os.path.join(SRC, "tests", "e2e"))
import test_llama4 as e2e_llama4  # noqa: E402
import test_llama4_fp8 as e2e_fp8  # noqa: E402
from test_qlora import reference_dequantize  # noqa: E402
MPIEXEC = sys.argv[1]
LLAMA4 = "--llama4" in sys.argv[2:]
EP = "--ep" in sys.argv[2:] or LLAMA4
MOE = "--moe" in sys.argv[2:] or EP
MOE_SPEC = {"model_type": "qwen3_moe", "hidden_size": 64, "intermediate_size": 64, "moe_intermediate_size": 32,
            "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
            "vocab_size": 320, "num_experts": 6, "num_experts_per_tok": 2, "norm_topk_prob": False,
            "mlp_only_layers": [1], "output_router_logits": True, "router_aux_loss_coef": 0.05,
            "max_position_embeddings": 128, "rms_norm_eps": 1e-6}
# e2e.llama4's tiny model with 4 routed experts and 4 heads on 2 KV heads (ep 2 and tp 2
# must divide them)
LLAMA4_SPEC = {**e2e_llama4.SPEC, "num_local_experts": 4, "num_attention_heads": 4, "num_key_value_heads": 2}
CONFIG = os.path.join(SRC, "configs", "demo-cpu.yaml")
STEPS = 12
# (tp, ep, dp)
GRIDS = ([(1, 1, 1), (1, 2, 1), (2, 2, 1), (1, 2, 2)] if EP
         else [(1, 1, 1), (2, 1, 1), (1, 1, 2), (2, 1, 2), (4, 1, 1)])
TOLERANCE = 1e-5
# The MoE models run with AdamW's eps at 1e-6 instead of 1e-8. With 1e-8, an adapter element
# whose gradient on an early step is of the order of eps (a sum that nearly cancels) moves by
# g / (|g| + eps) * lr, so the float noise of a different reduction order (tp's vocabulary-
# parallel loss, split heads) becomes a visible share of that update: the Qwen3-MoE model's
# last k_proj B then differs by 1.8e-4 (norm-relative) between tp 1 and tp 2 after 12 steps,
# while losses and gradient norms agree within 1e-7. With eps 1e-6 the same runs agree within
# 3.5e-6, so the adapters are held to the same 1e-5 as everything else.
ADAM_EPS = ["train.adam_eps=1e-6"] if MOE else []
ADAPTER_TOLERANCE = TOLERANCE


def run(cmd, timeout=300):
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=SRC, timeout=timeout)
    return p, time.monotonic() - t0


def train(model, out, tp, dp, extra_env=None, timeout=300, ep=1, extra=(), steps=STEPS):
    sets = [f"output_dir={out}", f"model.path={model}", f"train.steps={steps}", "train.warmup_steps=3",
            "train.eval_every=6", f"parallel.tp={tp}", f"parallel.ep={ep}", "log.every=4"]
    sets += [] if any(e.startswith("checkpoint.every=") for e in extra) else ["checkpoint.every=0"]
    sets += ADAM_EPS
    sets += (["lora.dropout=0", "lora.targets=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,experts]"]
             if MOE else ["lora.dropout=0.1"])
    sets += [e for e in extra if "=" in e]  # last: a run's own settings win
    # Micro-batches of 2 on every grid (the aux loss is one per micro-batch), so that global
    # batch 8 splits over ep x dp = 4 ranks too.
    sets += ["train.micro_batch=2"] if EP else []
    cmd = [MPIEXEC, "--oversubscribe", "-np", str(tp * ep * dp)]
    for k, v in (extra_env or {}).items():
        cmd += ["-x", f"{k}={v}"]
    cmd += [ANVIL, "train", CONFIG] + [e for e in extra if "=" not in e]
    for s in sets:
        cmd += ["--set", s]
    return run(cmd, timeout)


def metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    steps = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "eval_loss" in r]
    return steps, evals


def rel(a, b):
    """||a - b|| / ||b||: the relative error of a tensor. (Elementwise, Adam's first steps
    turn float-noise differences of near-zero gradients into full-size updates of single
    elements, so an element's error says little about the run.)"""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / scale) if scale > 0 else float(np.linalg.norm(a - b))


def main():
    with tempfile.TemporaryDirectory(prefix="anvil_mpi_grid_") as tmp:
        check(tmp)


def check(tmp):
    model = os.path.join(tmp, "model")
    if MOE:
        spec = os.path.join(tmp, "spec.json")
        with open(spec, "w") as f:
            json.dump(LLAMA4_SPEC if LLAMA4 else MOE_SPEC, f)
        p, _ = run([ANVIL, "init-model", "--spec", spec, "--out", model, "--seed", "2", "--init-std", "0.1"])
    else:
        p, _ = run([ANVIL, "init-model", "--preset", "tiny", "--out", model, "--seed", "1", "--init-std", "0.1"])
    assert p.returncode == 0, p.stderr

    results = {}
    for tp, ep, dp in GRIDS:
        out = os.path.join(tmp, f"run_tp{tp}_ep{ep}_dp{dp}")
        p, seconds = train(model, out, tp, dp, ep=ep)
        assert p.returncode == 0, f"tp {tp} ep {ep} dp {dp}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
        steps, evals = metrics(out)
        assert [r["step"] for r in steps] == list(range(1, STEPS + 1)), steps
        adapter = load_file(os.path.join(out, "adapter", "adapter_model.safetensors"))
        results[(tp, ep, dp)] = (steps, evals, adapter)
        # Only rank 0 prints the progress and the resolved config, and one binding line per
        # rank in rank order (host, ranks, tp/dp coordinates, CPUs, NUMA node, device).
        log = p.stdout + p.stderr
        assert log.count("resolved config") == 1, log
        binds = [line.split("bind: ", 1)[1] for line in log.splitlines() if "bind: rank " in line]
        assert [b.split("/")[0] for b in binds] == [f"rank {r}" for r in range(tp * ep * dp)], binds
        # dp counts every rank of the same TP slice (ep x dp of them): world rank = (dp_rank *
        # ep + ep_rank) * tp + tp_rank.
        ep_part = lambda r: f", ep {(r // tp) % ep}/{ep}" if ep > 1 else ""
        assert all(f"tp {r % tp}/{tp}{ep_part(r)}, dp {r // tp}/{ep * dp}; cpus " in b
                   for r, b in enumerate(binds)), binds
        print(f"tp {tp} ep {ep} dp {dp}: {seconds:.1f} s, final loss {steps[-1]['loss']:.6f}, "
              f"eval {evals[-1]['eval_loss']:.6f}")

    worst = {"loss": 0.0, "grad_norm": 0.0, "eval_loss": 0.0, "adapter": 0.0}
    for grid, got in results.items():
        if grid != (1, 1, 1):
            compare(str(grid), got, results[(1, 1, 1)], worst)
    print("all grids match the single-rank run; worst relative differences: " +
          ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    if EP:
        check_ep_checkpoints(tmp, model, results)
    if LLAMA4:
        check_quantized_ep(tmp, model)
        check_top2_ep(tmp, results)
        check_fp8_on_disk_tp(tmp, model, results)
        check_dropout_tp(tmp, model)
    if MOE:
        return

    # A rank failing in the middle of step 3 (after its first micro-batch, while the others
    # wait in the step's collectives) ends the whole job quickly with its message.
    out = os.path.join(tmp, "run_fault")
    p, seconds = train(model, out, 2, 2, {"ANVIL_FAULT_INJECT": "3:3"}, timeout=60)
    log = p.stdout + p.stderr
    assert p.returncode != 0, log
    assert "[rank 3] error: ANVIL_FAULT_INJECT: failing in step 3 on purpose" in log, log
    assert seconds < 30, f"the job took {seconds:.1f} s to end"
    print(f"a failing rank ended the job in {seconds:.1f} s with exit code {p.returncode}")


def compare(name, got, want, worst):
    """Run `got` = (steps, evals, adapter) against `want` within the grids' tolerances: every
    step's loss and gradient norm (and under MoE expert loads and aux loss), every evaluation,
    every adapter tensor; the worst relative differences go into `worst`."""
    (steps, evals, adapter), (ref_steps, ref_evals, ref_adapter) = got, want
    assert [r["step"] for r in steps] == [r["step"] for r in ref_steps], name
    for key in ("loss", "grad_norm"):
        for a, b in zip(steps, ref_steps):
            err = abs(a[key] - b[key]) / abs(b[key])
            worst[key] = max(worst[key], err)
            assert err <= TOLERANCE, f"{name} step {a['step']} {key}: {a[key]} vs {b[key]} (rel {err:.2e})"
    assert [r["tokens"] for r in steps] == [r["tokens"] for r in ref_steps], name
    if MOE:  # the routing is the same: every expert gets the same tokens on every grid
        assert [r["expert_load"] for r in steps] == [r["expert_load"] for r in ref_steps], name
        for a, b in zip(steps, ref_steps):
            if LLAMA4:  # Llama 4 has no load-balancing loss
                assert "aux_loss" not in a and "aux_loss" not in b, (a, b)
                continue
            err = abs(a["aux_loss"] - b["aux_loss"]) / abs(b["aux_loss"])
            worst["aux_loss"] = max(worst.get("aux_loss", 0.0), err)
            assert err <= TOLERANCE, f"{name} step {a['step']} aux_loss: rel {err:.2e}"
    assert len(evals) == len(ref_evals), name
    for a, b in zip(evals, ref_evals):
        assert a["step"] == b["step"] and a["eval_tokens"] == b["eval_tokens"], (a, b)
        err = abs(a["eval_loss"] - b["eval_loss"]) / abs(b["eval_loss"])
        worst["eval_loss"] = max(worst["eval_loss"], err)
        assert err <= TOLERANCE, f"{name} eval at step {a['step']}: rel {err:.2e}"
    assert sorted(adapter) == sorted(ref_adapter), name
    for key, want_tensor in ref_adapter.items():
        assert adapter[key].shape == want_tensor.shape, (name, key)
        err = rel(adapter[key], want_tensor)
        worst["adapter"] = max(worst["adapter"], err)
        assert err <= ADAPTER_TOLERANCE, f"{name} {key}: rel {err:.2e}"


def check_ep_checkpoints(tmp, model, results):
    """Checkpoints under ep: each ep rank writes its own experts' slabs of the one logical
    file. A run stopped at step 6 and resumed on the same grid repeats the uninterrupted one
    bit for bit; an ep 2 checkpoint resumes at ep 1 and an ep 1 one at ep 2 (within the
    grids' tolerance of the single-rank run); and an ep checkpoint exports the single-rank
    checkpoint's adapter (within the adapter tolerance)."""
    def stopped(name, tp, ep, dp):
        out = os.path.join(tmp, name)
        p, _ = train(model, out, tp, dp, ep=ep, extra=("checkpoint.every=6", "--stop-after", "6"))
        assert p.returncode == 0, f"{name}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
        return out

    def resumed(out, tp, ep, dp, source=None):
        extra = ("checkpoint.every=6",) + ((f"checkpoint.resume={source}",) if source else ())
        p, _ = train(model, out, tp, dp, ep=ep, extra=extra)
        assert p.returncode == 0, f"{out}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
        assert "resumed from" in p.stdout + p.stderr and "after step 6" in p.stdout + p.stderr
        return metrics(out)[0], load_file(os.path.join(out, "adapter", "adapter_model.safetensors"))

    for grid in ((1, 2, 1), (2, 2, 1), (1, 2, 2)):
        tp, ep, dp = grid
        out = stopped(f"ckpt_tp{tp}_ep{ep}_dp{dp}", tp, ep, dp)
        steps, adapter = resumed(out, tp, ep, dp)
        want_steps, _, want_adapter = results[grid]
        assert [(r["step"], r["loss"], r["grad_norm"]) for r in steps] == \
            [(r["step"], r["loss"], r["grad_norm"]) for r in want_steps], f"{grid}: resume is not exact"
        assert all(np.array_equal(adapter[k], want_adapter[k]) for k in want_adapter), f"{grid}: adapter differs"
        print(f"{grid}: stop at step 6 and resume gives the uninterrupted run bit for bit")
    ep_run = os.path.join(tmp, "ckpt_tp1_ep2_dp1")

    single = stopped("ckpt_ep1", 1, 1, 1)
    ckpt_ep2 = os.path.join(ep_run, "checkpoints", "step_6.h5")
    ckpt_ep1 = os.path.join(single, "checkpoints", "step_6.h5")
    ref_steps, _, ref_adapter = results[(1, 1, 1)]
    for name, (tp, ep, dp), source in (("ep2_to_ep1", (1, 1, 1), ckpt_ep2), ("ep1_to_ep2", (1, 2, 1), ckpt_ep1),
                                       ("ep2_to_tp2ep2", (2, 2, 1), ckpt_ep2)):
        steps, adapter = resumed(os.path.join(tmp, name), tp, ep, dp, source)
        assert [r["step"] for r in steps] == list(range(7, STEPS + 1)), steps
        for a, b in zip(steps, ref_steps[6:]):
            for key in ("loss", "grad_norm"):
                err = abs(a[key] - b[key]) / abs(b[key])
                assert err <= TOLERANCE, f"{name} step {a['step']} {key}: rel {err:.2e}"
        for k, want in ref_adapter.items():
            assert rel(adapter[k], want) <= ADAPTER_TOLERANCE, f"{name} {k}: rel {rel(adapter[k], want):.2e}"
        print(f"{name}: resumed at step 6, the single-rank losses and adapter")

    exports = {}
    for tag, ckpt in (("ep1", ckpt_ep1), ("ep2", ckpt_ep2)):
        out = os.path.join(tmp, f"export_{tag}")
        p, _ = run([ANVIL, "export", ckpt, "--format", "peft", "--out", out])
        assert p.returncode == 0, p.stdout + p.stderr
        exports[tag] = load_file(os.path.join(out, "adapter_model.safetensors"))
    assert sorted(exports["ep1"]) == sorted(exports["ep2"])
    worst = max(rel(exports["ep2"][k], v) for k, v in exports["ep1"].items())
    assert worst <= ADAPTER_TOLERANCE, f"ep 2 export vs ep 1: rel {worst:.2e}"
    print(f"the ep 2 checkpoint exports the single-rank adapter (worst rel {worst:.1e})")


def check_quantized_ep(tmp, model):
    """nf4 at ep 2 = nf4 at ep 1: each routed expert is quantized from its own copy, so the
    quantized base does not depend on which rank holds it. At tp 2 each rank quantizes its
    slice (another quantization of the same weights, as mpi.grid_quant): within the QLoRA
    tolerance, 3% on the mean loss of the last 4 steps. The tp 2 runs (nf4 and fp8) keep a
    checkpoint for check_quantized_tp_export."""
    got = {}
    for quant, tp, ep in (("nf4", 1, 1), ("nf4", 1, 2), ("nf4", 2, 1), ("fp8", 2, 1)):
        out = os.path.join(tmp, f"{quant}_tp{tp}_ep{ep}")
        extra = (f"model.quant={quant}",) + ((f"checkpoint.every={STEPS}",) if tp == 2 else ())
        p, _ = train(model, out, tp, 1, ep=ep, extra=extra)
        assert p.returncode == 0, f"{quant} tp {tp} ep {ep}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
        assert f"linear weights {quant}" in p.stdout + p.stderr
        got[(quant, tp, ep)] = (metrics(out)[0], load_file(os.path.join(out, "adapter", "adapter_model.safetensors")))
    (steps, adapter), (ref_steps, ref_adapter) = got[("nf4", 1, 2)], got[("nf4", 1, 1)]
    for a, b in zip(steps, ref_steps):
        err = abs(a["loss"] - b["loss"]) / abs(b["loss"])
        assert err <= TOLERANCE, f"nf4 ep 2 step {a['step']}: rel {err:.2e}"
    worst = max(rel(adapter[k], v) for k, v in ref_adapter.items())
    assert worst <= ADAPTER_TOLERANCE, f"nf4 ep 2 adapter: rel {worst:.2e}"
    last = lambda s: np.mean([r["loss"] for r in s[-4:]])
    across_tp = abs(last(got[("nf4", 2, 1)][0]) - last(ref_steps)) / last(ref_steps)
    assert across_tp <= 0.03, f"nf4 tp 2: last-4 mean loss rel {across_tp:.2e}"
    print(f"nf4 at ep 2 gives the nf4 losses of ep 1 (adapter worst rel {worst:.1e}); "
          f"nf4 at tp 2 within {across_tp:.2%} of tp 1")
    for quant in ("nf4", "fp8"):
        check_quantized_tp_export(tmp, model, os.path.join(tmp, f"{quant}_tp2_ep1"), quant, tp=2)


def sliced_dequantize(quant, w, tp, by_cols):
    """W_dq of an (out, in) weight as tp ranks quantized it, each its own slice (rows; the
    columns of a row-parallel layer), by the reference libraries; None where they do not run."""
    parts = [reference_dequantize(quant, np.ascontiguousarray(b)) for b in np.split(w, tp, axis=int(by_cols))]
    return None if parts[0] is None else np.concatenate(parts, axis=int(by_cols))


def check_quantized_tp_export(tmp, model, run_dir, quant, tp):
    """The merged export of a quantized run at tp > 1 (README, anvil export: "quantized per TP
    slice exactly as training's ranks did"): every weight training held quantized is W_dq +
    scale·B·A, W_dq the reference library's (torch float8_e4m3fn, bitsandbytes nf4) on each
    rank's slice; the fused experts per expert and projection, transposed back into x·W. The
    router, norms, embedding and LM head are the base's. The tp 1 quantization of the same
    weights must not pass, or the check could not tell the slicing from none."""
    ckpt = os.path.join(run_dir, "checkpoints", f"step_{STEPS}.h5")
    merged_dir = os.path.join(tmp, f"export_{quant}_tp{tp}")
    p, _ = run([ANVIL, "export", ckpt, "--format", "hf", "--out", merged_dir, "--dtype", "f32"])
    assert p.returncode == 0, p.stdout + p.stderr
    if reference_dequantize(quant, np.ones((1, 64), np.float32)) is None:
        print(f"{quant} tp {tp} export: torch / bitsandbytes do not run here; values not checked")
        return
    base = load_file(os.path.join(model, "model.safetensors"))
    merged = load_file(os.path.join(merged_dir, "model.safetensors"))
    assert sorted(base) == sorted(merged)
    cfg = json.load(open(os.path.join(run_dir, "adapter", "adapter_config.json")))
    adapter = load_file(os.path.join(run_dir, "adapter", "adapter_model.safetensors"))
    scale = cfg["lora_alpha"] / cfg["r"]
    delta = lambda m: scale * adapter[f"base_model.model.{m}.lora_B.weight"] @ adapter[f"base_model.model.{m}.lora_A.weight"]
    # (name, got, W, module, row-parallel) of every quantized weight, (out, in)
    weights, I = [], LLAMA4_SPEC["intermediate_size"]
    for name, w in base.items():
        stem = name.rsplit(".", 1)[0]
        if name.endswith((".experts.gate_up_proj", ".experts.down_proj")):
            leaves = ["down_proj"] if name.endswith("down_proj") else ["gate_proj", "up_proj"]
            for e in range(LLAMA4_SPEC["num_local_experts"]):
                for k, leaf in enumerate(leaves):
                    cols = slice(k * I, (k + 1) * I) if leaf != "down_proj" else slice(None)
                    weights.append((f"{name}[{e}] {leaf}", merged[name][e][:, cols].T,
                                    np.ascontiguousarray(w[e][:, cols].T), f"{stem}.{e}.{leaf}", leaf == "down_proj"))
        elif name.endswith("_proj.weight"):
            weights.append((name, merged[name], w, name[:-len(".weight")], name.endswith(("o_proj.weight", "down_proj.weight"))))
        else:  # router, norms, embedding, LM head: not quantized, not adapted
            assert np.array_equal(merged[name], w.astype(np.float32)), name
    n_layers, n_sparse = LLAMA4_SPEC["num_hidden_layers"], LLAMA4_SPEC["num_hidden_layers"] // LLAMA4_SPEC["interleave_moe_layer_step"]
    assert len(weights) == n_layers * 7 + n_sparse * LLAMA4_SPEC["num_local_experts"] * 3, len(weights)

    def misses(parts):
        """(blocks off by more than float noise, blocks, worst error / max|W|) of the export
        against W_dq of `parts` slices: blocks of 64 within each slice (nf4's blocks)."""
        bad = total = 0
        worst = 0.0
        for name, got, w, module, by_cols in weights:
            want = sliced_dequantize(quant, w, parts, by_cols) + delta(module)
            tol = 1e-6 * np.abs(w).max()
            for g, x in zip(np.split(got, parts, axis=int(by_cols)), np.split(want, parts, axis=int(by_cols))):
                err = np.abs(g - x).ravel()
                blocks = np.pad(err, (0, -err.size % 64)).reshape(-1, 64).max(axis=1)
                bad, total = bad + int((blocks > tol).sum()), total + blocks.size
            worst = max(worst, float(np.abs(got - want).max() / np.abs(w).max()))
        return bad, total, worst

    bad, total, worst = misses(tp)
    # torch's float8_e4m3fn and bitsandbytes' NF4, which anvil's codecs equal bit for bit
    assert bad == 0, f"{quant} tp {tp} export: {bad} of {total} blocks differ from W_dq + scale·B·A (worst {worst:.2e})"
    bad1, total1, worst1 = misses(1)
    # fp8's scales are per output row, so only the row-parallel weights (o, down) tell tp 2 from tp 1
    assert bad1 > (0.05 * total1 if quant == "nf4" else 0), f"{quant}: the tp 1 quantization passes too"
    print(f"{quant} tp {tp}: merged export = W_dq per tp slice + scale·B·A on {len(weights)} weights "
          f"({bad} of {total} blocks off, worst {worst:.1e} of max|W|; tp 1's W_dq: {bad1} blocks off, worst {worst1:.1e})")


def check_top2_ep(tmp, results):
    """Llama 4 routing each token to its top 2 experts (each scaling its own copy of the row by
    its score) at ep 2: a row may travel to two experts on the other rank and come back twice.
    The same metrics and adapter as at ep 1 within the grids' tolerances, over 6 steps; and
    top 2 really in effect (the same weights give another first loss than top 1's)."""
    spec, model = os.path.join(tmp, "spec_top2.json"), os.path.join(tmp, "model_top2")
    with open(spec, "w") as f:
        json.dump({**LLAMA4_SPEC, "num_experts_per_tok": 2}, f)
    p, _ = run([ANVIL, "init-model", "--spec", spec, "--out", model, "--seed", "2", "--init-std", "0.1"])
    assert p.returncode == 0, p.stderr
    got = {ep: train_results(model, os.path.join(tmp, f"top2_ep{ep}"), 1, 1, ep=ep, steps=6) for ep in (1, 2)}
    assert got[1][0][0]["loss"] != results[(1, 1, 1)][0][0]["loss"], "top 2 gives top 1's loss"
    worst = {"loss": 0.0, "grad_norm": 0.0, "eval_loss": 0.0, "adapter": 0.0}
    compare("top 2, ep 2", got[2], got[1], worst)
    print("top 2 at ep 2 matches ep 1; worst relative differences: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))


def train_results(model, out, tp, dp, **kw):
    """One run that must succeed: its step metrics, evaluations and final adapter."""
    p, _ = train(model, out, tp, dp, **kw)
    assert p.returncode == 0, f"{out}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    steps, evals = metrics(out)
    return steps, evals, load_file(os.path.join(out, "adapter", "adapter_model.safetensors"))


def check_fp8_on_disk_tp(tmp, model, results):
    """Llama 4's routed experts FP8 on disk as fbgemm_fp8 saves them (e2e.llama4_fp8's fixture)
    at tp 2: each rank takes its gate/up rows and down columns of every expert's codes with
    their per-output scales as they are, nothing requantized, so tp 2 gives tp 1's losses,
    gradient norms and adapter within the grids' tolerances (6 steps). The rest of the model
    stays dense (quant_skip): fp8 at load would quantize o_proj's and down_proj's tp 2 column
    slices differently. The experts hold their FP8 values, not the f32 ones: another first loss
    than the f32 run's."""
    fp8_dir = os.path.join(tmp, "fp8_disk")
    e2e_fp8.make_fixture(model, fp8_dir, os.path.join(tmp, "fp8_twin"))
    dense = "model.quant_skip=[lm_head,embed_tokens,router,q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]"
    got = {tp: train_results(fp8_dir, os.path.join(tmp, f"fp8_disk_tp{tp}"), tp, 1, extra=("model.quant=fp8", dense),
                             steps=6) for tp in (1, 2)}
    assert got[1][0][0]["loss"] != results[(1, 1, 1)][0][0]["loss"], "the fp8 experts load as their f32 values"
    worst = {"loss": 0.0, "grad_norm": 0.0, "eval_loss": 0.0, "adapter": 0.0}
    compare("fp8 on disk, tp 2", got[2], got[1], worst)
    print("fp8 experts on disk at tp 2 match tp 1; worst relative differences: " +
          ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))



def check_dropout_tp(tmp, model):
    """LoRA dropout on Llama 4's attention, dense MLPs and shared experts (experts take none)
    at tp 2: every rank draws the masks of the whole input, so tp 2 gives tp 1's metrics and
    adapter within the grids' tolerances (6 steps); and the dropout is in effect (another
    second loss than without it)."""
    targets = "lora.targets=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]"
    got = {tp: train_results(model, os.path.join(tmp, f"dropout_tp{tp}"), tp, 1, extra=("lora.dropout=0.1", targets),
                             steps=6) for tp in (1, 2)}
    plain = train_results(model, os.path.join(tmp, "dropout_off"), 1, 1, extra=("lora.dropout=0", targets), steps=6)
    assert plain[0][1]["loss"] != got[1][0][1]["loss"], "dropout 0.1 gives dropout 0's second loss"
    worst = {"loss": 0.0, "grad_norm": 0.0, "eval_loss": 0.0, "adapter": 0.0}
    compare("dropout, tp 2", got[2], got[1], worst)
    print("dropout at tp 2 matches tp 1; worst relative differences: " +
          ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))

if __name__ == "__main__":
    main()
