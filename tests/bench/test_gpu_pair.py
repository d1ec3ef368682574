#!/usr/bin/env python3
"""Unit test of scripts/bench/gpu_pair.py: the FLOP counts and the pairing arithmetic, on
made-up input lines. It checks arithmetic only; it measures and records nothing."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "..", "..", "scripts", "bench")
sys.path.insert(0, SCRIPTS)
import gpu_pair  # noqa: E402

LLAMA3_8B = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256, "tie_word_embeddings": False}
ATT_SHAPE = {"batch": 4, "seq": 4096, "heads": 16, "kv_heads": 16, "head_dim": 128, "causal": True}
TRAIN_SHAPE = {"model": "llama3-8b", "seq": 4096, "batch": 1, "rank": 16, "checkpointing": True}


def timed(side, bench, shape, ms, flops=None, nbytes=None):
    line = {"side": side, "benchmark": bench, "shape": shape, "median_ms": ms, "min_ms": ms, "max_ms": ms,
            "reps": 5, "device": "Made-up GPU", "config": {"note": side}}
    if flops:
        line["flops"] = flops
    if nbytes:
        line["bytes"] = nbytes
    return line


class FlopCounts(unittest.TestCase):
    def test_attention(self):
        # 4 s^2 d h b, halved when causal.
        self.assertEqual(gpu_pair.attention_fwd_flops(4, 4096, 16, 128, False), 4 * 4096 ** 2 * 128 * 16 * 4)
        self.assertEqual(gpu_pair.attention_fwd_flops(4, 4096, 16, 128, True), 2 * 4096 ** 2 * 128 * 16 * 4)
        # Packed documents: their own squares, not the row's.
        docs = [2048, 1024, 512, 256, 128, 128]
        sq = 2048 ** 2 + 1024 ** 2 + 512 ** 2 + 256 ** 2 + 2 * 128 ** 2
        self.assertEqual(gpu_pair.attention_fwd_flops(4, 4096, 32, 64, True, docs), 2 * sq * 64 * 32 * 4)

    def test_lora_layer(self):
        n, i, o, r = 8192, 4096, 14336, 16
        self.assertEqual(gpu_pair.lora_layer_flops(n, i, o, r, backward=False), 2 * n * i * o + 2 * n * r * (i + o))
        self.assertEqual(gpu_pair.lora_layer_flops(n, i, o, r), 4 * n * i * o + 6 * n * r * (i + o))

    def test_llama3_8b_train_token(self):
        f = gpu_pair.train_flops_per_token(LLAMA3_8B, 4096, 16)
        block = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336  # q, o; k, v; gate, up, down
        self.assertEqual(block, 218_103_808)
        self.assertEqual(f["linear_parameters"], 32 * block + 4096 * 128256)  # 7,504,658,432 with the LM head
        self.assertEqual(f["linear"], 4 * 7_504_658_432)
        self.assertEqual(f["attention"], 12 * 32 * 4096 * 32 * 128)
        self.assertEqual(f["lora"], 6 * 32 * 16 * 81920)  # sum(in + out) over the seven = 81,920
        self.assertEqual(f["total"], 36_712_742_912)


class Pairing(unittest.TestCase):
    def lines(self):
        fwd = gpu_pair.attention_fwd_flops(4, 4096, 16, 128, True)
        lora = {"tokens": 8192, "in": 4096, "out": 4096, "rank": 16, "alpha": 32, "dropout": 0.0}
        fpt = gpu_pair.train_flops_per_token(LLAMA3_8B, 4096, 16)["total"]
        return [
            timed("ours", "attention_fwd", ATT_SHAPE, 2.0, flops=fwd),
            timed("reference", "attention_fwd", ATT_SHAPE, 1.0, flops=fwd),
            timed("ours", "attention_bwd", ATT_SHAPE, 4.0, flops=2.5 * fwd),
            timed("reference", "attention_bwd", ATT_SHAPE, 5.0, flops=2.5 * fwd),
            timed("ours", "lora_layer", lora, 3.0, flops=gpu_pair.lora_layer_flops(8192, 4096, 4096, 16)),
            timed("ours", "ceiling_gemm_bf16", {"m": 8192, "n": 8192, "k": 8192}, 2 * 8192 ** 3 / 500e12 * 1e3,
                  flops=2 * 8192 ** 3),  # 500 TFLOP/s
            timed("ours", "ceiling_gemm_bf16", {"m": 4096, "n": 4096, "k": 4096}, 2 * 4096 ** 3 / 400e12 * 1e3,
                  flops=2 * 4096 ** 3),  # 400: the best (500) is the ceiling
            timed("reference", "ceiling_copy_d2d", {"bytes": 1 << 30}, 1.0, nbytes=2 * (1 << 30)),
            {"side": "ours", "benchmark": "train_step", "shape": TRAIN_SHAPE, "tokens_per_s": 1000.0,
             "median_ms": 4096.0, "flops_per_token": fpt},
            {"side": "reference", "benchmark": "train_step", "shape": TRAIN_SHAPE, "tokens_per_s": 2000.0,
             "median_ms": 2048.0, "flops_per_token": fpt},
            {"side": "ours", "benchmark": "train_step_memory_smi", "shape": TRAIN_SHAPE, "peak_mib": 30000.0},
            {"side": "reference", "benchmark": "train_step_memory_smi", "shape": TRAIN_SHAPE, "peak_mib": 40000.0},
        ]

    def by_name(self):
        records = gpu_pair.pair(self.lines(), "2026-01-01", "made-up")
        for r in records:
            self.assertEqual(set(r), {"benchmark", "device", "date", "command", "ours", "reference", "ratio", "unit",
                                      "config"})
            self.assertEqual(r["device"], "Made-up GPU")
        return {r["benchmark"]: r for r in records}

    def test_attention_ratio_is_reference_ms_over_ours_ms(self):
        r = self.by_name()
        fwd = r["attention_fwd_d128_s4096_b4_causal"]
        flops = gpu_pair.attention_fwd_flops(4, 4096, 16, 128, True)
        self.assertAlmostEqual(fwd["ours"], flops / 2e-3 / 1e12)
        self.assertAlmostEqual(fwd["reference"], flops / 1e-3 / 1e12)
        self.assertAlmostEqual(fwd["ratio"], 0.5)
        self.assertEqual(fwd["unit"], "TFLOP/s")
        self.assertAlmostEqual(r["attention_bwd_d128_s4096_b4_causal"]["ratio"], 1.25)
        both = r["attention_fwd_bwd_d128_s4096_b4_causal"]  # derived: (1 + 5) / (2 + 4)
        self.assertAlmostEqual(both["ratio"], 1.0)
        self.assertAlmostEqual(both["ours"], 3.5 * flops / 6e-3 / 1e12)

    def test_unpaired_and_bandwidth(self):
        r = self.by_name()
        lora = r["lora_layer_4096x4096_r16_n8192"]
        self.assertIsNone(lora["reference"])
        self.assertIsNone(lora["ratio"])
        self.assertAlmostEqual(lora["ours"], gpu_pair.lora_layer_flops(8192, 4096, 4096, 16) / 3e-3 / 1e12)
        copy = r["ceiling_copy_d2d_1024MiB"]
        self.assertIsNone(copy["ours"])
        self.assertAlmostEqual(copy["reference"], 2 * (1 << 30) / 1e-3 / 1e9)
        self.assertEqual(copy["unit"], "GB/s")

    def test_train_step_mfu_and_memory(self):
        r = self.by_name()
        step = r["train_step_llama3-8b_s4096_b1"]
        self.assertEqual((step["ours"], step["reference"], step["ratio"]), (1000.0, 2000.0, 0.5))
        mfu = r["train_step_mfu_llama3-8b_s4096_b1"]
        self.assertAlmostEqual(mfu["ours"], 1000 * 36_712_742_912 / 500e12)  # over the best ceiling
        self.assertAlmostEqual(mfu["reference"], 2000 * 36_712_742_912 / 500e12)
        self.assertAlmostEqual(mfu["ratio"], 0.5)
        mem = r["train_step_memory_smi_llama3-8b_s4096_b1"]
        self.assertAlmostEqual(mem["ratio"], 0.75)

    def test_train_line_from_metrics(self):
        metrics = [{"step": 1, "tokens_per_s": 10.0, "peak_rss_mib": 5.0},
                   {"step": 2, "tokens_per_s": 300.0, "peak_rss_mib": 6.0},
                   {"step": 3, "tokens_per_s": 100.0, "peak_rss_mib": 7.0},
                   {"step": 4, "tokens_per_s": 200.0, "peak_rss_mib": 7.0},
                   {"end": True, "steps": 4}]
        line = gpu_pair.train_line_from_metrics(metrics, LLAMA3_8B, 4096, 1, 16, 1, "llama3-8b", True)
        self.assertEqual(line["tokens_per_s"], 200.0)  # median of steps 2-4; step 1 is warm-up
        self.assertEqual(line["steps"], 3)
        self.assertAlmostEqual(line["median_ms"], 1e3 * 4096 / 200.0)
        self.assertEqual(line["shape"], TRAIN_SHAPE)
        with self.assertRaises(ValueError):
            gpu_pair.train_line_from_metrics(metrics[:1], LLAMA3_8B, 4096, 1, 16, 1, "llama3-8b", True)

    def test_smi_peak(self):
        self.assertEqual(gpu_pair.peak_from_smi("512\n18000\n17999\n"), 18000.0)
        with self.assertRaises(ValueError):
            gpu_pair.peak_from_smi("[N/A]\n")

    def test_command_line_writes_the_schema(self):
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "lines.jsonl")
            with open(src, "w") as f:
                f.write("a log line, not JSON\n")
                for line in self.lines():
                    f.write(json.dumps(line) + "\n")
            out = os.path.join(tmp, "result.json")
            subprocess.run([sys.executable, os.path.join(SCRIPTS, "gpu_pair.py"), "pair", "--lines", src, "--out", out,
                            "--date", "2026-01-01", "--command", "made-up"], check=True, capture_output=True)
            with open(out) as f:
                records = json.load(f)
            self.assertIsInstance(records, list)
            self.assertEqual(len(records), len(self.by_name()))
            self.assertTrue(all(r["command"] == "made-up" for r in records))


if __name__ == "__main__":
    unittest.main()
