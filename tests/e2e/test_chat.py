"""Chat in `anvil generate`, `anvil eval` and `anvil tokenize --chat`, on tiny models:
- the prompt ids of --chat are jinja2's rendering of the model's own template with
  add_generation_prompt=True, tokenized by HF `tokenizers` (and transformers'
  apply_chat_template where it imports), with and without --system;
- the template is found in this order: --template / data.chat_template (a name or a .jinja
  file), chat_template.jinja in the model directory, tokenizer_config.json; one that anvil
  cannot render is an error naming its file, in generate and in training's data path;
- generation stops at the template's end-of-turn token (on a model whose weights make it a
  bigram table: after the generation prompt's "\\n" it says "A", then <|eot_id|>), which a
  plain prompt does not stop at;
- eval --chat on {"messages"} records gives what it gives on the equivalent
  {"prompt", "completion"} records with --system; a bad record names file:line, exit 2;
- a LoRA fine-tune on chat records, tried with generate/eval --chat, answers as trained
  and stops at the end of its turn.

Usage: test_chat.py   (ANVIL_BIN, ANVIL_SOURCE_DIR from the environment)"""
import json
import os
import shutil
import subprocess
import tempfile

import jinja2
import numpy as np
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer

ANVIL = os.environ["ANVIL_BIN"]
SRC = os.environ["ANVIL_SOURCE_DIR"]
PROMPTS = ["hi", "What is 2 + 2?", "  spaces around  ", "naïve café 🙂", "<|eot_id|> inside", "tab\there"]
SYSTEM = "Answer in one word."


def anvil(*args, expect=0, stdin=None):
    p = subprocess.run([ANVIL, *args], capture_output=True, text=True, input=stdin, cwd=SRC)
    assert p.returncode == expect, f"anvil {' '.join(args)}: exit {p.returncode}, want {expect}\n{p.stdout}\n{p.stderr}"
    return p.stdout if expect == 0 else p.stderr


def messages_of(prompt, system=None):
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


def hf_prompt_ids(model, template_text, messages, generation_prompt=True):
    """The ids an inference server prompts with: the template rendered by jinja2 with the
    generation prompt (or without), tokenized whole without added special tokens."""
    cfg = json.load(open(os.path.join(model, "tokenizer_config.json"), encoding="utf-8"))
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    text = env.from_string(template_text).render(messages=messages, add_generation_prompt=generation_prompt,
                                                 bos_token=cfg["bos_token"], eos_token=cfg["eos_token"])
    return Tokenizer.from_file(os.path.join(model, "tokenizer.json")).encode(text, add_special_tokens=False).ids


def anvil_chat_ids(model, *args):
    out = anvil("tokenize", model, "--chat", *args, stdin="\n".join(PROMPTS) + "\n")
    return [json.loads(line)["ids"] for line in out.splitlines()]


def check_prompt_ids(model):
    template = json.load(open(os.path.join(model, "tokenizer_config.json"), encoding="utf-8"))["chat_template"]
    for system in (None, SYSTEM):
        got = anvil_chat_ids(model, *(["--system", system] if system else []))
        want = [hf_prompt_ids(model, template, messages_of(p, system)) for p in PROMPTS]
        assert got == want, f"--chat prompt ids differ from jinja2 + tokenizers\n anvil {got}\n hf    {want}"
        assert all(ids.count(want[0][0]) == 1 for ids in got), "one BOS, the template's"
    assert "--add-special" in anvil("tokenize", model, "--chat", "--add-special", stdin="x\n", expect=2)
    # --no-generation-prompt: the turn alone (add_generation_prompt=False), a strict prefix of the prompt
    bare = anvil_chat_ids(model, "--system", SYSTEM, "--no-generation-prompt")
    assert bare == [hf_prompt_ids(model, template, messages_of(p, SYSTEM), False) for p in PROMPTS], bare
    prompted = anvil_chat_ids(model, "--system", SYSTEM, "--generation-prompt")
    assert all(len(b) < len(g) and g[:len(b)] == b for b, g in zip(bare, prompted)), (bare, prompted)
    assert "needs --chat or --records" in anvil("tokenize", model, "--no-generation-prompt", stdin="x\n", expect=2)
    try:
        from transformers import AutoTokenizer
    except ImportError:
        print("transformers not importable: prompt ids checked against jinja2 + tokenizers only")
        return
    tok = AutoTokenizer.from_pretrained(model)
    for p, ids in zip(PROMPTS, anvil_chat_ids(model, "--system", SYSTEM)):
        hf = tok.apply_chat_template(messages_of(p, SYSTEM), add_generation_prompt=True, tokenize=True)
        hf = hf["input_ids"] if isinstance(hf, dict) or hasattr(hf, "keys") else hf
        assert list(hf) == ids, (p, list(hf), ids)


