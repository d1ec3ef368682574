#!/usr/bin/env bash
# scripts/bundle.sh on the anvil of this build tree: the bundle runs with LD_LIBRARY_PATH
# cleared (--version, and validate of a shipped config), from its lib/ and not the build
# machine's, after being moved and through a symlink; it holds no glibc, no NVIDIA driver
# and (without --with-mpi) no MPI; MANIFEST lists what it holds and what it left out, and
# the glibc floor and minimum driver that the wrapper checks (faked too-old versions exit
# 2); a --with-mpi bundle trains on 2 ranks through its own mpirun.
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

# ---- the node's glibc and driver against MANIFEST's floors, checked by the wrapper
floor=$(sed -n 's/^glibc floor: \([0-9.]*\) .*/\1/p' "$out/MANIFEST")
[ -n "$floor" ] || fail "MANIFEST has no glibc floor"
# The floor is a version some bundled file really requires, and this machine has it.
find "$out/bin" "$out/lib" -type f -exec objdump -T {} + 2>/dev/null | grep -q "GLIBC_$floor\b" ||
  fail "no bundled file requires GLIBC_$floor"
here_glibc=$(getconf GNU_LIBC_VERSION | awk '{print $2}')
[ "$(printf '%s\n%s\n' "$floor" "$here_glibc" | sort -V | tail -1)" = "$here_glibc" ] ||
  fail "glibc floor $floor is above this machine's $here_glibc"
got=$(ANVIL_NODE_GLIBC=2.17 "$out/anvil" --version 2>&1)
rc=$?
[ $rc -eq 2 ] || fail "a glibc 2.17 node: exit $rc, expected 2: $got"
grep -qF "glibc is 2.17, but the bundled programs need glibc >= $floor (MANIFEST)" <<<"$got" ||
  fail "a glibc 2.17 node: $got"
got=$(ANVIL_NODE_GLIBC=$floor "$out/anvil" --version 2>&1) || fail "a node at the glibc floor: $got"
if compgen -G "$out/lib/libcudart.so.*" >/dev/null; then
  major=$(basename "$(compgen -G "$out/lib/libcudart.so.*" | head -1)" | sed 's/libcudart.so.//')
  want=$( [ "$major" = 13 ] && echo 580.65.06 || echo 525.60.13 )
  grep -qF "minimum NVIDIA driver: $want (CUDA $major runtime)" "$out/MANIFEST" ||
    fail "MANIFEST's driver floor for CUDA $major: $(grep 'minimum NVIDIA driver' "$out/MANIFEST")"
  got=$(ANVIL_NODE_DRIVER=535.104.05 "$out/anvil" --version 2>&1)
  rc=$?
  [ $rc -eq 2 ] && grep -qF "driver is 535.104.05, but the bundled CUDA runtime needs >= $want" <<<"$got" ||
    fail "a driver 535 node: exit $rc: $got"
  got=$(ANVIL_NODE_DRIVER=535.104.05 ANVIL_SKIP_DRIVER_CHECK=1 "$out/anvil" --version 2>&1) ||
    fail "ANVIL_SKIP_DRIVER_CHECK=1: $got"
  got=$(ANVIL_NODE_DRIVER=$want "$out/anvil" --version 2>&1) || fail "a node at the driver floor: $got"
else
  grep -qF "minimum NVIDIA driver: none (no CUDA runtime" "$out/MANIFEST" || fail "a CPU build's MANIFEST names a driver"
  got=$(ANVIL_NODE_DRIVER=1.0 "$out/anvil" --version 2>&1) || fail "a CPU bundle checked the driver: $got"
fi

# ---- --with-mpi, end to end: 2 ranks of anvil train through the bundle's own mpirun, with
# the build machine's library path cleared (the CUDA libraries left to this machine: smaller).
if "$src/scripts/bundle.sh" --with-mpi --without-cuda-libs "$build" "$work/mpi" >mpi.log 2>&1; then
  for f in mpirun bin/orterun lib/libmpi.so.40; do [ -e "$work/mpi/$f" ] || fail "--with-mpi bundle lacks $f"; done
  grep -q '^MPI: bundled: ' "$work/mpi/MANIFEST" || fail "--with-mpi: MANIFEST does not say MPI is bundled"
  env -u LD_LIBRARY_PATH "$work/mpi/anvil" init-model --preset tiny --out "$work/tiny" --seed 1 >/dev/null 2>&1 ||
    fail "--with-mpi bundle: init-model failed"
  (cd "$src" && env -u LD_LIBRARY_PATH "$work/mpi/mpirun" --oversubscribe -np 2 "$work/mpi/anvil" train \
      configs/demo-cpu.yaml --set model.path="$work/tiny" --set output_dir="$work/mpi-run" --set train.steps=3 \
      --set train.warmup_steps=1 --set train.eval_every=0 --set checkpoint.every=0) >mpi-run.log 2>&1 ||
    fail "--with-mpi: mpirun -np 2 anvil train: $(tail -20 mpi-run.log)"
  grep -Eq '"step": ?3[,}]' "$work/mpi-run/metrics.jsonl" 2>/dev/null || fail "--with-mpi: no step 3 in metrics.jsonl"
  grep -q 'rank 1/2' mpi-run.log || fail "--with-mpi: not 2 ranks in one world: $(grep bind: mpi-run.log)"
else
  fail "bundle.sh --with-mpi: $(tail -5 mpi.log)"
fi

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
