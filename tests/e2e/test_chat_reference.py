"""Reference tier: `anvil generate --chat` and `anvil eval --chat` on the real
SmolLM2-135M-Instruct (scripts/fetch_model.sh). Asked "What is the capital of France?" it
answers with Paris and stops at <|im_end|>, well inside its token budget, without printing
it; with torch, the chat prompt's ids are transformers' apply_chat_template ids and the
answer is transformers' greedy answer to them, token for token up to <|im_end|>. eval
--chat counts that answer correct from a prompt/completion record and from the equivalent
messages record. Exit 77 (skipped) when the package registry cannot be reached.

SmolLM2's template adds a default system message when a conversation has none, which
anvil's ChatML rendering does not (data/chat_template.h), so the comparison passes that
message with --system."""
import json
import os
import subprocess
import sys
import tempfile

from real_model import fetch_smollm2

ANVIL = os.environ["ANVIL_BIN"]
SOURCE = os.environ["ANVIL_SOURCE_DIR"]
QUESTION = "What is the capital of France?"
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
BUDGET = 64


def anvil(*args):
    return anvil_stdin(None, *args)


def anvil_stdin(line, *args):
    p = subprocess.run([ANVIL, *args], capture_output=True, text=True, input=None if line is None else line + "\n")
    assert p.returncode == 0, f"anvil {' '.join(args)}: exit {p.returncode}\n{p.stderr}"
    return p.stdout


def transformers_answer(model_dir, messages):
    """(prompt ids, greedy answer, answer ids, <|im_end|> id) from transformers; None without torch."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        print(f"transformers comparison skipped: needs torch and transformers (scripts/setup.sh --reference): {e}")
        return None
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    enc = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                  return_tensors="pt")
    ids = enc["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, attention_mask=enc["attention_mask"], max_new_tokens=BUDGET, do_sample=False)
    new = out[0, ids.shape[1]:].tolist()
    return ids[0].tolist(), tok.decode(new, skip_special_tokens=True), new, tok.convert_tokens_to_ids("<|im_end|>")


def main():
    model_dir, _ = fetch_smollm2(ANVIL, SOURCE)
    answer = anvil("generate", model_dir, "--chat", "--prompt", QUESTION, "--max-new-tokens", str(BUDGET))
    assert answer.endswith("\n") and "Paris" in answer and "<|im_end|>" not in answer, answer
    answer = answer[:-1]
    # It stopped at the end of its turn, not at the budget.
    n_tokens = len(json.loads(anvil_stdin(answer.replace("\n", " "), "tokenize", model_dir))["ids"])
    assert n_tokens < BUDGET - 8, (n_tokens, answer)

    with_system = anvil("generate", model_dir, "--chat", "--system", SYSTEM, "--prompt", QUESTION,
                        "--max-new-tokens", str(BUDGET))[:-1]
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    ref = transformers_answer(model_dir, messages)
    if ref is not None:
        prompt_ids, want, new_ids, im_end = ref
        ours = json.loads(anvil_stdin(QUESTION, "tokenize", model_dir, "--chat", "--system", SYSTEM))["ids"]
        assert ours == prompt_ids, (ours, prompt_ids)
        assert new_ids[-1] == im_end and len(new_ids) < BUDGET, new_ids
        assert with_system == want, (with_system, want)

    with tempfile.TemporaryDirectory(prefix="anvil_chat_ref_") as tmp:
        pc = os.path.join(tmp, "pc.jsonl")
        chat = os.path.join(tmp, "chat.jsonl")
        with open(pc, "w", encoding="utf-8") as f:
            f.write(json.dumps({"prompt": QUESTION, "completion": with_system}) + "\n")
            f.write(json.dumps({"prompt": QUESTION, "completion": "Lyon."}) + "\n")
        with open(chat, "w", encoding="utf-8") as f:
            for want in (with_system, "Lyon."):
                f.write(json.dumps({"messages": messages + [{"role": "assistant", "content": want}]}) + "\n")
        flags = ["--max-new-tokens", str(BUDGET), "--json"]
        by_pc = json.loads(anvil("eval", model_dir, "--chat", "--system", SYSTEM, "--data", pc, *flags))
        by_chat = json.loads(anvil("eval", model_dir, "--chat", "--data", chat, *flags))
        assert by_pc == by_chat == {"exact_match": 0.5, "correct": 1, "total": 2}, (by_pc, by_chat)
    print(f"chat_reference: ok ({answer!r}; with SmolLM2's system message {with_system!r}"
          f"{', as transformers' if ref is not None else ''})")


if __name__ == "__main__":
    main()