def check_lookup_order(model, tmp):
    """chat_template.jinja before tokenizer_config.json; --template (a name or a file) first."""
    cfg = json.load(open(os.path.join(model, "tokenizer_config.json"), encoding="utf-8"))
    llama3 = cfg["chat_template"]
    mistral = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + "
               "message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
               "{{ message['content'] + eos_token }}{% endif %}{% endfor %}")
    m2 = os.path.join(tmp, "with_jinja")
    shutil.copytree(model, m2)
    with open(os.path.join(m2, "chat_template.jinja"), "w", encoding="utf-8") as f:
        f.write(mistral)
    want_mistral = [hf_prompt_ids(m2, mistral, messages_of(p)) for p in PROMPTS]
    want_llama3 = [hf_prompt_ids(m2, llama3, messages_of(p)) for p in PROMPTS]
    assert want_mistral != want_llama3
    assert anvil_chat_ids(m2) == want_mistral, "chat_template.jinja comes before tokenizer_config.json"
    assert anvil_chat_ids(m2, "--template", "llama3") == want_llama3, "--template NAME comes first"
    own = os.path.join(tmp, "own.jinja")
    with open(own, "w", encoding="utf-8") as f:
        f.write(llama3)
    assert anvil_chat_ids(m2, "--template", own) == want_llama3, "--template FILE comes first"

    # Training reads the same: chat records through tokenize --records and anvil prepare.
    data = os.path.join(tmp, "chat.jsonl")
    with open(data, "w", encoding="utf-8") as f:
        for p in PROMPTS:
            f.write(json.dumps({"messages": messages_of(p) + [{"role": "assistant", "content": "ok"}]}) + "\n")
    records = [json.loads(line)["ids"] for line in anvil("tokenize", m2, "--records", "--file", data).splitlines()]
    # --records renders as training does, never with a generation prompt: the flag changes nothing.
    assert anvil("tokenize", m2, "--records", "--file", data, "--no-generation-prompt") == \
        anvil("tokenize", m2, "--records", "--file", data)
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    tok = Tokenizer.from_file(os.path.join(m2, "tokenizer.json"))
    for p, ids in zip(PROMPTS, records):
        text = env.from_string(mistral).render(messages=messages_of(p) + [{"role": "assistant", "content": "ok"}],
                                               bos_token=cfg["bos_token"], eos_token=cfg["eos_token"])
        assert ids == tok.encode(text, add_special_tokens=False).ids, p
    sets = [f"model.path={m2}", f"data.train={data}", "data.eval=null", "train.eval_every=0",
            f"output_dir={os.path.join(tmp, 'run')}"]
    prepare = ["prepare", os.path.join(SRC, "configs", "demo-cpu.yaml")]
    for s in sets + [f"data.chat_template={own}"]:
        prepare += ["--set", s]
    anvil(*prepare)
    err = anvil(*prepare[:-2], "--set", "data.chat_template=" + os.path.join(tmp, "missing.jinja"), expect=2)
    assert "data.chat_template" in err and "missing.jinja" in err, err
    err = anvil(*prepare[:-2], "--set", "data.chat_template=vicuna", expect=2)
    assert "data.chat_template: expected one of llama3, chatml, mistral or a path to a .jinja file" in err, err

    # A template anvil cannot render (a file include: templates reach no files): the error
    # names the file it came from and the construct, though tokenizer_config.json has one.
    unknown = os.path.join(m2, "chat_template.jinja")
    with open(unknown, "w", encoding="utf-8") as f:
        f.write("{% for m in messages %}{{ m['content'] }}{% endfor %}\n{% include 'other.jinja' %}")
    validate = ["validate", *prepare[1:-2], "--set", f"data.chat_template={unknown}"]
    for args in (["tokenize", m2, "--chat"], ["generate", m2, "--chat", "--prompt", "hi"], prepare[:-2], validate):
        err = anvil(*args, expect=2, stdin="hi\n")
        assert unknown in err and "include" in err, err
    assert "data.chat_template" in err, err


