#!/usr/bin/env bash
# The training config through the real binary: `anvil validate` and the front half of
# `anvil train`. Every file in bad_configs/ must exit 2 and print each of its
# `# expect:` lines (they name the file, the 1-based line and the key path); its
# `# args:` line, if any, adds arguments. Good configs (and the example configs, pointed
# at a tiny model made here) must pass.
set -u
bin=${ANVIL_BIN:?}
src=${ANVIL_SOURCE_DIR:?}
here=$(cd "$(dirname "$0")" && pwd)
failures=0
fail() { printf 'FAIL: %s\n' "$*"; failures=$((failures + 1)); }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1

# The files the configs name (relative to the launch directory, as in real runs). The
# model is only a config.json: validation reads the shape, not the weights.
mkdir -p tiny-model empty-model
cat > tiny-model/config.json <<'JSON'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
 "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
 "num_key_value_heads": 2, "vocab_size": 256, "max_position_embeddings": 256,
 "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "torch_dtype": "float32"}
JSON
# The backend limit table's cases: head_dim 64 (the CUDA kernels take it) and 96 (they do not).
for model in cuda-model:256 hd96-model:384; do
  mkdir -p "${model%:*}"
  sed "s/\"hidden_size\": 64/\"hidden_size\": ${model#*:}/" tiny-model/config.json > "${model%:*}/config.json"
