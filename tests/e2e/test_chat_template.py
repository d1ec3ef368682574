"""Chat records through `anvil tokenize --records` against the Python side: each
conversation rendered by jinja2 from the template as transformers writes chat templates,
tokenized whole by HF `tokenizers` (the way an inference server tokenizes a chat), must
give identical ids; and the trained flags must be exactly the tokens whose text reaches
into an assistant turn's content or its end-of-turn token (HF offsets), for every
fixture family with a chat template: llama3 (Llama-3 markers), qwen2 and smollm2
(ChatML), and the SentencePiece-style families when the fixtures have them (mistral).
Also: data.train_on all trains every prediction, last_assistant only the last answer, and the template detected from
tokenizer_config.json is the one named.

Usage: test_chat_template.py FIXTURE_DIR   (ANVIL_BIN from the environment)"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import jinja2
from tokenizers import Tokenizer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "fixtures"))
from make_tokenizers import untrimmed  # noqa: E402  ByteLevel's trim_offsets off: where each token's text begins

ANVIL = os.environ["ANVIL_BIN"]
FIXTURES = sys.argv[1]

# The three layouts, written as transformers chat templates.
TEMPLATES = {
    "llama3": "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
              "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
              "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
    "chatml": "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
              "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
    "mistral": "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
               "{{ '[INST] ' + (messages[0]['content'] + '\\n\\n' if loop.index0 == 1 and "
               "messages[0]['role'] == 'system' else '') + message['content'] + ' [/INST]' }}"
               "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}",
}
# What of an assistant turn is not trained: the text in front of its content, and after it.
ASSISTANT_FRAME = {
    "llama3": ("<|start_header_id|>assistant<|end_header_id|>\n\n", ""),
    "chatml": ("<|im_start|>assistant\n", "\n"),
    "mistral": ("", ""),
}
FAMILIES = {"llama3": "llama3", "qwen2": "chatml", "smollm2": "chatml", "mistral": "mistral", "llama2": "mistral"}

CONTENTS = [
    "Hello!", "  padded with spaces  ", "line one\nline two\n\n", "naïve café — 東京 🙂👍🏽 👨‍👩‍👧",
    "def f(x):\n    return x ** 2  # square", "I'M SURE it's 1234567 or 89.5%", "\t tabs\tand  spaces ",
    "ends with newline\n", "mixed <|eot_id|> marker inside", "ok",
]


def conversations(template):
    convs = []
    for i, c in enumerate(CONTENTS):
        answer = CONTENTS[(i + 3) % len(CONTENTS)]
        msgs = []
        if i % 2 == 0:
            msgs.append({"role": "system", "content": "Answer briefly."})
        msgs += [{"role": "user", "content": c}, {"role": "assistant", "content": answer}]
        if i % 3 == 0:
            msgs += [{"role": "user", "content": "and again?"}, {"role": "assistant", "content": c.strip() or "."}]
        convs.append(msgs)
    return convs


def render(template, messages, tok_config):
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    t = env.from_string(TEMPLATES[template])
    return t.render(messages=messages, bos_token=tok_config.get("bos_token") or "",
                    eos_token=tok_config.get("eos_token") or "")


def trained_ranges(template, messages, tok_config):
    """Byte ranges of the assistant turns' content + end token, from prefix renders."""
    ranges = []
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = render(template, messages[:k], tok_config).encode()
        after = render(template, messages[:k + 1], tok_config).encode()
        assert after.startswith(before)
        head, tail = (s.encode() for s in ASSISTANT_FRAME[template])
        turn = after[len(before):]
        assert turn.startswith(head) and turn.endswith(tail), (template, turn)
        ranges.append((len(before) + len(head), len(after) - len(tail)))
    return ranges


