#!/usr/bin/env bash
# Installs everything anvil needs to build, test and run, from Debian packages and PyPI.
# Idempotent: prints what it installed, and does nothing when all is already there.
#   scripts/setup.sh              system packages + the Python venv (.venv) for tests
#   scripts/setup.sh --reference  also the heavy Python references (torch, transformers, peft,
#                                 bitsandbytes)
set -euo pipefail
cd "$(dirname "$0")/.."

want_reference=0
for a in "$@"; do
  case "$a" in
    --reference) want_reference=1 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$a'" >&2; exit 2 ;;
  esac
done

# Debian packages: build tools, MPI, parallel HDF5, config/CLI/JSON/regex/hash libraries, tests
# (Slurm + munge: the one-node test cluster of scripts/slurm-local.sh; srun's pmix plugin
# comes with slurm-wlm-basic-plugins).
debs=(
  build-essential cmake ninja-build pkg-config git
  openmpi-bin libopenmpi-dev libhdf5-openmpi-dev hdf5-tools
  libyaml-cpp-dev libcli11-dev libopenblas-dev libopenblas-openmp-dev nlohmann-json3-dev libsimdjson-dev
  libpcre2-dev libutf8proc-dev libxxhash-dev libsentencepiece-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev
  slurmctld slurmd slurm-client munge
  python3 python3-venv python3-dev
)
missing=()
for p in "${debs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "setup: installed ${#missing[@]} Debian packages"
fi

# Python tooling for scripts and tests, in a git-ignored venv inside the repo. Debian's own
# interpreter is used so the venv does not depend on a user's pyenv/conda.
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3)
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$py" -m venv .venv
fi
# Each entry is module=requirement where the import name is not the package's. The
# inference clients the exports are checked in come from PyPI too: mlx-lm (the CPU build of
# MLX, no torch) and llama-cpp-python, which compiles llama.cpp from its sdist (~6 min on
# two cores; pip's wheel cache keeps the result for later set-ups). GGML_NATIVE=OFF: a
# build that runs on any x86-64 the cache is copied to.
pip_want=(numpy safetensors tokenizers jinja2 matplotlib gguf "mlx_lm=mlx-lm[cpu]" "llama_cpp=llama-cpp-python")
[ "$want_reference" = 1 ] && pip_want+=(torch transformers peft bitsandbytes)
pip_missing=()
for m in "${pip_want[@]}"; do
  .venv/bin/python -c "import ${m%%=*}" 2>/dev/null || pip_missing+=("${m#*=}")
done
if [ ${#pip_missing[@]} -gt 0 ]; then
  echo "setup: installing Python packages into .venv: ${pip_missing[*]}"
  CMAKE_ARGS="-DGGML_NATIVE=OFF" .venv/bin/python -m pip install -q --disable-pip-version-check "${pip_missing[@]}"
fi
if [ ${#missing[@]} -eq 0 ] && [ ${#pip_missing[@]} -eq 0 ]; then
  echo "setup: everything is already installed"
fi
