"""Runs convert_hf_to_gguf.py's own LlamaModel.set_vocab on tokenizer directories and prints
the tokenizer.* keys its GGUFWriter collects, in order, as ASCII JSON lines {"dir", "key",
"type", "value"}: the reference for test_gguf_tokenizer_converter.py.

    gguf_converter_vocab.py LLAMA_CPP_DIR MODEL_DIR PRE [MODEL_DIR PRE ...]

LLAMA_CPP_DIR holds convert_hf_to_gguf.py's conversion/ and gguf-py/ (imported before any
installed gguf). The model is not loaded: only set_vocab runs, on an object that has what it
reads. PRE stands in for get_vocab_base_pre, which recognises only the released models it
has hashes for."""
import json
import logging
import sys
from pathlib import Path

LLAMA_CPP = sys.argv[1]
sys.path[:0] = [LLAMA_CPP, LLAMA_CPP + "/gguf-py"]
logging.disable(logging.WARNING)

import gguf  # noqa: E402
from conversion.llama import LlamaModel  # noqa: E402



def plain(v):
    if isinstance(v, (bytes, bytearray)):
        return v.decode("utf-8")
    if isinstance(v, list):
        return [plain(x) for x in v]
    if isinstance(v, bool):
        return v
    return int(v) if isinstance(v, int) else v


def set_vocab(model_dir, pre):
    """The writer's key-value pairs after set_vocab on `model_dir`."""
    model = object.__new__(LlamaModel)
    model.dir_model = model_dir
    config = model_dir / "config.json"
    model.hparams = json.load(open(config)) if config.is_file() else {}
    model.origin_hf_arch = model.hparams.get("architectures", ["LlamaForCausalLM"])[0]
    model.is_mistral_format = False
    model.gguf_writer = gguf.GGUFWriter(path=None, arch="llama")
    model.get_vocab_base_pre = lambda tokenizer: pre
    LlamaModel.set_vocab(model)
    return model.gguf_writer.kv_data[0]


for model_dir, pre in zip(sys.argv[2::2], sys.argv[3::2]):
    for key, v in set_vocab(Path(model_dir), pre).items():
        if key.startswith("tokenizer."):
            print(json.dumps({"dir": model_dir, "key": key, "type": int(v.type), "value": plain(v.value)}))