def expected(tok, template, messages, tok_config, last_only=False):
    text = render(template, messages, tok_config)
    enc = untrimmed(tok).encode(text, add_special_tokens=False)
    assert enc.ids == tok.encode(text, add_special_tokens=False).ids
    raw = text.encode()
    # Character offsets to byte offsets.
    char_to_byte = [0]
    for ch in text:
        char_to_byte.append(char_to_byte[-1] + len(ch.encode()))
    starts = [char_to_byte[s] for s, _ in enc.offsets]
    ranges = trained_ranges(template, messages, tok_config)
    if last_only:  # data.train_on last_assistant: the last answer's range alone
        ranges = ranges[-1:]
    trained = []
    for i, s in enumerate(starts):
        e = max(starts[i + 1] if i + 1 < len(starts) else len(raw), s + 1)
        trained.append(int(any(b < e and s < end for b, end in ranges)))
    return enc.ids, trained


def anvil_records(model_dir, path, template, *extra):
    p = subprocess.run([ANVIL, "tokenize", model_dir, "--records", "--file", path, "--template", template, *extra],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines()], p.stderr


def check_family(family, template, tmp):
    src = os.path.join(FIXTURES, family)
    tok = Tokenizer.from_file(os.path.join(src, "tokenizer.json"))
    config_path = os.path.join(src, "tokenizer_config.json")
    tok_config = json.load(open(config_path, encoding="utf-8")) if os.path.exists(config_path) else {}
    if template == "mistral" and not tok_config.get("bos_token"):
        return 0
    convs = conversations(template)
    data = os.path.join(tmp, f"{family}.jsonl")
    with open(data, "w", encoding="utf-8") as f:
        for c in convs:
            f.write(json.dumps({"messages": c}, ensure_ascii=False) + "\n")
    got, log = anvil_records(src, data, template)
    assert len(got) == len(convs), f"{family}: {len(got)} samples of {len(convs)}\n{log}"
    for c, g in zip(convs, got):
        ids, trained = expected(tok, template, c, tok_config)
        assert g["ids"] == ids, f"{family}/{template}: ids differ for {c}\n anvil {g['ids']}\n hf    {ids}"
        assert g["trained"] == trained, f"{family}/{template}: trained flags differ for {c}\n anvil {g['trained']}\n want  {trained}"
        assert any(trained), c
    # --show-text: the string that was tokenized, jinja2's rendering byte for byte.
    shown, _ = anvil_records(src, data, template, "--show-text")
    for c, g in zip(convs, shown):
        assert g["text"] == render(template, c, tok_config), f"{family}/{template}: --show-text differs for {c}"
    # train_on all: every token trained.
    got, _ = anvil_records(src, data, template, "--train-on", "all")
    assert all(all(g["trained"]) for g in got), f"{family}: --train-on all left tokens untrained"
    # train_on last_assistant: the flags of the last answer alone.
    got, _ = anvil_records(src, data, template, "--train-on", "last_assistant")
    for c, g in zip(convs, got):
        _, want = expected(tok, template, c, tok_config, last_only=True)
        assert g["trained"] == want, f"{family}/{template}: last_assistant flags differ for {c}"
    return len(convs)


def main():
    checked = []
    with tempfile.TemporaryDirectory(prefix="anvil_chat_") as tmp:
        for family, template in FAMILIES.items():
            if not os.path.isdir(os.path.join(FIXTURES, family)):
                continue
            n = check_family(family, template, tmp)
            if n:
                checked.append(f"{family}/{template}")
        # Detection from tokenizer_config.json: the template given there in Jinja.
        model = os.path.join(tmp, "detect")
        shutil.copytree(os.path.join(FIXTURES, "qwen2"), model)
        cfg_path = os.path.join(model, "tokenizer_config.json")
        cfg = json.load(open(cfg_path, encoding="utf-8"))
        cfg["chat_template"] = TEMPLATES["chatml"]
        json.dump(cfg, open(cfg_path, "w", encoding="utf-8"))
        data = os.path.join(tmp, "qwen2.jsonl")
        detected = subprocess.run([ANVIL, "tokenize", model, "--records", "--file", data], capture_output=True, text=True)
        named, _ = anvil_records(model, data, "chatml")
        assert detected.returncode == 0, detected.stderr
        assert [json.loads(line) for line in detected.stdout.splitlines()] == named
    assert {"llama3/llama3", "qwen2/chatml", "smollm2/chatml"} <= set(checked), checked
    print("chat templates match jinja2 + HF tokenizers:", ", ".join(checked))


if __name__ == "__main__":
    main()
