#!/usr/bin/env python3
"""PyTorch + PEFT peer for anvil's CPU LoRA training-step benchmark.

Times full training steps (forward, backward, AdamW step, zero_grad) of Hugging Face
LlamaForCausalLM + PEFT LoRA, fp32 on CPU, for the `smollm2-135m` shape of
src/model/model_presets.cpp (hidden 576, intermediate 1536, 30 layers, 9 heads / 3 kv
heads, vocab 49152, tied embeddings, rope theta 100000). The weights are random (from
the config, nothing is downloaded): the step time does not depend on their values.

    .venv/bin/python scripts/bench/torch_lora_step.py --steps 3
    .venv/bin/python scripts/bench/torch_lora_step.py --checkpointing --json out.json
    .venv/bin/python scripts/bench/torch_lora_step.py --spec MODEL_DIR/config.json   # another shape
    .venv/bin/python scripts/bench/torch_lora_step.py --quant nf4   # QLoRA: bitsandbytes Linear4bit base

With --quant nf4 every base projection (the LoRA targets) becomes a bitsandbytes
Linear4bit (NF4, double quantization, blocksize 64, f32 compute) before PEFT wraps it, as a
QLoRA recipe loads the base; the embedding / tied head stay f32, as in anvil's nf4 step.

With --spec the model is AutoModelForCausalLM of that config.json (random weights, as
anvil init-model --spec writes them); on a mixture-of-experts model (Qwen3-MoE, Mixtral)
the targets gate_proj/up_proj/down_proj reach every routed expert (PEFT 0.21 turns them
into LoRA on transformers 5's fused expert parameters), the router stays frozen.

LoRA r=16, alpha=32, dropout 0 on q/k/v/o/gate/up/down; loss = mean cross-entropy over
all tokens (HF's shifted labels). The peak RSS is the whole process's (ru_maxrss), so
it includes model creation; compare runs of this script with each other.
"""
import argparse
import json
import warnings
import resource
import statistics
import sys
import time

import peft
import torch
import transformers

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# Must match model_preset("smollm2-135m") in src/model/model_presets.cpp.
SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, head_dim=64, vocab_size=49152, tie_word_embeddings=True,
                    rope_theta=100000.0, max_position_embeddings=8192, rms_norm_eps=1e-5, hidden_act="silu",
                    bos_token_id=1, eos_token_id=2)


def quantize_base_nf4(model):
    """Every target nn.Linear of the base as a bitsandbytes NF4 Linear4bit (CPU)."""
    import bitsandbytes as bnb
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in TARGETS and isinstance(child, torch.nn.Linear):
                q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=torch.float32, compress_statistics=True, quant_type="nf4")
                q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, quant_type="nf4",
                                             compress_statistics=True, blocksize=64)
                setattr(module, child_name, q.to("cpu"))  # .to() quantizes


def build_model(args):
    torch.manual_seed(args.seed)
    if args.spec:
        config = transformers.AutoConfig.from_pretrained(args.spec, use_cache=False)
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=args.attn,
                                                              dtype=torch.float32)
    else:
        config = transformers.LlamaConfig(**SMOLLM2_135M, use_cache=False)
        model = transformers.LlamaForCausalLM._from_config(config, attn_implementation=args.attn,
                                                           dtype=torch.float32)
    if args.quant == "nf4":
        quantize_base_nf4(model)
    if args.checkpointing:
        # Non-reentrant checkpointing works with frozen inputs (PEFT freezes the embedding),
        # so no enable_input_require_grads() hook is needed.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lcfg = peft.LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=TARGETS,
                           bias="none", task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, lcfg)
    model.train()
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq", type=int, default=512, help="tokens per sequence")
    ap.add_argument("--micro-batch", type=int, default=1, help="sequences per step")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--steps", type=int, default=5, help="timed steps")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default)")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"], help="attention implementation")
    ap.add_argument("--checkpointing", action="store_true", help="model.gradient_checkpointing_enable()")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spec", metavar="CONFIG_JSON", help="an HF config.json instead of the smollm2-135m shape")
    ap.add_argument("--quant", default="none", choices=["none", "nf4"], help="nf4: bitsandbytes 4-bit base (QLoRA)")
    ap.add_argument("--json", metavar="PATH", help="also write the numbers as JSON ('-': stdout)")
    args = ap.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notes from PEFT
    model = build_model(args)
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    n_total = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(trainable, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    gen = torch.Generator().manual_seed(args.seed)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (args.micro_batch, args.seq), generator=gen)

    def step():
        loss = model(input_ids=ids, labels=ids).loss  # HF shifts the labels: mean CE over T-1 tokens
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()  # .item() also makes sure the step has really finished

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}; "
          f"threads {torch.get_num_threads()}, attn {args.attn}, checkpointing {args.checkpointing}")
    shape = args.spec or "smollm2-135m"
    print(f"{shape} shape: {n_total:,} parameters, {n_trainable:,} trainable (LoRA r={args.rank}); "
          f"micro batch {args.micro_batch} x seq {args.seq}")
    for i in range(args.warmup):
        t0 = time.perf_counter()
        loss = step()
        print(f"  warm-up {i}: {1e3 * (time.perf_counter() - t0):.0f} ms, loss {loss:.4f}")
    # Process CPU time next to wall time: on a shared machine a step whose CPU time is far
    # below threads x wall time was slowed down by someone else, not by PyTorch.
    times, cpu = [], []
    for i in range(args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        print(f"  step {i}: {1e3 * times[-1]:.0f} ms (cpu {1e3 * cpu[-1]:.0f} ms), loss {loss:.4f}")

    tokens = args.micro_batch * args.seq
    mean_s = sum(times) / len(times)
    result = {
        "model": shape, "quant": args.quant, "seq": args.seq, "micro_batch": args.micro_batch, "rank": args.rank,
        "alpha": args.alpha, "attn": args.attn, "checkpointing": args.checkpointing,
        "threads": torch.get_num_threads(), "warmup": args.warmup, "steps": args.steps,
        "ms_per_step": 1e3 * mean_s, "ms_per_step_median": 1e3 * statistics.median(times),
        "tokens_per_s": tokens / mean_s, "step_ms": [1e3 * t for t in times],
        "step_cpu_ms": [1e3 * t for t in cpu],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,  # Linux: KiB
        "parameters": n_total, "trainable": n_trainable,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
    }
    print(f"{result['tokens_per_s']:.1f} tokens/s, {result['ms_per_step']:.0f} ms/step "
          f"(median {result['ms_per_step_median']:.0f}), peak RSS {result['peak_rss_mib']:.0f} MiB, "
          f"{result['threads']} threads")
    if args.json:
        text = json.dumps(result, indent=2) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            with open(args.json, "w") as f:
                f.write(text)


if __name__ == "__main__":
    main()
