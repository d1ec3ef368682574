#!/usr/bin/env python3
"""Communication model of anvil's tensor-parallel (TP) + data-parallel (DP) LoRA step.

A computed model, not a measurement: it counts the bytes of every collective that the
TP/DP design performs (DESIGN.md, "Parallelism"; src/model/tp_layers.h) and the matmul FLOPs
of a LoRA training step, and turns them into times with assumed bandwidths, latencies and
an assumed achieved bf16 rate. Standard library only; prints Markdown tables.

    python3 scripts/bench/comm_model.py
    python3 scripts/bench/comm_model.py --seq 8192 --rank 64 --achieved 0.5

Collectives (N = micro_batch * seq tokens, C = hidden, r = LoRA rank):
  per layer, per micro-batch, forward:  o_proj and down_proj outputs, all-reduce (N, C) bf16
      (the row-parallel LoRA term s.(x_t A_t^T) B^T is added to each rank's partial output
      before it, so LoRA adds no collective of its own).
  per layer, per micro-batch, backward: input gradients of the attention block (q/k/v)
      and of the MLP block (gate/up), all-reduce (N, C) bf16.
  with activation checkpointing the recompute runs the o_proj all-reduce again; down_proj's
      output is not recomputed (the next block's input is kept), only its LoRA x.A^T.
  per micro-batch: embedding output (N, C) bf16; cross-entropy per block of 64 rows: the
      row max (fp32), then (sum-exp, target logit) (2 fp64), 2 all-reduces per block;
      LM-head input gradient (N, C) bf16.
  per optimizer step: TP all-reduce of the (partial) gradients of the replicated adapter
      matrices: A of the column-parallel layers, B of the row-parallel ones (fp32, one flat
      buffer); DP all-reduce of the rank's whole LoRA gradient buffer (fp32, one flat buffer).
A ring all-reduce of S bytes over p ranks moves 2(p-1)/p * S bytes per rank; its time is
alpha + moved / busbw, with busbw the nccl-tests "bus bandwidth".

FLOPs per rank (bf16 matmuls only; elementwise ops, norms, softmax and the memory-bound
thin LoRA GEMMs' memory traffic are not counted):
  frozen linear layers and LM head: forward 2*P*N + backward input gradient 2*P*N, no
      weight gradient (frozen), divided by tp;
  causal attention, per layer: forward 2 * 2*N*(T+1)/2 * C (QK^T and PV over the causal
      half), backward 2.5x forward (FlashAttention-2: 5 GEMMs against 2), divided by tp;
  LoRA: forward 2*N*r*(in+out), backward twice that; the A side of column-parallel and the
      B side of row-parallel layers are replicated, so that part is not divided by tp.
  activation checkpointing adds one forward of every layer but its down_proj base GEMM (not
      the LM head).
"""
import argparse

MODELS = {
    # name: hidden C, intermediate F, layers L, heads H, kv heads Hkv, vocab V
    "llama-3-8b": dict(C=4096, F=14336, L=32, H=32, Hkv=8, V=128256),
    "llama-3-70b": dict(C=8192, F=28672, L=80, H=64, Hkv=8, V=128256),
}

BF16, FP32 = 2, 4


