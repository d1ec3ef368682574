#!/usr/bin/env python3
"""Writes the demo fine-tuning task: a letter substitution cipher.

Each record is {"prompt": "<word>=", "completion": "<enciphered word>"}: <word> is a
random string of --length letters from --alphabet, and the cipher is a permutation of the
alphabet with no fixed letter (so copying the prompt is always wrong), chosen by --seed.
A base model cannot know the permutation; a fine-tuned one can be checked exactly.

The random numbers come from SplitMix64 with integer arithmetic (the generator of
src/data/sampler.cpp), not from Python's `random`, whose sampling methods may change
between Python versions: the files are byte-identical on every run and every platform.

    python3 data/make_demo_data.py --out data/demo
"""
import argparse
import json
import os
import sys

MASK64 = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def below(self, bound):
        """Uniform in [0, bound), by rejection of the lowest 2^64 mod bound values."""
        threshold = (1 << 64) % bound
        while True:
            r = self.next()
            if r >= threshold:
                return r % bound

    def shuffle(self, items):
        """Fisher-Yates, the same swaps as sampler_permutation in src/data/sampler.cpp."""
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]


def make_cipher(alphabet, gen):
    """A permutation of the alphabet that moves every letter (rejection sampling)."""
    while True:
        image = list(alphabet)
        gen.shuffle(image)
        if all(a != b for a, b in zip(alphabet, image)):
            return dict(zip(alphabet, image))


def make_words(alphabet, length, count, gen):
    """`count` distinct random words, in the order they are drawn."""
    words, seen = [], set()
    while len(words) < count:
        word = "".join(alphabet[gen.below(len(alphabet))] for _ in range(length))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def write_jsonl(path, words, cipher):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for word in words:
            record = {"prompt": word + "=", "completion": "".join(cipher[c] for c in word)}
            f.write(json.dumps(record) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="directory for train.jsonl and eval.jsonl")
    p.add_argument("--seed", type=int, default=1, help="chooses the cipher and the words")
    p.add_argument("--alphabet", default="abcdefgh", help="the letters of words (distinct, at least 2)")
    p.add_argument("--length", type=int, default=4, help="letters per word")
    p.add_argument("--train", type=int, default=2000, help="training records")
    p.add_argument("--eval", type=int, default=200, help="evaluation records (words not in training)")
    args = p.parse_args()

    alphabet = args.alphabet
    if len(alphabet) < 2 or len(set(alphabet)) != len(alphabet) or not alphabet.isalpha():
        sys.exit(f"--alphabet must be at least 2 distinct letters, not {alphabet!r}")
    if args.length < 1 or args.train < 1 or args.eval < 0 or args.seed < 0:
        sys.exit("--length and --train must be positive, --eval and --seed not negative")
    space = len(alphabet) ** args.length
    if args.train + args.eval > space:
        sys.exit(f"{args.train} + {args.eval} distinct words wanted, but only {space} exist "
                 f"of {args.length} letters from {alphabet!r}")

    gen = SplitMix64(args.seed)
    cipher = make_cipher(alphabet, gen)
    words = make_words(alphabet, args.length, args.train + args.eval, gen)
    os.makedirs(args.out, exist_ok=True)
    write_jsonl(os.path.join(args.out, "train.jsonl"), words[:args.train], cipher)
    write_jsonl(os.path.join(args.out, "eval.jsonl"), words[args.train:], cipher)
    print(f"cipher (seed {args.seed}): {alphabet} -> {''.join(cipher[c] for c in alphabet)}")
    print(f"wrote {args.train} training and {args.eval} evaluation records to {args.out}")


if __name__ == "__main__":
    main()
