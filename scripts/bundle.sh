#!/usr/bin/env bash
# A relocatable bundle of the anvil binary for GPU nodes that lack the development packages
# (HDF5, yaml-cpp, OpenBLAS, the CUDA toolkit, ...):
#
#   scripts/bundle.sh [--with-mpi] [--without-cuda-libs] [--also FILE]... [--tar] [BUILD_DIR] [OUT_DIR]
#     BUILD_DIR  the CMake build tree holding src/cli/anvil (default: build)
#     OUT_DIR    where the bundle goes (default: anvil-<version>); must not exist, or be an
#                earlier bundle (it has a MANIFEST), which is replaced
#     --tar      also write OUT_DIR.tar.gz
#     --with-mpi also bundle Open MPI (libraries, plugins, OUT/mpirun; see below)
#     --without-cuda-libs  leave the CUDA runtime, cuBLAS(Lt), NCCL and cuRAND to the node (e.g.
#                the copies PyTorch's wheels install there); the bundle is then ~1 GB smaller
#     --also FILE  another executable (a test program) into OUT/bin, with
#                the libraries it needs
#
# The bundle: OUT/anvil (run this: it puts OUT/lib first on LD_LIBRARY_PATH and execs
# OUT/bin/anvil), OUT/bin/anvil, OUT/lib/ (the shared libraries ldd names, copied), OUT/configs/,
# OUT/MANIFEST (versions and every library's origin). Launch it as any binary:
#   mpirun -np 8 OUT/anvil train OUT/configs/llama3-8b-lora.yaml
#
# What is left out, on purpose:
#   - glibc (libc, ld-linux, libm, libmvec, libdl, libpthread, librt, libresolv, libutil,
#     libanl, libnsl): it is tied to the node's kernel and loader, and ld-linux cannot be
#     swapped by LD_LIBRARY_PATH. The node needs a glibc at least as new as the newest
#     GLIBC_x.y symbol version any bundled file requires (read here with objdump -T: the
#     "glibc floor" in MANIFEST), usually below the build machine's own.
#   - the NVIDIA driver (libcuda, libnvidia-*): it must match the node's kernel module. The
#     CUDA runtime, cuBLAS(Lt) and NCCL are bundled; they need a driver new enough for the
#     toolkit they came from (CUDA 13: 580.65.06; CUDA 12: 525.60.13, MANIFEST's
#     "minimum NVIDIA driver").
# OUT/anvil checks both before it starts anvil: a glibc below the floor (getconf
# GNU_LIBC_VERSION, else ldd --version) or a driver below the minimum (/proc/driver/nvidia/
# version, else nvidia-smi; no driver at all passes: a CPU node) exits 2 naming both
# versions. ANVIL_NODE_GLIBC / ANVIL_NODE_DRIVER (tests) stand in for the node's versions;
# ANVIL_SKIP_DRIVER_CHECK=1 skips the driver check (a node with NVIDIA's CUDA forward-
# compatibility package, whose libcuda is newer than its kernel module).
#   - InfiniBand verbs (libibverbs, librdmacm, ...): their providers match the node's HCA.
#   - MPI, unless --with-mpi. A site Open MPI (4.x or 5.x: both provide the libmpi.so.40
#     ABI anvil is built against; MPICH-derived MPIs do not) is required: libmpi must match
#     the launcher, since mpirun (or srun's PMIx) and libmpi talk a private protocol, so a
#     bundled Open MPI under the site's mpirun of another release fails at MPI_Init or
#     hangs. With --with-mpi the bundle carries libmpi, its libraries, Open MPI's plugin and
#     help directories and its own launcher, OUT/mpirun (this machine's orterun; both
#     wrappers point OPAL_PKGLIBDIR / OPAL_PKGDATADIR at the bundle): for a node with no MPI
#     at all (the GPU pack, scripts/gpu/pack.sh), launched only as `OUT/mpirun -np N
#     OUT/anvil ...` on one node. It is not for srun (PMIx versions must match Slurm's) nor
#     for several nodes (orted is not bundled).
# libstdc++ and libgcc_s ARE bundled: a node with an older compiler runtime lacks the
# GLIBCXX symbols anvil needs, and the newer library serves older users as well.
set -euo pipefail

