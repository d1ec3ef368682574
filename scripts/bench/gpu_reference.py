#!/usr/bin/env python3
"""PyTorch side of anvil's GPU benchmarks (issue 8): the shapes of bench_gpu_kernels, measured
with PyTorch, plus the HF transformers + PEFT training step.

    python scripts/bench/gpu_reference.py ceiling|attention|lora [--quick] [--warmup N] [--reps N]
    python scripts/bench/gpu_reference.py train_step --model-config DIR/config.json --seq 4096 --batch 1

One JSON object per measurement on stdout, the format of bench_gpu_kernels with
"side": "reference" (scripts/bench/gpu_pair.py pairs them by benchmark and shape); progress
and versions on stderr.

- ceiling: torch.matmul in bf16 (a @ b.T, square), Tensor.copy_ of 1 GiB.
- attention: torch.nn.functional.scaled_dot_product_attention on bf16 (B, T, H, D) tensors
  viewed as (B, H, T, D) (as HF models call it), under sdpa_kernel(FLASH_ATTENTION) and
  sdpa_kernel(CUDNN_ATTENTION); each backend's median is in the config, the best is the
  number. Packed documents: torch.nn.attention.varlen.varlen_attn where this torch has it.
  anvil's kernel reads f32 activations; this side reads bf16 (stated in both configs).
- lora: PEFT's LoRA Linear (get_peft_model on one bf16 nn.Linear; PEFT keeps the adapter in
  fp32, its default autocast_adapter_dtype), forward and forward + backward with dx.
- train_step: LlamaForCausalLM from a config.json (random weights, made on the GPU), bf16,
  sdpa attention, non-reentrant gradient checkpointing, PEFT LoRA on all seven projections,
  AdamW, grad clipping 1.0; tokens/s = batch x seq / median step; torch.cuda.max_memory_allocated.
Timing: CUDA events around each call after warm-up, median of the timed calls, inputs drawn
fresh (torch.randn, unseeded) for every shape.
"""
import argparse
import inspect
import json
import os
import statistics
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_pair  # noqa: E402  (FLOP counts shared with the pairing)

VARLEN_DOCS = [2048, 1024, 512, 256, 128, 128]  # one 4096-token row; bench_gpu_kernels.cpp kVarlenDocs
DEVICE_NAME = None


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def emit(benchmark, shape, config, timing, flops=None, nbytes=None):
    line = {"side": "reference", "benchmark": benchmark, "shape": shape, "config": config, "device": DEVICE_NAME}
    line.update(timing)
    if flops:
        line["flops"] = flops
        line["tflops"] = flops / (timing["median_ms"] * 1e-3) / 1e12
    if nbytes:
        line["bytes"] = nbytes
        line["gbps"] = nbytes / (timing["median_ms"] * 1e-3) / 1e9
    print(json.dumps(line), flush=True)


def cuda_time(fn, warmup, reps, prepare=None):
    """fn() `warmup` times, then `reps` times between CUDA events; prepare() runs before each
    call outside the events (the forward pass a timed backward consumes)."""
    for _ in range(warmup):
        if prepare:
            prepare()
        fn()
    events = []
    for _ in range(reps):
        if prepare:
            prepare()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        events.append((start, stop))
    torch.cuda.synchronize()
    ms = sorted(s.elapsed_time(e) for s, e in events)
    return {"median_ms": statistics.median(ms), "min_ms": ms[0], "max_ms": ms[-1], "reps": reps}


# ---- ceilings --------------------------------------------------------------------------------
def bench_ceiling(args):
    for n in ([4096, 8192] if args.quick else [4096, 8192, 16384]):
        a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        t = cuda_time(lambda: torch.matmul(a, b.t()), args.warmup, args.reps)
        emit("ceiling_gemm_bf16", {"m": n, "n": n, "k": n}, {"api": "torch.matmul(a, b.T), bf16"}, t, flops=2.0 * n ** 3)
        del a, b
    nbytes = 1 << 30
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    t = cuda_time(lambda: dst.copy_(src), args.warmup, args.reps)
    emit("ceiling_copy_d2d", {"bytes": nbytes}, {"api": "Tensor.copy_", "bytes_counted": "2 x size (read + write)"},
         t, nbytes=2.0 * nbytes)


# ---- attention -------------------------------------------------------------------------------
def backends():
    from torch.nn.attention import SDPBackend
    return [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)]