def make_bigram_model(model, out):
    """The tiny model with its layers' outputs zeroed, so that the logits depend on the
    current token alone: "\\n" and <|eot_id|> -> "A", "A" -> <|eot_id|>, anything else -> "B"."""
    shutil.copytree(model, out)
    tok = Tokenizer.from_file(os.path.join(model, "tokenizer.json"))
    nl, a, b = (tok.encode(s, add_special_tokens=False).ids[0] for s in ("\n", "A", "B"))
    eot = tok.token_to_id("<|eot_id|>")
    path = os.path.join(out, "model.safetensors")
    w = load_file(path)
    for name in w:
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            w[name][:] = 0
    emb, head = w["model.embed_tokens.weight"], w["lm_head.weight"]
    emb[:] = 0
    emb[:, 0] = 1
    emb[[nl, eot]] = 0
    emb[[nl, eot], 1] = 1
    emb[a] = 0
    emb[a, 2] = 1
    head[:] = 0
    head[b, 0] = head[a, 1] = head[eot, 2] = 10
    w["model.norm.weight"][:] = 1
    save_file(w, path, metadata={"format": "pt"})
    return out


def check_stop_at_end_of_turn(bigram):
    assert anvil("generate", bigram, "--chat", "--prompt", "hi", "--max-new-tokens", "8") == "A\n"
    assert anvil("generate", bigram, "--chat", "--system", SYSTEM, "--prompt", "hi") == "A\n"
    # Without --chat <|eot_id|> is no stop (it is not EOS): "\n" -> A <eot> A <eot> A <eot>.
    assert anvil("generate", bigram, "--prompt", "hi\n", "--max-new-tokens", "6") == "AAA\n"
    assert anvil("generate", bigram, "--prompt", "hi", "--max-new-tokens", "3") == "BBB\n"


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def shown_answers(out):
    """The greedy answers of eval's shown examples: '  "prompt" -> "answer"  (...)'."""
    dec = json.JSONDecoder()
    answers = []
    for line in out.splitlines():
        if "->" not in line:
            continue
        _, end = dec.raw_decode(line.strip())
        answers.append(dec.raw_decode(line.strip()[end:].lstrip(" ->"))[0])
    return answers


