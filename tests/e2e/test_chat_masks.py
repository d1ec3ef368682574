"""Loss masks of every template of the Jinja parity corpus (test_jinja_parity.py: llama.cpp's
templates from the llama-cpp-python sdist, the SmolLM2 fixture's, anvil's own three), as
training derives them (data/chat_template.h: chat_render, through jinja_render --trained),
against references computed here without anvil's method:
  - a template with {% generation %} blocks: transformers' apply_chat_template(...,
    return_assistant_tokens_mask=True) with a tokenizer of one token per character, so its
    mask is the exact character set that is trained. The corpus has none such, so two
    marked templates of this test's own (ChatML and Llama 3 layouts) stand in besides any
    corpus template that has them;
  - any other template: each assistant turn's content, found in jinja2's rendering of the
    whole conversation, through the end-of-turn markup after it (what follows the content
    both in the whole rendering and in the rendering that ends with this turn), without
    trailing whitespace; for train_on assistant and last_assistant. Where anvil also trains
    what the template writes between its generation prompt and the content (an empty
    <think></think>, a channel header: text the model writes itself at inference), the
    template is counted apart ("equal+lead") with that text shown.
A conversation anvil refuses to mask (a template that renders earlier turns differently
once later ones follow; or one jinja2 raises on) is counted, not compared. Passes when no
template's masks differ. Exit 77 (skip) without transformers or the corpus.

Usage: test_chat_masks.py JINJA_RENDER CORPUS_DIR"""
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import test_jinja_parity as parity  # noqa: E402  (reads the same argv: JINJA_RENDER CORPUS_DIR)

try:
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
except Exception as e:  # noqa: BLE001
    print(f"skipped: transformers / tokenizers not importable ({e})")
    sys.exit(77)

RENDER = sys.argv[1]
GENERATION_BLOCK = re.compile(r"{%-?\s*generation\s*-?%}")
BOS, EOS = "<s>", "</s>"
# anvil renders strftime_now with the clock (training has no fixed date): so does the reference
parity.ENV.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)

MARKED = {
    "marked:chatml": "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' }}{% if m['role'] == 'assistant' %}"
                     "{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}{% else %}"
                     "{{ m['content'] + '<|im_end|>' }}{% endif %}{{ '\n' }}{% endfor %}"
                     "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    "marked:llama3": "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + "
                     "'<|end_header_id|>\n\n' }}{% if m['role'] == 'assistant' %}{% generation %}"
                     "{{ m['content'] | trim + '<|eot_id|>' }}{% endgeneration %}{% else %}"
                     "{{ m['content'] | trim + '<|eot_id|>' }}{% endif %}{% endfor %}"
                     "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
}


def conversations():
    sys_msg = {"role": "system", "content": "You are a helpful assistant."}
    u1 = {"role": "user", "content": "Hello!"}
    a1 = {"role": "assistant", "content": "Hi! How can I help?"}
    u2 = {"role": "user", "content": "naïve café — 東京 🙂 “quoted”\ttab  "}
    a2 = {"role": "assistant", "content": "  Sure:\n\n- one\n- two\n"}
    return [("one answer", [u1, a1]), ("system, two answers", [sys_msg, u1, a1, u2, a2]),
            ("two answers", [u1, a1, u2, a2]), ("unicode", [u2, a2])]


def ours(tpl_path, msgs, train_on, tmp):
    ctx_path = os.path.join(tmp, "ctx.json")
    with open(ctx_path, "w", encoding="utf-8") as f:
        json.dump({"messages": msgs, "bos_token": BOS, "eos_token": EOS}, f, ensure_ascii=False)
    p = subprocess.run([RENDER, tpl_path, ctx_path, "--trained", train_on], capture_output=True, timeout=60)
    if p.returncode != 0:
        return None, p.stderr.decode("utf-8", "replace").strip()
    out = json.loads(p.stdout.decode("utf-8"))
    if "problem" in out:
        return None, out["problem"]
    text = out["text"]
    return text, set().union(*[range(b, e) for b, e in parity.char_ranges(text.encode("utf-8"), out["trained"])])


def render(template, msgs, generation_prompt=False):
    got = parity.reference(template, {"messages": msgs, "add_generation_prompt": generation_prompt, "bos_token": BOS,
                                      "eos_token": EOS, "tools": None, "documents": None})
    return got if isinstance(got, Exception) else got[0]