usage() { sed -n '4,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }
die() { echo "bundle.sh: $*" >&2; exit 2; }

with_mpi=0
with_cuda_libs=1
tarball=0
positional=()
also=()
while [ $# -gt 0 ]; do
  case "$1" in
    --with-mpi) with_mpi=1 ;;
    --without-cuda-libs) with_cuda_libs=0 ;;
    --also) [ $# -ge 2 ] || usage; also+=("$2"); shift ;;
    --tar) tarball=1 ;;
    -h|--help) usage 0 ;;
    -*) echo "bundle.sh: unknown option $1" >&2; usage ;;
    *) positional+=("$1") ;;
  esac
  shift
done
[ ${#positional[@]} -le 2 ] || usage

src=$(cd "$(dirname "$0")/.." && pwd)
build=${positional[0]:-$src/build}
binary=$build/src/cli/anvil
[ -x "$binary" ] || die "no anvil binary at $binary (build first: cmake --build $build --target anvil)"
version=$("$binary" --version | awk '{print $NF}')
out=${positional[1]:-anvil-$version}

if [ -e "$out" ]; then
  [ -f "$out/MANIFEST" ] || die "$out exists and is not an earlier bundle (no MANIFEST); not replacing it"
  rm -rf "$out"
fi
mkdir -p "$out/bin" "$out/lib" "$out/configs"
out=$(cd "$out" && pwd)

# Which shared libraries stay on the node. Names are sonames as ldd prints them.
is_glibc() {
  case "$1" in
    linux-vdso.so*|linux-gate.so*|ld-linux*|libc.so*|libm.so*|libmvec.so*|libdl.so*|\
    libpthread.so*|librt.so*|libresolv.so*|libutil.so*|libanl.so*|libnsl.so*|libBrokenLocale.so*) return 0 ;;
  esac
  return 1
}
is_driver() {
  case "$1" in libcuda.so*|libnvidia-*|libcudadebugger.so*) return 0 ;; esac
  return 1
}
is_cuda() {
  case "$1" in
    libcudart.so*|libcublas.so*|libcublasLt.so*|libnccl.so*|libcurand.so*|libnvrtc.so*) return 0 ;;
  esac
  return 1
}
is_fabric() {
  case "$1" in libibverbs.so*|librdmacm.so*|libmlx4.so*|libmlx5.so*|libefa.so*|libpsm*|libnl-*) return 0 ;; esac
  return 1
}
# Open MPI and what only it uses (its runtime, PMIx, hwloc, libevent, UCX, libfabric).
is_mpi() {
  case "$1" in
    libmpi.so*|libmpi_*|libopen-pal.so*|libopen-rte.so*|libpmix.so*|libprrte.so*|libhwloc.so*|\
    libevent*|libucp.so*|libucs.so*|libuct.so*|libucm.so*|libfabric.so*|libmunge.so*) return 0 ;;
  esac
  return 1
}

# The libraries FILE names itself (DT_NEEDED).
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }

manifest_libs=()
manifest_left=()
declare -A lib_path=() visited=()
# Copies into $out/lib what the ELF files given need, following DT_NEEDED from each copied
# library but not into what the node provides: the dependencies of the site's libmpi come
# with the site's MPI. Paths come from ldd, i.e. from this machine's loader search.
bundle_libs() {
  local name path why queue=("$@")
  while read -r name path; do lib_path[$name]=$path; done < <(
    ldd "$@" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}')
  while [ ${#queue[@]} -gt 0 ]; do
    local file=${queue[0]}
    queue=("${queue[@]:1}")
    for name in $(needed "$file"); do
      [ -z "${visited[$name]:-}" ] || continue
      visited[$name]=1
      path=${lib_path[$name]:-}
      why=""
      if is_glibc "$name"; then why="glibc"
      elif is_driver "$name"; then why="NVIDIA driver"
      elif is_fabric "$name"; then why="InfiniBand/fabric driver"
      elif [ $with_mpi -eq 0 ] && is_mpi "$name"; then why="MPI: the site's, see --with-mpi"
      elif [ $with_cuda_libs -eq 0 ] && is_cuda "$name"; then why="CUDA libraries: the node's"
      fi
      if [ -n "$why" ]; then
        manifest_left+=("$name ($why)")
        continue
      fi
      [ -n "$path" ] || die "ldd cannot find $name, needed by $file (fix this machine's library path first)"
      cp -L "$path" "$out/lib/$name"
      manifest_libs+=("$name	$(readlink -f "$path")")
      queue+=("$path")
    done
  done
}

cp "$binary" "$out/bin/anvil"
bundle_libs "$binary"
for extra in "${also[@]}"; do
  [ -x "$extra" ] || die "--also $extra: not an executable"
  cp -L "$extra" "$out/bin/"
  bundle_libs "$extra"
done

# The CUDA backend opens cuBLAS and cuBLASLt with dlopen (src/backend/cuda/blas_api.h), so
# they are not in DT_NEEDED: bundle them from beside cudart, with what they need.
cudart_dir=""
for name in "${!lib_path[@]}"; do
  case $name in libcudart.so.*) cudart_dir=$(dirname "${lib_path[$name]}") ;; esac
done
if [ -n "$cudart_dir" ] && [ $with_cuda_libs -eq 1 ]; then
  blas=()
  for path in "$cudart_dir"/libcublasLt.so.* "$cudart_dir"/libcublas.so.*; do
    name=$(basename "$path")
    [[ $name =~ ^libcublas(Lt)?\.so\.[0-9]+$ ]] || continue  # the soname, not the versioned file
    [ -z "${visited[$name]:-}" ] || continue
    visited[$name]=1
    cp -L "$path" "$out/lib/$name"
    manifest_libs+=("$name	$(readlink -f "$path") (dlopen)")
    blas+=("$path")
  done
  [ ${#blas[@]} -eq 2 ] || die "cuBLAS/cuBLASLt not found beside $cudart_dir/libcudart (the CUDA backend opens them)"
  bundle_libs "${blas[@]}"
fi

wrapper_env=""
mpi_note="not bundled: the site's libmpi.so.40 (Open MPI 4.x/5.x ABI) is used"
if [ $with_mpi -eq 1 ]; then
  command -v ompi_info >/dev/null || die "--with-mpi needs Open MPI's ompi_info on PATH"
  pkglibdir=$(ompi_info --path pkglibdir --parsable | sed 's/^path:pkglibdir://')
  pkgdatadir=$(ompi_info --path pkgdatadir --parsable | sed 's/^path:pkgdatadir://')
  mkdir -p "$out/lib/openmpi" "$out/share"
  cp -L "$pkglibdir"/*.so "$out/lib/openmpi/" 2>/dev/null || true
  cp -rL "$pkgdatadir" "$out/share/openmpi"
  # The plugins' own libraries (PMIx, UCX, ...), with the same exclusions.
  if compgen -G "$out/lib/openmpi/*.so" >/dev/null; then
    bundle_libs "$out"/lib/openmpi/*.so
  fi
  # The launcher of the same release (Open MPI 4's mpirun is orterun), with its libraries.
  orterun=$(readlink -f "$(command -v orterun || command -v mpirun)")
  cp -L "$orterun" "$out/bin/orterun"
  bundle_libs "$orterun"
  wrapper_env='export OPAL_PKGLIBDIR="${OPAL_PKGLIBDIR:-$here/lib/openmpi}"
export OPAL_PKGDATADIR="${OPAL_PKGDATADIR:-$here/share/openmpi}"'
  cat > "$out/mpirun" <<EOF
#!/bin/sh
# Open MPI's mpirun from the bundle (scripts/bundle.sh --with-mpi), with its libraries and
# plugins; the ranks inherit the same paths.
here=\$(dirname "\$(readlink -f "\$0")")
LD_LIBRARY_PATH="\$here/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
$wrapper_env
exec "\$here/bin/orterun" "\$@"
EOF
  chmod +x "$out/mpirun"
  mpi_note="bundled: $(ompi_info --version 2>/dev/null | head -1); launch with OUT/mpirun, one node"
fi

# What the node must have, read from what was bundled: the newest GLIBC_ symbol version any
# bundled ELF file requires, and the driver the CUDA runtime's major version needs (NVIDIA's
# toolkit/driver table: the release's GA driver, which minor-version compatibility also
# needs for the whole major).
glibc_floor=$(find "$out/bin" "$out/lib" -type f -exec objdump -T {} + 2>/dev/null |
  grep -o 'GLIBC_[0-9][0-9.]*[0-9]' | sed 's/^GLIBC_//' | sort -uV | tail -1)
[ -n "$glibc_floor" ] || die "objdump -T found no GLIBC_ symbol versions in the bundle (binutils missing?)"
cuda_major=""
for name in "${!lib_path[@]}"; do
  case $name in libcudart.so.*) cuda_major=${name#libcudart.so.} ;; esac
done
case "$cuda_major" in
  "") driver_floor="" ; driver_note="none (no CUDA runtime: a CPU-only build)" ;;
  13) driver_floor=580.65.06 ;;
  12) driver_floor=525.60.13 ;;
  *) die "libcudart.so.$cuda_major: no minimum driver known for CUDA $cuda_major (add it to bundle.sh)" ;;
esac
[ -z "$driver_floor" ] || driver_note="$driver_floor (CUDA $cuda_major runtime)"

cat > "$out/anvil" <<EOF
#!/bin/sh
# anvil from a relocatable bundle (scripts/bundle.sh): the node's glibc and NVIDIA driver
# checked against what the bundle needs (MANIFEST), then the bundle's libraries first.
# ANVIL_NODE_GLIBC / ANVIL_NODE_DRIVER (tests) stand in for the node's versions;
# ANVIL_SKIP_DRIVER_CHECK=1 skips the driver check (CUDA forward compatibility).
glibc_floor=$glibc_floor
driver_floor=$driver_floor
at_least() { [ "\$(printf '%s\\n%s\\n' "\$2" "\$1" | sort -V | head -1)" = "\$2" ]; }
glibc=\${ANVIL_NODE_GLIBC:-\$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print \$2}')}
[ -n "\$glibc" ] || glibc=\$(ldd --version 2>/dev/null | head -1 | awk '{print \$NF}')
if [ -n "\$glibc" ] && ! at_least "\$glibc" "\$glibc_floor"; then
  echo "anvil bundle: this node's glibc is \$glibc, but the bundled programs need glibc >= \$glibc_floor (MANIFEST); build the bundle on an older distribution" >&2
  exit 2
fi
if [ -n "\$driver_floor" ] && [ "\${ANVIL_SKIP_DRIVER_CHECK:-0}" != 1 ]; then
  driver=\${ANVIL_NODE_DRIVER:-\$(grep -o '[0-9][0-9]*\\.[0-9][0-9.]*' /proc/driver/nvidia/version 2>/dev/null | head -1)}
  [ -n "\$driver" ] || driver=\$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)
  if [ -n "\$driver" ] && ! at_least "\$driver" "\$driver_floor"; then
    echo "anvil bundle: this node's NVIDIA driver is \$driver, but the bundled CUDA runtime needs >= \$driver_floor (MANIFEST); update the driver, or bundle with --without-cuda-libs and use the node's CUDA" >&2
    exit 2
  fi
fi
# readlink -f: the wrapper may be reached through a symlink (e.g. from a bin/ on PATH).
here=\$(dirname "\$(readlink -f "\$0")")
LD_LIBRARY_PATH="\$here/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
$wrapper_env
exec "\$here/bin/anvil" "\$@"
EOF
chmod +x "$out/anvil"

cp "$src"/configs/*.yaml "$out/configs/"
[ -f "$src/configs/README.md" ] && cp "$src/configs/README.md" "$out/configs/"

{
  echo "anvil bundle"
  echo "anvil: $("$binary" --version)"
  echo "source: $(git -C "$src" describe --always --dirty --tags 2>/dev/null || echo unknown)"
  echo "built on: $(uname -srm), $(ldd --version 2>&1 | head -1)"
  echo "glibc floor: $glibc_floor (the newest GLIBC_ version the bundled files require)"
  echo "minimum NVIDIA driver: $driver_note"
  echo "needs on the node: glibc >= the floor, an NVIDIA driver >= the minimum (./anvil checks both)"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "MPI: $mpi_note"
  echo
  echo "bundled libraries (lib/), with their origin:"
  printf '  %s\n' "${manifest_libs[@]}"
  echo
  echo "left to the node:"
  printf '  %s\n' "${manifest_left[@]}"
} > "$out/MANIFEST"

if [ $tarball -eq 1 ]; then
  tar -czf "$out.tar.gz" -C "$(dirname "$out")" "$(basename "$out")"
  echo "bundle: $out (and $out.tar.gz)"
else
  echo "bundle: $out"
fi