def check_eval(model, bigram, tmp):
    prompts = PROMPTS[:3]
    probe = write_jsonl(os.path.join(tmp, "probe.jsonl"), [{"prompt": p, "completion": "?"} for p in prompts])
    out = anvil("eval", model, "--chat", "--system", SYSTEM, "--data", probe, "--max-new-tokens", "5", "--show", "3")
    answers = shown_answers(out)
    assert len(answers) == 3 and len(set(answers)) > 1, out
    wants = [answers[0], answers[1] + "x", answers[2]]
    pc = write_jsonl(os.path.join(tmp, "pc.jsonl"), [{"prompt": p, "completion": w} for p, w in zip(prompts, wants)])
    chat = write_jsonl(os.path.join(tmp, "chat.jsonl"),
                       [{"messages": messages_of(p, SYSTEM) + [{"role": "assistant", "content": w}]}
                        for p, w in zip(prompts, wants)])
    common = ["--max-new-tokens", "5", "--json"]
    by_pc = json.loads(anvil("eval", model, "--chat", "--system", SYSTEM, "--data", pc, *common))
    by_chat = json.loads(anvil("eval", model, "--chat", "--data", chat, *common))
    assert by_pc == by_chat == {"exact_match": 2 / 3, "correct": 2, "total": 3}, (by_pc, by_chat)
    # Without the system message the model answers otherwise: --system is applied.
    no_system = shown_answers(anvil("eval", model, "--chat", "--data", probe, "--max-new-tokens", "5", "--show", "3"))
    assert len(no_system) == 3 and no_system != answers, (no_system, answers)
    # Multi-turn: the conversation before the last assistant message is the prompt.
    multi = write_jsonl(os.path.join(tmp, "multi.jsonl"), [
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "B"},
                      {"role": "user", "content": "y"}, {"role": "assistant", "content": "A"}]},
        {"prompt": "z", "completion": "A"}, {"prompt": "w", "completion": "B"}])
    assert json.loads(anvil("eval", bigram, "--chat", "--data", multi, "--json")) == \
        {"exact_match": 2 / 3, "correct": 2, "total": 3}

    # Bad records name file:line and exit 2.
    for record, message in [
        ({"messages": [{"role": "user", "content": "x"}]}, "the last message must be the assistant's"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "must end with a user message"),
        ({"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}, "messages[0] needs string fields"),
        ({"messages": []}, "\"messages\" must be a non-empty list"),
        ({"prompt": "x"}, "string fields \"prompt\" and \"completion\", or \"messages\""),
    ]:
        bad = write_jsonl(os.path.join(tmp, "bad.jsonl"), [{"prompt": "a", "completion": "b"}, record])
        err = anvil("eval", bigram, "--chat", "--data", bad, expect=2)
        assert f"{bad}:2: " in err and message in err, (record, err)
    err = anvil("eval", bigram, "--data", chat, expect=2)  # messages records need --chat
    assert f"{chat}:1: expected a JSON object with string fields" in err, err
    assert "need --chat" in anvil("generate", bigram, "--prompt", "x", "--system", "s", expect=2)


def ok_record(i):
    return {"messages": messages_of(f"question {i}") + [{"role": "assistant", "content": "ok"}]}


def check_chat_fine_tune(tmp):
    """Train on chat records (answer "ok" to anything), then try the adapter as a chat model:
    it answers "ok" and stops at <|eot_id|>, which it learned to emit after its answer; eval
    --chat counts held-out messages records right, and the base model's answers wrong."""
    model = os.path.join(tmp, "ft_base")
    anvil("init-model", "--preset", "tiny", "--out", model, "--seed", "1")
    data = write_jsonl(os.path.join(tmp, "ft.jsonl"), [ok_record(i) for i in range(64)])
    run = os.path.join(tmp, "ft_run")
    args = ["train", os.path.join(SRC, "configs", "demo-cpu.yaml")]
    for s in [f"output_dir={run}", f"model.path={model}", f"data.train={data}", "data.eval=null",
              "train.eval_every=0", "train.steps=40", "train.lr=1e-2", "train.warmup_steps=4", "data.seq_len=64"]:
        args += ["--set", s]
    anvil(*args)
    adapter = os.path.join(run, "adapter")
    assert anvil("generate", model, "--adapter", adapter, "--chat", "--prompt", "question 99") == "ok\n"
    # Without the template's stop the fine-tune runs past its end of turn.
    assert anvil("generate", model, "--adapter", adapter, "--prompt", "question 99", "--max-new-tokens", "8") != "ok\n"
    held_out = write_jsonl(os.path.join(tmp, "ft_eval.jsonl"), [ok_record(i) for i in range(100, 104)])
    tuned = json.loads(anvil("eval", model, "--adapter", adapter, "--chat", "--data", held_out, "--json"))
    base = json.loads(anvil("eval", model, "--chat", "--data", held_out, "--max-new-tokens", "4", "--json"))
    assert tuned == {"exact_match": 1.0, "correct": 4, "total": 4} and base["correct"] == 0, (tuned, base)


def main():
    with tempfile.TemporaryDirectory(prefix="anvil_e2e_chat_") as tmp:
        model = os.path.join(tmp, "tiny")
        anvil("init-model", "--preset", "tiny", "--out", model, "--seed", "3", "--dtype", "f32", "--init-std", "0.5")
        check_prompt_ids(model)
        check_lookup_order(model, tmp)
        bigram = make_bigram_model(model, os.path.join(tmp, "bigram"))
        check_stop_at_end_of_turn(bigram)
        check_eval(model, bigram, tmp)
        check_chat_fine_tune(tmp)
    print("chat: prompt ids match jinja2 + tokenizers, template lookup order, stop at end of turn, eval --chat, "
              "a chat fine-tune")


if __name__ == "__main__":
    main()
