#!/usr/bin/env bash
# scripts/bundle.sh on the anvil of this build tree: the bundle runs with LD_LIBRARY_PATH
# cleared (--version, and validate of a shipped config), from its lib/ and not the build
# machine's, after being moved and through a symlink; it holds no glibc, no NVIDIA driver
# and (without --with-mpi) no MPI; MANIFEST lists what it holds and what it left out.
set -u
bin=${ANVIL_BIN:?}
src=${ANVIL_SOURCE_DIR:?}
build=${bin%/src/cli/anvil}
failures=0
fail() { printf 'FAIL: %s\n' "$*"; failures=$((failures + 1)); }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1

out=$work/bundle
if ! "$src/scripts/bundle.sh" "$build" "$out" >bundle.log 2>&1; then
  cat bundle.log
  echo "FAIL: bundle.sh exited non-zero"
  exit 1
fi

# ---- layout and what must not be there
for f in anvil bin/anvil MANIFEST configs/demo-cpu.yaml; do
  [ -e "$out/$f" ] || fail "bundle lacks $f"
done
[ -x "$out/anvil" ] || fail "the wrapper is not executable"
for pattern in 'libc.so*' 'ld-linux*' 'libm.so*' 'libdl.so*' 'libpthread.so*' 'librt.so*' \
               'libcuda.so*' 'libnvidia-*' 'libmpi.so*' 'libopen-pal*'; do
  found=$(cd "$out/lib" && ls -d $pattern 2>/dev/null)
  [ -z "$found" ] || fail "bundled what the node must provide: $found"
done
[ -e "$out/lib/libstdc++.so.6" ] || fail "libstdc++ not bundled"
# A CUDA build opens cuBLAS/cuBLASLt with dlopen: they must be in the bundle all the same.
if compgen -G "$out/lib/libcudart.so.*" >/dev/null; then
  compgen -G "$out/lib/libcublasLt.so.*" >/dev/null && compgen -G "$out/lib/libcublas.so.*" >/dev/null ||
    fail "a CUDA build's bundle lacks cuBLAS/cuBLASLt (opened with dlopen)"
fi
grep -q 'libc.so.6 (glibc)' "$out/MANIFEST" || fail "MANIFEST does not list glibc as left out"
grep -q '^source: ' "$out/MANIFEST" || fail "MANIFEST has no source version"

# Every library the binary needs resolves inside the bundle, or is one the node provides.
LD_LIBRARY_PATH=$out/lib ldd "$out/bin/anvil" | awk '$2 == "=>" {print $1, $3}' |
  while read -r name path; do
    case "$name" in
      libc.so*|libm.so*|libresolv.so*|libdl.so*|libpthread.so*|librt.so*|libmpi*|libopen-*|\
      libhwloc*|libevent*|libpmix*|libudev*|libcuda.so*) continue ;;
    esac
    case "$path" in "$out"/lib/*) ;; *) echo "$name resolves outside the bundle: $path" ;; esac
  done > outside.txt
[ -s outside.txt ] && fail "$(cat outside.txt)"

# ---- it runs without the build machine's library path, after a move, through a symlink
expected=$("$bin" --version)
got=$(env -u LD_LIBRARY_PATH "$out/anvil" --version 2>&1) || fail "anvil --version failed: $got"
[ "$got" = "$expected" ] || fail "--version: got '$got', expected '$expected'"

mv "$out" "$work/moved"
out=$work/moved
mkdir -p on-path
ln -s "$out/anvil" on-path/anvil
got=$(env -u LD_LIBRARY_PATH on-path/anvil --version 2>&1) || fail "moved, via a symlink: $got"
[ "$got" = "$expected" ] || fail "moved --version: got '$got'"

# validate reads the shape only: a config.json is model enough (as in test_config.sh).
mkdir -p tiny-model
cat > tiny-model/config.json <<'JSON'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
 "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
 "num_key_value_heads": 2, "vocab_size": 256, "max_position_embeddings": 256,
 "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "torch_dtype": "float32"}
JSON
echo '{"text": "hello"}' > train.jsonl
cp train.jsonl eval.jsonl
sets=(--set model.path=tiny-model --set data.train=train.jsonl --set data.eval=eval.jsonl)
got=$(env -u LD_LIBRARY_PATH "$out/anvil" validate "$out/configs/demo-cpu.yaml" "${sets[@]}" 2>&1)
rc=$?
[ $rc -eq 0 ] || fail "validate of the bundled demo config: exit $rc"$'\n'"$got"
# A user error still comes out as one (exit 2) through the wrapper.
got=$(env -u LD_LIBRARY_PATH "$out/anvil" validate "$out/configs/demo-cpu.yaml" "${sets[@]}" \
        --set train.lr=-1 2>&1)
rc=$?
[ $rc -eq 2 ] || fail "validate with train.lr=-1: exit $rc, expected 2"$'\n'"$got"

# ---- the tarball, and no overwriting a directory that is not a bundle
small=$(du -sm "$out" | cut -f1)
if [ "$small" -lt 300 ]; then
  "$src/scripts/bundle.sh" --tar "$build" "$work/tarred" >/dev/null 2>&1 || fail "--tar failed"
  tar -tzf "$work/tarred.tar.gz" | grep -q '^tarred/anvil$' || fail "tarball lacks tarred/anvil"
else
  echo "skipping the --tar check: a ${small} MB bundle (CUDA libraries) is slow to compress"
fi
mkdir -p precious && touch precious/keep
"$src/scripts/bundle.sh" "$build" precious >/dev/null 2>&1
rc=$?
[ $rc -eq 2 ] || fail "bundle.sh into a non-bundle directory: exit $rc, expected 2"
[ -e precious/keep ] || fail "bundle.sh removed a directory that was not a bundle"

if [ $failures -gt 0 ]; then
  echo "$failures failure(s)"
  exit 1
fi
echo "bundle OK ($small MB)"