def best_of_backends(run_one, args):
    """run_one() -> (fwd timing, bwd timing) under each SDPA backend; the best of each."""
    from torch.nn.attention import sdpa_kernel
    per = {}
    for name, backend in backends():
        try:
            with sdpa_kernel(backend):
                per[name] = run_one()
        except RuntimeError as e:  # this backend does not take the shape / is not built in
            per[name] = str(e).splitlines()[0][:200]
            log(f"  {name}: unavailable: {per[name]}")
    ok = {k: v for k, v in per.items() if not isinstance(v, str)}
    out = []
    for i in range(2):
        if ok:
            best = min(ok, key=lambda k: ok[k][i]["median_ms"])
            out.append((best, ok[best][i], {k: (v[i]["median_ms"] if k in ok else v) for k, v in per.items()}))
        else:
            out.append(None)
    return out


def bench_attention_shape(args, seq, head_dim, causal, docs=None):
    f = torch.nn.functional
    tokens, hidden = 16384, 2048
    batch, heads = tokens // seq, hidden // head_dim

    def fresh(shape):  # (B, T, H, D) storage viewed as (B, H, T, D)
        return torch.randn(*shape, device="cuda", dtype=torch.bfloat16)

    if docs:
        q, k, v = (fresh((tokens, heads, head_dim)).requires_grad_() for _ in range(3))
        dout = fresh((tokens, heads, head_dim))
        lens = docs * batch
        cu = torch.tensor([0] + [sum(lens[:i + 1]) for i in range(len(lens))], dtype=torch.int32, device="cuda")
        try:
            from torch.nn.attention.varlen import varlen_attn
        except ImportError:
            log(f"  varlen: torch {torch.__version__} has no torch.nn.attention.varlen; no reference for d{head_dim}")
            return
        params = inspect.signature(varlen_attn).parameters
        kw = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
        call = lambda: varlen_attn(q, k, v, cu, cu, max(docs), max(docs), **kw)
        api = "torch.nn.attention.varlen.varlen_attn, causal"
    else:
        q, k, v = (fresh((batch, seq, heads, head_dim)).transpose(1, 2).detach().requires_grad_() for _ in range(3))
        dout = fresh((batch, seq, heads, head_dim)).transpose(1, 2)
        call = lambda: f.scaled_dot_product_attention(q, k, v, is_causal=causal)
        api = "torch.nn.functional.scaled_dot_product_attention"
    holder = {}

    def forward_for_backward():
        for t in (q, k, v):
            t.grad = None
        holder["out"] = call()

    def run_one():
        tf = cuda_time(call, args.warmup, args.reps)
        tb = cuda_time(lambda: holder["out"].backward(dout), args.warmup, args.reps, prepare=forward_for_backward)
        return tf, tb

    shape = {"batch": batch, "seq": seq, "heads": heads, "kv_heads": heads, "head_dim": head_dim, "causal": causal}
    if docs:
        shape["docs"] = docs
    fwd = gpu_pair.attention_fwd_flops(batch, seq, heads, head_dim, causal, docs)
    for name, mult, res in zip(("attention_fwd", "attention_bwd"), (1.0, 2.5), best_of_backends(run_one, args)):
        if res is None:
            log(f"  {name} d{head_dim} s{seq}: no backend ran")
            continue
        best, timing, all_ms = res
        emit(name, shape, {"api": api, "backend": best, "median_ms_by_backend": all_ms, "input_dtype": "bf16",
                           "layout": "(B, T, H, D) viewed as (B, H, T, D)"}, timing, flops=mult * fwd)


def bench_attention(args):
    seqs = [2048, 8192] if args.quick else [1024, 2048, 4096, 8192, 16384]
    for head_dim in (128, 64):
        for causal in (True, False):
            for seq in seqs:
                bench_attention_shape(args, seq, head_dim, causal)
    for head_dim in (128, 64):
        bench_attention_shape(args, 4096, head_dim, True, VARLEN_DOCS)


