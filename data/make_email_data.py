#!/usr/bin/env python3
"""Writes the real-model demo's task: customer emails turned into a fixed JSON record.

A small shop wants every incoming email filed as one line of JSON its order system reads:

    {"intent": "refund", "order_id": "A48213", "product": "desk lamp", "quantity": 2,
     "customer": "Maria Lopez"}

Each record is a chat conversation ({"messages": [system, user, assistant]}): the system
turn states the job, the user turn is the email, the assistant turn the JSON record. The
emails are written from phrase lists with random names, products, order numbers and
quantities (as digits or words); the intent (one of five) is said in several ways. An
instruct model answers with something JSON-like but not this record: the key names, the
intent labels, the quantity as a number and the exact spelling have to be learnt.
The evaluation records use emails not in the training set.

Random numbers come from SplitMix64 in integer arithmetic (make_demo_data.py), so the
files are the same bytes on every run and platform.

    python3 data/make_email_data.py --out data/email
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_demo_data import SplitMix64  # noqa: E402

SYSTEM = "File this customer email as a JSON order record."

PRODUCTS = [
    "standing desk", "desk lamp", "office chair", "monitor arm", "filing cabinet", "bookshelf",
    "coffee table", "floor lamp", "bar stool", "shoe rack", "wall clock", "laptop stand",
    "storage box", "coat rack", "bedside table", "wall mirror", "wool rug", "curtain rod",
    "plant pot", "footrest", "whiteboard", "side table", "desk drawer", "reading chair",
]
FIRST = ["Maria", "James", "Aisha", "Tom", "Yuki", "Lars", "Priya", "Carlos", "Emma", "Omar",
         "Sofia", "Noah", "Chen", "Fatima", "Lukas", "Grace", "Mateo", "Ingrid", "Ravi", "Nora"]
LAST = ["Lopez", "Smith", "Khan", "Becker", "Tanaka", "Nilsen", "Patel", "Silva", "Brown", "Haddad",
        "Rossi", "Walsh", "Wang", "Osei", "Novak", "Kim", "Garcia", "Berg", "Iyer", "Dubois"]
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}

# What the customer wants, said several ways; {n} is the quantity, {p} the product (plural
# when the quantity is not one), {o} the order reference; the other fields agree with {n}.
INTENTS = {
    "refund": [
        "I would like a refund for the {n} {p} from order {o}.",
        "Please give me my money back for {n} {p} (order {o}).",
        "I returned {n} {p} last week, order {o}. When will I be refunded?",
        "Could you refund order {o}? It was {n} {p} and {they} {are} not what I expected.",
    ],
    "cancel": [
        "Please cancel order {o} for {n} {p} before it ships.",
        "I ordered {n} {p} by mistake, order {o}. Can you cancel it?",
        "I no longer need the {n} {p} in order {o}, please cancel.",
        "Cancel my order {o} ({n} {p}), I found {them} elsewhere.",
    ],
    "status": [
        "Where is my order {o}? I am still waiting for {n} {p}.",
        "Order {o} with {n} {p} has not arrived yet. Can you check where it is?",
        "Could you tell me when the {n} {p} from order {o} will be delivered?",
        "It has been two weeks and my {n} {p} (order {o}) {are} not here.",
    ],
    "damaged": [
        "The {n} {p} from order {o} arrived broken.",
        "Order {o} came today but the {n} {p} {are} damaged.",
        "I opened order {o} and found {n} {p} with cracks and scratches.",
        "Unfortunately the {n} {p} in order {o} {were} damaged in transit.",
    ],
    "exchange": [
        "Can I exchange the {n} {p} from order {o} for a different colour?",
        "I would like to swap the {n} {p} in order {o} for a bigger size.",
        "The {n} {p} from order {o} {do} not fit, can I exchange {them}?",
        "Please exchange order {o}: {n} {p}, I need {them} in black instead.",
    ],
}
GREETINGS = ["Hello,", "Hi there,", "Dear support team,", "Good morning,", "Hi,", "To whom it may concern,"]
FILLERS = ["", "", "Thanks for your help.", "I have been a customer for years.", "Please get back to me soon.",
           "This is the second time I am writing.", "Have a nice day.", "I hope this is easy to sort out."]
SIGNOFFS = ["Best,", "Regards,", "Thanks,", "Kind regards,", "Cheers,", "Sincerely,"]
REFERENCES = ["{id}", "#{id}", "no. {id}"]


def pick(gen, items):
    return items[gen.below(len(items))]


def plural(product, n):
    if n == 1:
        return product
    if product.endswith(("sh", "ch", "x", "s")):
        return product + "es"
    return product + "s"


def make_record(gen):
    intent = pick(gen, sorted(INTENTS))
    product = pick(gen, PRODUCTS)
    quantity = 1 + gen.below(5)
    order_id = "A" + str(10000 + gen.below(90000))
    customer = pick(gen, FIRST) + " " + pick(gen, LAST)
    said_n = NUMBER_WORDS[quantity] if gen.below(2) else str(quantity)
    one = quantity == 1
    sentence = pick(gen, INTENTS[intent]).format(
        n=said_n, p=plural(product, quantity), o=pick(gen, REFERENCES).format(id=order_id),
        they="it" if one else "they", them="it" if one else "them", are="is" if one else "are",
        were="was" if one else "were", do="does" if one else "do")
    body = " ".join(s for s in (sentence, pick(gen, FILLERS)) if s)
    email = f"{pick(gen, GREETINGS)}\n{body}\n{pick(gen, SIGNOFFS)}\n{customer}"
    answer = json.dumps({"intent": intent, "order_id": order_id, "product": product,
                         "quantity": quantity, "customer": customer})
    return {"messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": email},
                         {"role": "assistant", "content": answer}]}


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="directory for train.jsonl and eval.jsonl")
    p.add_argument("--seed", type=int, default=1, help="chooses every email")
    p.add_argument("--train", type=int, default=2000, help="training records")
    p.add_argument("--eval", type=int, default=40, help="evaluation records (emails not in training)")
    args = p.parse_args()
    if args.train < 1 or args.eval < 0 or args.seed < 0:
        sys.exit("--train must be positive, --eval and --seed not negative")

    gen = SplitMix64(args.seed)
    records, seen = [], set()
    while len(records) < args.train + args.eval:
        r = make_record(gen)
        email = r["messages"][1]["content"]
        if email not in seen:  # held-out emails are never training emails
            seen.add(email)
            records.append(r)
    os.makedirs(args.out, exist_ok=True)
    write_jsonl(os.path.join(args.out, "train.jsonl"), records[:args.train])
    write_jsonl(os.path.join(args.out, "eval.jsonl"), records[args.train:])
    print(f"wrote {args.train} training and {args.eval} evaluation records to {args.out}")


if __name__ == "__main__":
    main()
