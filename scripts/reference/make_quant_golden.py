#!/usr/bin/env python3
"""Golden NF4 and FP8 quantizations for anvil's codecs (src/quant), from the libraries
users quantize with:

  NF4   bitsandbytes.functional.quantize_4bit(w, blocksize=64, quant_type="nf4",
        compress_statistics=True) on CPU: the packed 4-bit codes, the 8-bit codes of the
        double-quantized absmax, their per-256-block absmax and offset, both code maps,
        and bitsandbytes' own dequantize_4bit of it; and the plain f32 absmax
        (compress_statistics=False), which is what the 8-bit codes approximate; and the
        offsets (torch's absmax.mean()) of weights of many block counts.
  FP8   torch.float8_e4m3fn with one scale per row, scale = amax(row) / 448 (1 for an
        all-zero row), the convention of compressed-tensors' channel-wise float8 and
        fbgemm_fp8 checkpoints; and every e4m3 byte decoded by torch, plus a sweep of
        values (ties, subnormals, saturation) encoded by torch.

Inputs are bf16-valued (stored as BF16 to keep the file small) so that f32 and bf16
loaders quantize the same numbers. One block of the NF4 input and one FP8 row are zero.

    .venv/bin/python scripts/reference/make_quant_golden.py --out tests/golden/quant
    .venv/bin/python scripts/reference/make_quant_golden.py --check   # compare only

The output is deterministic (seeded); --check recomputes and compares bit for bit.
"""
import argparse
import json
import os
import sys
import warnings

import torch
from safetensors.torch import load_file, save_file

warnings.filterwarnings("ignore")
import bitsandbytes as bnb  # noqa: E402
import bitsandbytes.functional as bnbf  # noqa: E402

# (rows, cols): 264 NF4 blocks = two blocks of the absmax's own quantization; an odd
# element count with a partial last block; a tiny one of two blocks.
NF4_CASES = {"big": (33, 512), "odd": (37, 53), "tiny": (2, 64)}
FP8_CASES = {"rows": (24, 40)}


def bf16_valued(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * 0.05).to(torch.bfloat16).float()


def nf4_case(name, shape, seed, out):
    w = bf16_valued(shape, seed)
    if name == "big":
        w.view(-1)[64 * 5: 64 * 6] = 0.0  # an all-zero block
    packed, st = bnbf.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
    p = f"nf4.{name}."
    out[p + "x"] = w.to(torch.bfloat16)
    out[p + "packed"] = packed.reshape(-1).contiguous()
    out[p + "absmax_q"] = st.absmax.contiguous()
    _, plain = bnbf.quantize_4bit(w, blocksize=64, compress_statistics=False, quant_type="nf4")
    out[p + "absmax_f32"] = plain.absmax.float().contiguous()
    out[p + "absmax2"] = st.state2.absmax.float().contiguous()
    out[p + "offset"] = st.offset.float().reshape(1)
    out[p + "dequant"] = bnbf.dequantize_4bit(packed, st).float().contiguous()
    out["nf4.quant_map"] = st.code.float().contiguous()
    out["nf4.nested_quant_map"] = st.state2.code.float().contiguous()


# Block counts whose double-quantization offset (torch's float32 absmax.mean()) takes every
# path of torch's CPU sum: under 8 values, groups of 8 with and without leftovers, the
# four-way split with leftover groups, the cascade's coarser levels (2^4 steps of 32 values).
OFFSET_BLOCKS = list(range(1, 34)) + [48, 60, 144, 513, 1000, 4099]


def nf4_offsets(out):
    """bitsandbytes' offsets for weights of OFFSET_BLOCKS blocks: the f32 absmax of each (what
    the offset averages) concatenated, and the offsets."""
    g = torch.Generator().manual_seed(300)
    absmax, offsets = [], []
    for blocks in OFFSET_BLOCKS:
        w = torch.randn(blocks * 64, generator=g) * 0.05
        _, st = bnbf.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
        _, plain = bnbf.quantize_4bit(w, blocksize=64, compress_statistics=False, quant_type="nf4")
        absmax.append(plain.absmax.float())
        offsets.append(st.offset.float().reshape(1))
    out["nf4.offsets.blocks"] = torch.tensor(OFFSET_BLOCKS, dtype=torch.int32)
    out["nf4.offsets.absmax"] = torch.cat(absmax).contiguous()
    out["nf4.offsets.want"] = torch.cat(offsets).contiguous()


def fp8_case(name, shape, seed, out):
    w = bf16_valued(shape, seed)
    w[3] = 0.0  # an all-zero row
    amax = w.abs().amax(dim=1, keepdim=True)
    scale = torch.where(amax > 0, amax / 448.0, torch.ones_like(amax))
    q = (w / scale).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
    p = f"fp8.{name}."
    out[p + "x"] = w.to(torch.bfloat16)
    out[p + "q"] = q.view(torch.uint8).contiguous()
    out[p + "scale"] = scale.reshape(-1).contiguous()
    out[p + "dequant"] = (q.float() * scale).contiguous()


def fp8_codec(out):
    codes = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    out["fp8.decode"] = codes.view(torch.float8_e4m3fn).float()
    finite = out["fp8.decode"][~torch.isnan(out["fp8.decode"])]
    pos = torch.unique(finite.abs()).sort().values
    mids = (pos[:-1] + pos[1:]) / 2  # exact ties between neighbours: round to even
    g = torch.Generator().manual_seed(7)
    rand = torch.exp(torch.empty(512).uniform_(-14.0, 6.2, generator=g))
    sweep = torch.cat([pos, mids, rand, torch.tensor([1e-9, 2.0 ** -10, 3 * 2.0 ** -11, 447.9, 448.0])])
    sweep = torch.cat([sweep, -sweep])
    out["fp8.sweep.x"] = sweep.float().contiguous()
    out["fp8.sweep.q"] = sweep.to(torch.float8_e4m3fn).view(torch.uint8).contiguous()


def build():
    out = {}
    for i, (name, shape) in enumerate(NF4_CASES.items()):
        nf4_case(name, shape, 100 + i, out)
    nf4_offsets(out)
    for i, (name, shape) in enumerate(FP8_CASES.items()):
        fp8_case(name, shape, 200 + i, out)
    fp8_codec(out)
    meta = {"bitsandbytes": bnb.__version__, "torch": torch.__version__.split("+")[0],
            "nf4_cases": json.dumps(NF4_CASES), "fp8_cases": json.dumps(FP8_CASES)}
    return out, meta


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/golden/quant")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out, meta = build()
    path = os.path.join(args.out, "quant.safetensors")
    if args.check:
        old = load_file(path)
        bad = [k for k in out if k not in old or not torch.equal(old[k].view(torch.uint8), out[k].view(torch.uint8))]
        print("mismatch:", bad if bad else "none")
        sys.exit(1 if bad else 0)
    os.makedirs(args.out, exist_ok=True)
    save_file(out, path, metadata=meta)
    print(f"wrote {path}: {len(out)} tensors, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
