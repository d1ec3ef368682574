#!/usr/bin/env python3
"""Writes the GGUF fuzzing seeds into OUT_DIR: the valid and malformed files of
scripts/fixtures/gguf_cases.py (standard library only)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "fixtures"))
import gguf_cases  # noqa: E402


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    seeds = dict(gguf_cases.valid_cases())
    seeds.update({name: blob for name, (blob, _) in gguf_cases.malformed_cases().items()})
    for name, blob in seeds.items():
        with open(os.path.join(out, name + ".gguf"), "wb") as f:
            f.write(blob)


if __name__ == "__main__":
    main()