def projections(m):
    """(name, in, out, kind) of the seven LoRA-adapted projections of one layer."""
    C, F = m["C"], m["F"]
    kv = m["Hkv"] * (C // m["H"])
    return [("q", C, C, "col"), ("k", C, kv, "col"), ("v", C, kv, "col"), ("o", C, C, "row"),
            ("gate", C, F, "col"), ("up", C, F, "col"), ("down", F, C, "row")]


def ring(p):
    return 2.0 * (p - 1) / p if p > 1 else 0.0


class Link:
    def __init__(self, busbw_gbs, alpha_us):
        self.bw = busbw_gbs * 1e9
        self.alpha = alpha_us * 1e-6

    def time(self, moved_bytes, count):
        return count * self.alpha + moved_bytes / self.bw


def model_step(m, tp, dp, seq, mb, r, accum):
    """Bytes moved per rank, collective counts and FLOPs per rank for one optimizer step."""
    C, L, V = m["C"], m["L"], m["V"]
    N = mb * seq
    projs = projections(m)
    f = ring(tp)

    # --- TP, per micro-batch --------------------------------------------------------
    fwd_layer = 2 * N * C * BF16                           # o, down outputs
    bwd_layer = 2 * N * C * BF16                           # attention, MLP input gradients
    ce_blocks = -(-N // 64)                                # cross-entropy row blocks
    once = 2 * N * C * BF16 + N * (FP32 + 2 * 8)           # embedding, LM-head grad, CE
    tp_mb = L * (fwd_layer + bwd_layer) + once
    tp_mb_ckpt = tp_mb + L * N * C * BF16                  # o_proj again in the recompute
    n_mb = L * 4 + 2 + 2 * ce_blocks                       # 2 fwd + 2 bwd per layer
    n_mb_ckpt = n_mb + L
    # --- TP, per optimizer step: gradients of the replicated adapter matrices --------
    tp_step = L * sum(r * i if kind == "col" else r * o for _, i, o, kind in projs) * FP32
    tp_bytes = f * (accum * tp_mb + tp_step) if tp > 1 else 0.0
    tp_bytes_ckpt = f * (accum * tp_mb_ckpt + tp_step) if tp > 1 else 0.0
    tp_count = accum * n_mb + 1 if tp > 1 else 0
    tp_count_ckpt = accum * n_mb_ckpt + 1 if tp > 1 else 0

    # --- DP: the rank's LoRA gradient buffer, fp32 ------------------------------------
    local = 0
    for _, i, o, kind in projs:
        local += (r * i + o // tp * r) if kind == "col" else (r * i // tp + o * r)
    local *= L
    total_lora = L * sum(r * (i + o) for _, i, o, _ in projs)
    dp_payload = local * FP32
    dp_bytes = ring(dp) * dp_payload

    # --- FLOPs per rank, per micro-batch ---------------------------------------------
    P = sum(i * o for _, i, o, _ in projs)                 # frozen linear params per layer
    frozen_fwd = 2 * N * P * L / tp
    head = 2 * 2 * N * C * V / tp                          # LM head fwd + input grad
    attn_fwd = L * 2 * 2 * N * (seq + 1) / 2 * C / tp
    lora_fwd = 0.0
    for _, i, o, kind in projs:
        lora_fwd += 2 * N * r * (i + o / tp) if kind == "col" else 2 * N * r * (i / tp + o)
    lora_fwd *= L
    flops = 2 * frozen_fwd + head + attn_fwd * 3.5 + lora_fwd * 3
    down = 2 * N * m["F"] * C * L / tp                     # not recomputed
    flops_ckpt = flops + frozen_fwd - down + attn_fwd + lora_fwd
    return dict(tp_bytes=tp_bytes, tp_bytes_ckpt=tp_bytes_ckpt, tp_count=tp_count,
                tp_count_ckpt=tp_count_ckpt, dp_bytes=dp_bytes, dp_payload=dp_payload,
                dp_count=1 if dp > 1 else 0, lora_total=total_lora, lora_local=local,
                flops=accum * flops, flops_ckpt=accum * flops_ckpt, tokens=accum * N)


def fmt_ms(s):
    return f"{s * 1e3:.1f} ms" if s >= 1e-3 else f"{s * 1e3:.2f} ms"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--micro-batch", type=int, default=1)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--accum", type=int, default=1, help="micro-batches per optimizer step")
    ap.add_argument("--peak-tflops", type=float, default=989.4, help="dense bf16 peak (H100/H200 SXM)")
    ap.add_argument("--achieved", type=float, default=0.55, help="achieved fraction of peak")
    ap.add_argument("--nvlink-busbw", type=float, default=450.0, help="GB/s, all-reduce bus bw in a node")
    ap.add_argument("--ib-busbw", type=float, default=40.0, help="GB/s per GPU across nodes")
    ap.add_argument("--nvlink-alpha-us", type=float, default=10.0, help="latency per collective, in node")
    ap.add_argument("--ib-alpha-us", type=float, default=20.0, help="latency per collective, across nodes")
    a = ap.parse_args()

    rate = a.peak_tflops * 1e12 * a.achieved
    nv = Link(a.nvlink_busbw, a.nvlink_alpha_us)
    ib = Link(a.ib_busbw, a.ib_alpha_us)

    print(f"seq {a.seq}, micro batch {a.micro_batch}, {a.accum} micro-batch(es) per step, LoRA r={a.rank} on "
          f"q/k/v/o/gate/up/down; compute at {a.achieved:.0%} of {a.peak_tflops:g} TFLOP/s = "
          f"{rate / 1e12:.0f} TFLOP/s; TP on NVLink {a.nvlink_busbw:g} GB/s + {a.nvlink_alpha_us:g} us per "
          f"collective; DP across nodes {a.ib_busbw:g} GB/s + {a.ib_alpha_us:g} us. Bytes are moved per rank "
          f"(2(p-1)/p x payload), MB = 1e6 bytes. ckpt = activation checkpointing.")
    print()
    print("| model | grid (GPUs) | ckpt | TP MB/step/rank (collectives) | TP time | compute | TP / compute "
          "| DP MB/step/rank | DP time | step, serial | tokens/s per GPU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    grids = [(8, 1, None), (8, 2, ib), (4, 2, nv)]
    for name, m in MODELS.items():
        for tp, dp, dplink in grids:
            s = model_step(m, tp, dp, a.seq, a.micro_batch, a.rank, a.accum)
            where = "" if dp == 1 else (", DP across nodes" if dplink is ib else ", DP in node")
            t_dp = dplink.time(s["dp_bytes"], s["dp_count"]) if dplink else 0.0
            for ck in ("", "_ckpt"):
                t_tp = nv.time(s["tp_bytes" + ck], s["tp_count" + ck])
                t_c = s["flops" + ck] / rate
                step = t_c + t_tp + t_dp
                print(f"| {name} | tp {tp} x dp {dp} ({tp * dp}){where} | {'yes' if ck else 'no'} "
                      f"| {s['tp_bytes' + ck] / 1e6:,.0f} ({s['tp_count' + ck]}) | {fmt_ms(t_tp)} | {fmt_ms(t_c)} "
                      f"| {t_tp / t_c:.2f} | {s['dp_bytes'] / 1e6:,.0f} | {fmt_ms(t_dp) if dplink else '-'} "
                      f"| {fmt_ms(step)} | {s['tokens'] * dp / step / (tp * dp):,.0f} |")
    print()
    for name, m in MODELS.items():
        s = model_step(m, 8, 2, a.seq, a.micro_batch, a.rank, a.accum)
        print(f"- {name}: {s['lora_total'] / 1e6:.1f} M LoRA parameters; a tp 8 rank holds "
              f"{s['lora_local'] / 1e6:.1f} M of them (its DP payload: {s['dp_payload'] / 1e6:.0f} MB fp32).")
    print()

    seqs = [512, 1024, 2048, 4096, 8192, 16384, 32768]
    print("TP time / compute time (no checkpointing; with checkpointing in brackets), micro batch "
          f"{a.micro_batch}, by tp and sequence length:")
    print()
    print("| model | tp | " + " | ".join(f"seq {t}" for t in seqs) + " |")
    print("|---|---|" + "---|" * len(seqs))
    for name, m in MODELS.items():
        for tp in (2, 4, 8):
            cells = []
            for t in seqs:
                s = model_step(m, tp, 1, t, a.micro_batch, a.rank, a.accum)
                q = nv.time(s["tp_bytes"], s["tp_count"]) / (s["flops"] / rate)
                qc = nv.time(s["tp_bytes_ckpt"], s["tp_count_ckpt"]) / (s["flops_ckpt"] / rate)
                cells.append(f"{q:.2f} ({qc:.2f})")
            print(f"| {name} | {tp} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
