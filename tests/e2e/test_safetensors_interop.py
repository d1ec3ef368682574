"""safetensors interop with the Python reference implementation (PyPI `safetensors`):
files anvil writes load there with equal values, and files it writes (single files, bf16
written by hand, sharded model directories) load in anvil with equal values.
Usage: test_safetensors_interop.py SAFETENSORS_TOOL (with $ANVIL_BIN set)."""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

TOOL = sys.argv[1]
ANVIL = os.environ["ANVIL_BIN"]

NUMPY = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
         "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
SHORT = {"F64": "f64", "F32": "f32", "F16": "f16", "BF16": "bf16", "I64": "i64", "I32": "i32",
         "I16": "i16", "I8": "i8", "U8": "u8", "BOOL": "bool"}


def expected_values(dtype, n):  # mirrors value_at() in safetensors_tool.cpp
    i = np.arange(n)
    if dtype == "BOOL":
        return (i % 2).astype(np.float64)
    if dtype == "U8":
        return ((i * 7) % 251).astype(np.float64)
    v = ((i * 37) % 201) - 100.0
    return v * 0.25 if dtype in ("F64", "F32", "F16", "BF16") else v


def check_anvil_to_python(tmp):
    subprocess.run([TOOL, "write", tmp], check=True)
    tensors = load_file(os.path.join(tmp, "all.safetensors"))
    with safe_open(os.path.join(tmp, "all.safetensors"), framework="np") as f:
        assert f.metadata() == {"format": "pt"}, f.metadata()
    assert len(tensors) == len(NUMPY), sorted(tensors)
    for dtype, np_type in NUMPY.items():
        name = "t_" + SHORT[dtype]
        t = tensors[name]
        assert t.dtype == np_type, (name, t.dtype)
        assert t.ndim == 2 and t.shape[0] == 3, (name, t.shape)
        np.testing.assert_array_equal(t.reshape(-1).astype(np.float64), expected_values(dtype, t.size), err_msg=name)
    # bf16: numpy has no such dtype; read the raw bytes as the upper halves of float32.
    with open(os.path.join(tmp, "bf16.safetensors"), "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    assert header["__metadata__"] == {"format": "pt"}, header
    assert (8 + n) % 8 == 0, "data must start 8-byte aligned"
    info = header["t_bf16"]
    b, e = info["data_offsets"]
    raw = np.frombuffer(blob[8 + n + b:8 + n + e], dtype=np.uint16)
    values = (raw.astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(values.astype(np.float64), expected_values("BF16", values.size))
    print(f"anvil -> python: {len(tensors) + 1} dtypes equal")


def dump(path):
    """anvil's view of a file or model dir: {name: record} from `safetensors_tool dump`."""
    out = subprocess.run([TOOL, "dump", path], check=True, capture_output=True, text=True).stdout
    return {rec["name"]: rec for rec in map(json.loads, out.splitlines())}


def assert_same(seen, arrays):
    assert set(seen) == set(arrays), (sorted(seen), sorted(arrays))
    for name, a in arrays.items():
        rec = seen[name]
        assert tuple(rec["shape"]) == a.shape, (name, rec["shape"], a.shape)
        got = np.array(rec["values"], dtype=np.float64)
        want = a.reshape(-1).astype(np.float64)  # int64 extremes round the same way on both sides
        np.testing.assert_array_equal(got, want, err_msg=name)


def random_arrays(rng, prefix):
    arrays = {}
    for dtype, np_type in NUMPY.items():
        shape = (int(rng.integers(1, 5)), int(rng.integers(1, 6)))
        if np_type == np.bool_:
            a = rng.integers(0, 2, size=shape).astype(np.bool_)
        elif np.issubdtype(np_type, np.integer):
            info = np.iinfo(np_type)
            a = rng.integers(info.min, info.max, size=shape, dtype=np_type, endpoint=True)
        else:
            a = rng.standard_normal(shape).astype(np_type)
        arrays[prefix + SHORT[dtype]] = a
    return arrays


def check_python_to_anvil(tmp):
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"python -> anvil: seed {seed}")
    rng = np.random.default_rng(seed)
    arrays = random_arrays(rng, "py_")
    arrays["py_scalar"] = np.array(3.5, dtype=np.float32)
    arrays["py_empty"] = np.zeros((0, 4), dtype=np.float32)
    path = os.path.join(tmp, "python.safetensors")
    save_file(arrays, path, metadata={"source": "python"})
    assert_same(dump(path), arrays)
    listing = subprocess.run([ANVIL, "inspect", path], check=True, capture_output=True, text=True).stdout
    assert f"{len(arrays)} tensors in 1 file" in listing, listing
    print(f"python -> anvil: {len(arrays)} tensors equal")


def check_bf16_to_anvil(tmp):
    """numpy has no bf16, so the file is written by hand: float32 values that bf16 holds
    exactly (low 16 bits cleared), stored as their upper halves."""
    rng = np.random.default_rng(7)
    values = (rng.standard_normal(24).astype(np.float32).view(np.uint32) & 0xFFFF0000).view(np.float32)
    values[:4] = [0.0, -0.0, np.inf, -np.inf]
    blob = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = json.dumps({"w": {"dtype": "BF16", "shape": [4, 6], "data_offsets": [0, len(blob)]}}).encode()
    path = os.path.join(tmp, "bf16_by_hand.safetensors")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + blob)
    assert_same(dump(path), {"w": values.reshape(4, 6)})
    print("python (bf16 by hand) -> anvil: equal")


def check_python_sharded_dir(tmp):
    """A model dir as transformers writes it: shards plus model.safetensors.index.json."""
    rng = np.random.default_rng(11)
    arrays = random_arrays(rng, "model.layers.0.")
    names = sorted(arrays)
    shards = {"model-00001-of-00002.safetensors": names[:4], "model-00002-of-00002.safetensors": names[4:]}
    model = os.path.join(tmp, "model")
    os.makedirs(model)
    weight_map = {}
    for shard, members in shards.items():
        save_file({n: arrays[n] for n in members}, os.path.join(model, shard), metadata={"format": "pt"})
        weight_map.update({n: shard for n in members})
    with open(os.path.join(model, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": sum(a.nbytes for a in arrays.values())}, "weight_map": weight_map}, f)
    assert_same(dump(model), arrays)
    listing = subprocess.run([ANVIL, "inspect", model], check=True, capture_output=True, text=True).stdout
    assert f"{len(arrays)} tensors in 2 shards" in listing, listing
    print(f"python sharded dir -> anvil: {len(arrays)} tensors equal")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        check_anvil_to_python(tmp)
        check_python_to_anvil(tmp)
        check_bf16_to_anvil(tmp)
        check_python_sharded_dir(tmp)
    print("ok")


if __name__ == "__main__":
    main()