# ---- LoRA layer ------------------------------------------------------------------------------
class OneLinear(torch.nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.proj = torch.nn.Linear(n_in, n_out, bias=False)

    def forward(self, x):
        return self.proj(x)


def bench_lora_shape(args, tokens, n_in, n_out, rank):
    import peft
    base = OneLinear(n_in, n_out).to(device="cuda", dtype=torch.bfloat16)
    model = peft.get_peft_model(base, peft.LoraConfig(r=rank, lora_alpha=32, lora_dropout=0.0,
                                                      target_modules=["proj"], bias="none"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.02)  # mid-training values, as on anvil's side
    adapter_dtype = next(p.dtype for n, p in model.named_parameters() if "lora_A" in n)
    x = torch.randn(tokens, n_in, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn(tokens, n_out, device="cuda", dtype=torch.bfloat16)

    def zero():
        x.grad = None
        model.zero_grad(set_to_none=True)

    shape = {"tokens": tokens, "in": n_in, "out": n_out, "rank": rank, "alpha": 32, "dropout": 0.0}
    config = {"api": f"peft {peft.__version__} LoRA Linear (get_peft_model on a bf16 nn.Linear)",
              "adapter_dtype": str(adapter_dtype), "input_dtype": "bf16 x, y, dy, dx",
              "backward": "dx, dA, dB (W frozen)"}
    t = cuda_time(lambda: model(x), args.warmup, args.reps)
    emit("lora_layer_fwd", shape, config, t, flops=gpu_pair.lora_layer_flops(tokens, n_in, n_out, rank, backward=False))
    t = cuda_time(lambda: model(x).backward(dy), args.warmup, args.reps, prepare=zero)
    emit("lora_layer", shape, config, t, flops=gpu_pair.lora_layer_flops(tokens, n_in, n_out, rank))


def bench_lora(args):
    bench_lora_shape(args, 8192, 4096, 4096, 16)
    bench_lora_shape(args, 8192, 4096, 14336, 16)
    if not args.quick:
        bench_lora_shape(args, 8192, 14336, 4096, 16)


# ---- training step ---------------------------------------------------------------------------
def bench_train_step(args):
    import peft
    import transformers
    transformers.logging.set_verbosity_error()
    with open(args.model_config) as f:
        cfg_dict = json.load(f)
    config = transformers.LlamaConfig.from_json_file(args.model_config)
    config.use_cache = False
    with torch.device("cuda"):  # random init on the GPU: seconds, not minutes on the CPU
        try:
            model = transformers.LlamaForCausalLM._from_config(config, attn_implementation="sdpa", dtype=torch.bfloat16)
        except TypeError:  # transformers before 4.56 names it torch_dtype
            model = transformers.LlamaForCausalLM._from_config(config, attn_implementation="sdpa",
                                                               torch_dtype=torch.bfloat16)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lcfg = peft.LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=list(gpu_pair.PROJ),
                           bias="none", task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, lcfg)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=2e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}; "
        f"{sum(p.numel() for p in trainable):,} trainable; batch {args.batch} x seq {args.seq}")
    torch.cuda.reset_peak_memory_stats()

    def step():
        ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), device="cuda")
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    times = []
    for i in range(args.warmup_steps + args.steps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        loss = step()
        stop.record()
        stop.synchronize()
        ms = start.elapsed_time(stop)
        log(f"  step {i}{' (warm-up)' if i < args.warmup_steps else ''}: {ms:.0f} ms, loss {loss.item():.4f}")
        if i >= args.warmup_steps:
            times.append(ms)
    med = statistics.median(times)
    tokens = args.batch * args.seq
    line = {"side": "reference", "benchmark": "train_step", "device": DEVICE_NAME,
            "shape": {"model": args.model_name, "seq": args.seq, "batch": args.batch, "rank": args.rank,
                      "checkpointing": True},
            "tokens_per_s": tokens / (med * 1e-3), "median_ms": med, "min_ms": min(times), "steps": len(times),
            "flops_per_token": gpu_pair.train_flops_per_token(cfg_dict, args.seq, args.rank)["total"],
            "config": {"api": f"transformers {transformers.__version__} LlamaForCausalLM + peft {peft.__version__}, "
                              "sdpa, gradient checkpointing (non-reentrant), bf16 weights, fp32 adapters, AdamW, "
                              "clip 1.0, random token ids fresh each step",
                       "peak_allocated_mib": torch.cuda.max_memory_allocated() / 2 ** 20,
                       "peak_reserved_mib": torch.cuda.max_memory_reserved() / 2 ** 20}}
    print(json.dumps(line), flush=True)


def main():
    global DEVICE_NAME
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["ceiling", "attention", "lora", "train_step", "all"])
    ap.add_argument("--quick", action="store_true", help="fewer shapes and calls (a first, short run)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls per shape (default 3, quick 2)")
    ap.add_argument("--reps", type=int, default=None, help="timed calls per shape (default 20, quick 10)")
    ap.add_argument("--model-config", help="train_step: the model's config.json")
    ap.add_argument("--model-name", default="llama3-8b")
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32)
    ap.add_argument("--warmup-steps", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 3)
    args.reps = args.reps if args.reps is not None else (10 if args.quick else 20)
    if not torch.cuda.is_available():
        log("SKIP: no CUDA device")
        return 77
    warnings.filterwarnings("ignore", category=FutureWarning)
    DEVICE_NAME = torch.cuda.get_device_name(0)
    log(f"gpu_reference {args.what} on {DEVICE_NAME}, torch {torch.__version__}, warmup {args.warmup}, reps {args.reps}")
    if args.what in ("ceiling", "all"):
        bench_ceiling(args)
    if args.what in ("attention", "all"):
        bench_attention(args)
    if args.what in ("lora", "all"):
        bench_lora(args)
    if args.what == "train_step":
        if not args.model_config:
            log("train_step needs --model-config")
            return 2
        bench_train_step(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
