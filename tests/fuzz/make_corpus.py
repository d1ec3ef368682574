#!/usr/bin/env python3
"""Writes a corpus of safetensors inputs into OUT_DIR:
  valid_*.safetensors   well-formed files,
  bad_*.safetensors     malformed files, at least one per validation rule of the reader
                        (src/io/safetensors.cpp), plus truncations of a valid file;
and with --dirs also model directories:
  validdir_*/           a sharded model (index + two shards),
  baddir_*/             directories whose index and shards disagree.
The files are the fuzzer's seeds; tests/e2e/test_safetensors_corpus.sh checks that
`anvil inspect` rejects every bad input with exit code 2 and a message naming it.
tests/unit/test_safetensors.cpp holds the same cases in memory for the ASan build.
Standard library only, so it runs with any python3."""
import argparse
import json
import os
import struct


def raw(header, data=b"", length=None):
    """8-byte little-endian header length, header bytes, data. `length` overrides the length."""
    text = header if isinstance(header, bytes) else header.encode()
    n = len(text) if length is None else length
    return struct.pack("<Q", n) + text + data


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def build(tensors, metadata=None):
    """A well-formed file from {name: (dtype, shape, bytes)}, data in the given order."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dtype, shape, blob) in tensors.items():
        header[name] = entry(dtype, shape, len(data), len(data) + len(blob))
        data += blob
    text = json.dumps(header, sort_keys=True)
    text += " " * ((8 - len(text) % 8) % 8)
    return raw(text, data)


def valid_files():
    yield "small", build({"a": ("F32", [2, 2], bytes(range(16))), "b": ("BF16", [3], bytes(range(16, 22))),
                          "c": ("BOOL", [2], b"\0\1")}, {"format": "pt"})
    yield "every_dtype", build({f"t_{d}": (d, [2], bytes(2 * s)) for d, s in
                                [("F64", 8), ("F32", 4), ("F16", 2), ("BF16", 2), ("I64", 8), ("I32", 4),
                                 ("I16", 2), ("I8", 1), ("U8", 1), ("BOOL", 1)]})
    yield "empty_and_scalar", build({"e": ("F32", [0, 3], b""), "s": ("F64", [], bytes(8))})
    yield "no_tensors", build({})


def bad_files():
    def one(dtype, shape, b, e, data_bytes):
        return raw(json.dumps({"a": entry(dtype, shape, b, e)}), b"\0" * data_bytes)

    def two(a, b, data_bytes):
        return raw(json.dumps({"a": entry(*a), "b": entry(*b)}), b"\0" * data_bytes)

    yield "empty", b""
    yield "too_short", b"\x01\x02\x03"
    yield "header_over_limit", raw("{}", length=100_000_001)
    yield "header_length_huge", raw("{}", length=2**64 - 1)
    yield "header_past_eof", raw("{}", length=4096)
    yield "invalid_json", raw('{"a": ')
    yield "json_trailing_garbage", raw("{} {}")
    yield "invalid_utf8", raw(b'{"\xff\xfe": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}', b"\0")
    yield "not_an_object", raw("[1, 2, 3]")
    yield "duplicate_name", raw('{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, '
                                '"a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}', b"\0\0")
    yield "duplicate_field", raw('{"a": {"dtype": "U8", "dtype": "I8", "shape": [1], "data_offsets": [0, 1]}}',
                                 b"\0")
    yield "nested_too_deep", raw("[" * 10000 + "]" * 10000)
    yield "entry_not_object", raw('{"a": [1]}')
    yield "missing_dtype", raw('{"a": {"shape": [1], "data_offsets": [0, 1]}}', b"\0")
    yield "unknown_field", raw('{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1], "x": 1}}', b"\0")
    yield "unknown_dtype", one("F7", [1], 0, 1, 1)
    yield "negative_dim", one("U8", [-1], 0, 1, 1)
    yield "float_dim", one("U8", [1.5], 0, 1, 1)
    yield "shape_not_list", one("U8", 3, 0, 3, 3)
    yield "too_many_dims", one("U8", [1] * 9, 0, 1, 1)
    yield "numel_overflow", one("F64", [2**32, 2**32, 16], 0, 8, 8)
    yield "bytes_overflow", one("F32", [2**62], 0, 8, 8)
    yield "length_mismatch", one("F32", [2], 0, 4, 4)
    yield "reversed_offsets", one("U8", [0], 4, 0, 4)
    yield "offsets_one_value", raw('{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0]}}', b"\0")
    yield "negative_offset", raw('{"a": {"dtype": "U8", "shape": [1], "data_offsets": [-1, 0]}}', b"\0")
    yield "overlap", two(("U8", [4], 0, 4), ("U8", [2], 2, 4), 4)
    yield "same_offsets", two(("U8", [4], 0, 4), ("U8", [4], 0, 4), 8)
    yield "empty_inside_other", two(("U8", [4], 0, 4), ("U8", [0], 2, 2), 4)
    yield "gap", two(("U8", [2], 0, 2), ("U8", [2], 4, 6), 6)
    yield "gap_at_start", one("U8", [2], 2, 4, 4)
    yield "data_past_eof", one("U8", [8], 0, 8, 5)
    yield "offsets_huge", one("U8", [0], 2**64 - 1, 2**64 - 1, 0)
    yield "trailing_bytes", one("U8", [2], 0, 2, 5)
    yield "metadata_not_string", raw('{"__metadata__": {"format": 1}}')
    yield "metadata_not_object", raw('{"__metadata__": [1]}')
    yield "metadata_nested", raw('{"__metadata__": {"a": {"b": "c"}}}')
    good = dict(valid_files())["small"]
    for cut in (4, 8, 20, len(good) - 30, len(good) - 1):
        yield f"truncated_{cut}", good[:cut]


def shard(*names):
    return build({n: ("F32", [2], struct.pack("<2f", i, -i)) for i, n in enumerate(names)}, {"format": "pt"})


def index(weight_map):
    return json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map})


def model_dirs():
    """(name, {file: bytes or str}) for valid and malformed model directories."""
    s1, s2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    yield "validdir_sharded", {s1: shard("a", "b"), s2: shard("c"),
                               "model.safetensors.index.json": index({"a": s1, "b": s1, "c": s2})}
    yield "baddir_wrong_shard", {s1: shard("a", "b"), s2: shard("c"),
                                 "model.safetensors.index.json": index({"a": s2, "b": s1, "c": s2})}
    yield "baddir_in_two_shards", {s1: shard("a", "b"), s2: shard("a", "c"),
                                   "model.safetensors.index.json": index({"a": s1, "b": s1, "c": s2})}
    yield "baddir_unlisted_tensor", {s1: shard("a", "b"), "model.safetensors.index.json": index({"a": s1})}
    yield "baddir_missing_shard", {s1: shard("a"), "model.safetensors.index.json": index({"a": s1, "b": s2})}
    yield "baddir_index_not_json", {s1: shard("a"), "model.safetensors.index.json": '{"weight_map": '}
    yield "baddir_index_duplicate", {s1: shard("a"), "model.safetensors.index.json":
                                     '{"weight_map": {"a": "%s", "a": "%s"}}' % (s1, s1)}
    yield "baddir_shard_path", {s1: shard("a"), "model.safetensors.index.json": index({"a": "../" + s1})}
    yield "baddir_bad_shard", {s1: raw("[]"), "model.safetensors.index.json": index({"a": s1})}
    yield "baddir_no_weights", {"config.json": "{}"}


def write(path, data):
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--dirs", action="store_true", help="also write model directories")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    counts = {"valid": 0, "bad": 0, "dirs": 0}
    for name, data in valid_files():
        write(os.path.join(args.out_dir, f"valid_{name}.safetensors"), data)
        counts["valid"] += 1
    for name, data in bad_files():
        write(os.path.join(args.out_dir, f"bad_{name}.safetensors"), data)
        counts["bad"] += 1
    if args.dirs:
        for name, files in model_dirs():
            os.makedirs(os.path.join(args.out_dir, name), exist_ok=True)
            for file, data in files.items():
                write(os.path.join(args.out_dir, name, file), data)
            counts["dirs"] += 1
    print(f"wrote {counts['valid']} valid and {counts['bad']} malformed files and {counts['dirs']} model "
          f"directories to {args.out_dir}")


if __name__ == "__main__":
    main()
