#!/usr/bin/env python3
"""The real-model demo's data (data/make_email_data.py): the same bytes for the same seed,
held-out emails that are not training emails, and answers that the email determines (every
field of the JSON record can be read from the email, so exact match is a fair measure)."""
import json
import os
import re
import subprocess
import sys
import tempfile

SRC = os.environ.get("ANVIL_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
GEN = os.path.join(SRC, "data", "make_email_data.py")
sys.path.insert(0, os.path.join(SRC, "data"))
import make_email_data as med  # noqa: E402

KEYS = ["intent", "order_id", "product", "quantity", "customer"]


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def generate(out, *extra):
    subprocess.run([sys.executable, GEN, "--out", out, *extra], check=True, stdout=subprocess.DEVNULL)
    return [open(os.path.join(out, f), "rb").read() for f in ("train.jsonl", "eval.jsonl")]


def check_record(line, where):
    r = json.loads(line)
    roles = [m["role"] for m in r["messages"]]
    if roles != ["system", "user", "assistant"]:
        fail(f"{where}: roles {roles}")
    system, email, answer = (m["content"] for m in r["messages"])
    if system != med.SYSTEM:
        fail(f"{where}: system turn {system!r}")
    rec = json.loads(answer)
    if list(rec) != KEYS:
        fail(f"{where}: keys {list(rec)}")
    if answer != json.dumps(rec):
        fail(f"{where}: the answer is not in json.dumps' one spelling: {answer!r}")
    if rec["intent"] not in med.INTENTS:
        fail(f"{where}: intent {rec['intent']!r}")
    if not re.fullmatch(r"A\d{5}", rec["order_id"]) or rec["order_id"] not in email:
        fail(f"{where}: order id {rec['order_id']!r} not read from the email")
    if rec["product"] not in med.PRODUCTS or rec["product"] not in email:
        fail(f"{where}: product {rec['product']!r}")
    q = rec["quantity"]
    if not (isinstance(q, int) and 1 <= q <= 5):
        fail(f"{where}: quantity {q!r}")
    said = re.search(r"\b(%d|%s) %s" % (q, med.NUMBER_WORDS[q], re.escape(rec["product"])), email)
    if not said:
        fail(f"{where}: quantity {q} not said before the product in {email!r}")
    if not email.endswith("\n" + rec["customer"]):
        fail(f"{where}: customer {rec['customer']!r} does not sign the email")
    # the intent is said by one of its own phrasings (each starts with fixed words)
    phrased = {i for i, forms in med.INTENTS.items()
               for f in forms if re.search(re.escape(f.split("{")[0].strip()) or "^$", email)}
    if rec["intent"] not in phrased:
        fail(f"{where}: intent {rec['intent']} not phrased in {email!r}")
    return email, rec


def main():
    with tempfile.TemporaryDirectory() as tmp:
        a = generate(os.path.join(tmp, "a"))
        b = generate(os.path.join(tmp, "b"))
        if a != b:
            fail("two runs with the same seed wrote different bytes")
        c = generate(os.path.join(tmp, "c"), "--seed", "2")
        if c[0] == a[0]:
            fail("another seed wrote the same training file")
        train = a[0].decode().splitlines()
        held = a[1].decode().splitlines()
        if (len(train), len(held)) != (2000, 40):
            fail(f"record counts {len(train)}, {len(held)}")
        train_emails, intents = set(), {}
        for n, line in enumerate(train, 1):
            email, rec = check_record(line, f"train.jsonl:{n}")
            train_emails.add(email)
            intents[rec["intent"]] = intents.get(rec["intent"], 0) + 1
        for n, line in enumerate(held, 1):
            email, _ = check_record(line, f"eval.jsonl:{n}")
            if email in train_emails:
                fail(f"eval.jsonl:{n}: the email is also a training email")
        if len(train_emails) != len(train):
            fail("training emails repeat")
        if sorted(intents) != sorted(med.INTENTS) or min(intents.values()) < 300:
            fail(f"intents unbalanced: {intents}")
        bad = subprocess.run([sys.executable, GEN, "--out", os.path.join(tmp, "d"), "--train", "0"],
                             capture_output=True, text=True)
        if bad.returncode == 0 or "--train" not in bad.stderr:
            fail(f"--train 0 accepted: {bad.returncode} {bad.stderr!r}")
    print(f"ok: 2000 + 40 records, intents {intents}")


if __name__ == "__main__":
    main()