def expected_by_content(template, msgs, train_on):
    """(text, trained, lead): each assistant content, located in order in the whole rendering,
    through the markup that ends its turn; lead: what the template writes between its
    generation prompt and the content (an empty <think></think>, a channel header), which the
    model writes itself at inference. None when jinja2 raises or a content cannot be found."""
    full = render(template, msgs)
    if isinstance(full, Exception):
        return None
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    trained, lead, cursor = set(), set(), 0
    for i, m in enumerate(msgs):
        content = m["content"]
        at = full.find(content, cursor)
        if at < 0:  # a template that trims the content
            content = content.strip()
            at = full.find(content, cursor)
        if at < 0:
            if m["role"] == "assistant":
                return None
            continue  # e.g. a system message a template leaves out
        cursor = at + len(content)
        if m["role"] != "assistant" or (train_on == "last_assistant" and i != last):
            continue
        ends_here = render(template, msgs[:i + 1])
        if isinstance(ends_here, Exception):
            return None
        tail, other = full[cursor:], ends_here[cursor:]
        k = 0
        while k < min(len(tail), len(other)) and tail[k] == other[k]:
            k += 1
        end = len((full[:cursor] + tail[:k]).rstrip())  # training's rule: no trailing whitespace
        trained.update(range(at, max(at, end)))
        asked = render(template, msgs[:i], True)
        if not isinstance(asked, Exception):
            start = len(asked)
            if not full.startswith(asked):  # a generation prompt the answer does not repeat
                start = 0                   # ("<think>\n"): the lead starts where they part,
                while start < min(len(asked), len(full)) and asked[start] == full[start]:
                    start += 1              # at the last marker, line or word boundary
                while start > 0 and full[start - 1] not in ">]\n ":
                    start -= 1
            if start < at:
                lead.update(range(start, at))
    return full, trained, lead


def char_tokenizer(texts):
    """One token per character (offsets are character positions)."""
    vocab = {"[UNK]": 0}
    for c in sorted(set("".join(texts))):
        vocab.setdefault(c, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def expected_by_transformers(template, msgs):
    full = render(template, msgs)
    if isinstance(full, Exception):
        return None
    tok = char_tokenizer([full])
    out = tok.apply_chat_template(msgs, chat_template=template, tokenize=True, return_dict=True,
                                  return_assistant_tokens_mask=True, bos_token=BOS, eos_token=EOS)
    assert len(out["input_ids"]) == len(full), "one token per character"
    return full, {k for k, on in enumerate(out["assistant_masks"]) if on}, set()


def check(name, template, tmp):
    """('equal' | 'equal+lead' | 'differing' | 'refused', detail, conversations compared)."""
    tpl_path = os.path.join(tmp, "template.jinja")
    with open(tpl_path, "w", encoding="utf-8") as f:
        f.write(template)
    marked = bool(GENERATION_BLOCK.search(template))
    compared, refused, leads = 0, [], set()
    for case, msgs in conversations():
        for train_on in (["assistant"] if marked else ["assistant", "last_assistant"]):
            want = expected_by_transformers(template, msgs) if marked else expected_by_content(template, msgs, train_on)
            text, got = ours(tpl_path, msgs, train_on, tmp)
            if want is None or text is None:
                refused.append(f"{case}, {train_on}: " + (got if text is None else "no reference"))
                continue
            compared += 1
            if text == want[0] and got != want[1] and got == want[1] | want[2]:
                leads.add("".join(text[k] for k in sorted(got - want[1])))
                continue
            if text != want[0] or got != want[1]:
                def spans(chars, s):
                    return [s[k] for k in sorted(chars)]
                return "differing", (f"{case}, {train_on}:\n  text   {text!r}\n  anvil  {''.join(spans(got, text))!r}\n"
                                     f"  wanted {''.join(spans(want[1], want[0]))!r}"), compared
    if compared == 0:
        return "refused", "; ".join(refused)[:600], 0
    detail = "; ".join(refused)[:600] if refused else ""
    if leads:
        return "equal+lead", f"also trained before the content: {sorted(leads)!r}" + (f"\n  {detail}" if detail else ""), compared
    return "equal", detail, compared


def main():
    templates = dict(parity.corpus())
    templates.update(MARKED)
    counts = {"equal": 0, "equal+lead": 0, "differing": 0, "refused": 0}
    marked_equal = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, template in sorted(templates.items()):
            verdict, detail, compared = check(name, template, tmp)
            counts[verdict] += 1
            marked = bool(GENERATION_BLOCK.search(template))
            marked_equal += verdict == "equal" and marked
            print(f"{verdict:9s} {name}{' (generation blocks, vs transformers)' if marked else ''}"
                  f" [{compared} compared]" + (f"\n  {detail}" if detail else ""), flush=True)
    n_marked = sum(bool(GENERATION_BLOCK.search(t)) for t in templates.values())
    print(f"\n{sum(counts.values())} templates: {counts['equal']} equal, {counts['equal+lead']} equal but for "
          f"template text between the generation prompt and the content, {counts['differing']} differing, "
          f"{counts['refused']} with no conversation both sides mask; with generation blocks (vs transformers' "
          f"return_assistant_tokens_mask): {marked_equal} of {n_marked} equal")
    sys.exit(1 if counts["differing"] else 0)


if __name__ == "__main__":
    main()
