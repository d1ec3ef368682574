#!/usr/bin/env bash
# Builds, on a machine with the development packages, everything the GPU validation needs
# and packs it into one folder for a GPU node that has none of them (no apt, no MPI, no
# HDF5/yaml-cpp/OpenBLAS): then copy the tree with the pack and run scripts/gpu/run.sh there.
#
#   scripts/gpu/pack.sh [--build DIR] [--no-build] [--out DIR]
#     --build DIR  the CMake tree to build in (default build-gpu-pack; an existing tree such
#                  as build/ is reused as it is configured)
#     --no-build   pack what DIR holds, building nothing (CI's e2e.gpu_pack)
#     --out DIR    the pack (default gpu-pack, git-ignored); replaced when it is an earlier pack
#
# The pack: DIR/bundle.tar.gz, the relocatable bundle of scripts/bundle.sh --with-mpi
# --without-cuda-libs (anvil, Open MPI with its plugins and its `mpirun`, every other
# non-system library) plus the GPU test programs and bench_gpu_kernels, stripped and
# compressed to fit what can be carried to the node; DIR/MANIFEST says what is inside.
# The CUDA runtime, cuBLAS(Lt), NCCL and cuRAND are the node's (PyTorch's wheels bring
# them): run.sh finds them.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

build=build-gpu-pack
out=gpu-pack
do_build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift ;;
    --out) out=$2; shift ;;
    --no-build) do_build=0 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "pack.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

programs=(test_gpu_kernels test_gpu_attention test_gpu_ops test_gpu_loss_optim test_gpu_backend
          test_gpu_nccl test_gpu_train_step test_gpu_moe test_gpu_llama4 bench_gpu_kernels test_mpi_staged_comm)
if [ $do_build = 1 ]; then
  command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || {
    echo "pack.sh: needs nvcc (the CUDA toolkit) to build the CUDA backend" >&2; exit 2; }
  export PATH=$PATH:/usr/local/cuda/bin
  if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
      -DANVIL_WERROR=ON >/dev/null
  fi
  cmake --build "$build" -j "$(nproc)" --target anvil "${programs[@]}"
fi

files=()
for p in "${programs[@]}"; do
  f=$(find "$build" -type f -name "$p" -perm -u+x | head -1)
  [ -n "$f" ] || { echo "pack.sh: $p was not built in $build" >&2; exit 1; }
  files+=(--also "$f")
done
if [ -e "$out" ]; then
  [ -f "$out/MANIFEST" ] || { echo "pack.sh: $out exists and is not a pack" >&2; exit 2; }
  rm -rf "$out"
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
bundle=$staging/bundle
# --with-mpi: Open MPI, its plugins and OUT/mpirun (orterun with the bundle's paths).
scripts/bundle.sh --with-mpi --without-cuda-libs "${files[@]}" "$build" "$bundle" >/dev/null
strip --strip-unneeded "$bundle"/bin/* "$bundle"/lib/*.so* 2>/dev/null || true
echo "built from $(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown) in $build" >> "$bundle/MANIFEST"
cp "$bundle/MANIFEST" "$out/MANIFEST"
tar -czf "$out/bundle.tar.gz" -C "$staging" bundle
size=$(du -sm "$out" | cut -f1)
echo "pack: $out, ${size} MiB (limit 48 MiB)"
[ "$size" -le 48 ] || { echo "pack.sh: the pack is over 48 MiB" >&2; exit 1; }