done
# A small Qwen3-MoE shape (6 routed experts) for the parallel.ep rules.
mkdir -p moe-model
cat > moe-model/config.json <<'JSON'
{"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 64,
 "intermediate_size": 64, "moe_intermediate_size": 32, "num_hidden_layers": 2,
 "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 256,
 "num_experts": 6, "num_experts_per_tok": 2, "max_position_embeddings": 256,
 "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "torch_dtype": "float32"}
JSON
# A small Llama 4 shape (4 routed experts, top 1; head_dim 64, which the CUDA kernels take)
# for its parallel and backend rules.
mkdir -p llama4-model
printf '%s' '{"model_type": "llama4_text", "hidden_size": 64, "intermediate_size": 32, "intermediate_size_mlp": 64,' \
  '"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 256,' \
  '"num_local_experts": 4, "num_experts_per_tok": 1, "max_position_embeddings": 256}' > llama4-model/config.json
echo '{"text": "hello"}' > train.jsonl
cp train.jsonl eval.jsonl
cp "$here"/bad_configs/*.yaml .

# ---- bad configs: exit 2, every expected fragment present
count=0
for path in "$here"/bad_configs/*.yaml; do
  name=$(basename "$path")
  count=$((count + 1))
  read -r -a args <<<"$(sed -n 's/^# args: //p' "$name")"
  out=$("$bin" validate "$name" "${args[@]}" 2>&1)
  rc=$?
  if [ $rc -ne 2 ]; then
    fail "$name: exit $rc, expected 2"$'\n'"$out"
    continue
  fi
  grep -q '^error: ' <<<"$out" || fail "$name: no 'error: ' line"$'\n'"$out"
  expects=0
  while IFS= read -r want; do
    expects=$((expects + 1))
    grep -qF -- "$want" <<<"$out" || fail "$name: missing '$want' in"$'\n'"$out"
  done < <(sed -n 's/^# expect: //p' "$name")
  [ $expects -gt 0 ] || fail "$name: has no '# expect:' line"
done
[ $count -ge 15 ] || fail "only $count bad configs (want at least 15)"

# ---- a good config
cat > good.yaml <<'YAML'
output_dir: out
model:
  path: tiny-model
data:
  train: train.jsonl
  eval: eval.jsonl
train:
  global_batch: 8
  micro_batch: 2
  eval_every: 10
parallel:
  tp: 2
YAML
out=$("$bin" validate good.yaml 2>&1) || fail "good.yaml: exit $?"$'\n'"$out"
grep -q '^config OK: good.yaml' <<<"$out" || fail "good.yaml: no 'config OK'"$'\n'"$out"
grep -q 'world size 2 = tp 2 x dp 1' <<<"$out" || fail "good.yaml: world size"$'\n'"$out"
grep -q 'global batch 8 = micro batch 2 x dp 1 x grad accumulation 4' <<<"$out" || fail "good.yaml: accumulation"$'\n'"$out"
out=$("$bin" validate good.yaml --world-size 8 2>&1) || fail "good.yaml --world-size 8: exit $?"$'\n'"$out"
grep -q 'grad accumulation 1' <<<"$out" || fail "good.yaml --world-size 8: accumulation"$'\n'"$out"

# --set fixes a bad file, and is typed like YAML
"$bin" validate 04_float_type.yaml --set train.lr=1e-4 >/dev/null 2>&1 || fail "--set train.lr=1e-4 must fix 04_float_type.yaml"
"$bin" validate 14_duplicate_target.yaml --set 'lora.targets=[q_proj, v_proj]' >/dev/null 2>&1 ||
  fail "--set lora.targets=[...] must fix 14_duplicate_target.yaml"

# bad overrides are named
check_error() {  # check_error "fragment" args...
  local want=$1
  shift
  local out rc
  out=$("$bin" "$@" 2>&1)
  rc=$?
  [ $rc -eq 2 ] || fail "anvil $*: exit $rc, expected 2"$'\n'"$out"
  grep -qF -- "$want" <<<"$out" || fail "anvil $*: missing '$want' in"$'\n'"$out"
}
check_error "--set train.lrr=1: train.lrr: unknown key (did you mean 'train.lr'?)" validate good.yaml --set train.lrr=1
check_error "--set train.lr=fast: train.lr: expected a number, got 'fast'" validate good.yaml --set train.lr=fast
check_error "--set train.lr: expected KEY=VALUE" validate good.yaml --set train.lr
check_error "error: no-such-config.yaml: cannot read the config file" validate no-such-config.yaml
check_error "--world-size" validate good.yaml --world-size 0

# the resolved config reads back to a valid config
"$bin" validate good.yaml --print 2>&1 | sed '/^config OK/,$d' > resolved.yaml
grep -q '^  lr: 0.0002$' resolved.yaml || fail "resolved config lacks the default lr"$'\n'"$(cat resolved.yaml)"
"$bin" validate resolved.yaml >/dev/null 2>&1 || fail "the printed resolved config does not validate"

# the example configs, pointed at this directory's model (one the CUDA kernels take, for the
# CUDA config) and data
for example in demo-cpu:2:tiny-model demo-email:2:tiny-model llama3-8b-lora:8:cuda-model; do  # name:world size of its launch command:model
  IFS=: read -r name world model <<<"$example"
  out=$("$bin" validate "$src/configs/$name.yaml" --world-size "$world" --set model.path="$model" \
    --set data.train=train.jsonl --set data.eval=eval.jsonl 2>&1) || fail "configs/$name.yaml: exit $?"$'\n'"$out"
done

# anvil train: validates first (for the world size MPI reports: 1 here), prints the
# resolved config, then loads the model (this one has no tokenizer: exit 2 naming it)
check_error "good.yaml:12: parallel.tp: 2 does not divide the world size 1" train good.yaml
out=$("$bin" train good.yaml --set parallel.tp=1 2>&1)
rc=$?
[ $rc -eq 2 ] || fail "train good.yaml: exit $rc, expected 2"
grep -q 'resolved config' <<<"$out" || fail "train: no resolved config"$'\n'"$out"
grep -q '^  global_batch: 8$' <<<"$out" || fail "train: resolved config lacks global_batch"$'\n'"$out"
grep -q "^error: tiny-model: has no tokenizer.json" <<<"$out" || fail "train: model error"$'\n'"$out"
check_error "04_float_type.yaml:8: train.lr: expected a number, got 'fast'" train 04_float_type.yaml
# backend limits are config errors in train too, before the Runtime or any weight (these
# models have none): exit 2 naming the key
check_error "31_cuda_lora_rank.yaml:9: lora.rank: 128 is more than the CUDA backend's LoRA kernels take" \
  train 31_cuda_lora_rank.yaml
check_error "model.path: hd96-model/config.json: head_dim is 96" train 32_cuda_head_dim.yaml
out=$("$bin" validate 31_cuda_lora_rank.yaml --set lora.rank=64 2>&1) || fail "lora.rank 64 on cuda: exit $?"$'\n'"$out"
# Llama 4 with tensor and expert parallelism and a quantized base, on either backend (the CUDA
# path compiled, never run on a GPU).
cat > llama4.yaml <<'YAML'
output_dir: out
model:
  path: llama4-model
  quant: nf4
  quant_skip: [lm_head, embed_tokens, router]
data:
  train: train.jsonl
parallel:
  tp: 2
  ep: 2
  backend: cuda
train:
  global_batch: 8
  micro_batch: 2
YAML
for backend in cpu cuda; do
  out=$("$bin" validate llama4.yaml --world-size 8 --set parallel.backend=$backend 2>&1) ||
    fail "Llama 4 with tp 2, ep 2 and nf4 on $backend: exit $?"$'\n'"$out"
  grep -q 'world size 8 = tp 2 x ep 2 x dp 2' <<<"$out" || fail "Llama 4 on $backend: world size"$'\n'"$out"
done
out=$("$bin" validate llama4.yaml --world-size 8 --set parallel.ep=1 2>&1) ||
  fail "Llama 4 with tp 2 and nf4 on cuda: exit $?"$'\n'"$out"
grep -q 'world size 8 = tp 2 x dp 4' <<<"$out" || fail "Llama 4 with tp 2 on cuda: world size"$'\n'"$out"

[ $failures -eq 0 ] || { echo "$failures failure(s)"; exit 1; }
echo "ok ($count bad configs)"
