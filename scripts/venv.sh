#!/usr/bin/env bash
# The interop judges' virtual environment (requirements-interop.txt), outside the clone so that
# every checkout on a machine shares one: ${XDG_CACHE_HOME:-$HOME/.cache}/deltaedit/venv-<hash>,
# the hash covering the requirements file and the Python version, with the downloaded wheels beside
# it (wheels/, shared by every venv: a new venv downloads only what changed). Silent and immediate when the environment is already complete; a half-made one (killed run)
# is removed and made again.
#   scripts/venv.sh            make it if needed
#   scripts/venv.sh --python   print the path of its python (creates nothing)
# Test-time only: the product never needs Python.
set -euo pipefail
root_dir="$(cd "$(dirname "$0")/.." && pwd)"
req="$root_dir/requirements-interop.txt"
# Debian's interpreter and its python3-venv, whatever python3 comes first on PATH.
py=${DELTAEDIT_VENV_PYTHON:-/usr/bin/python3}
cache=${DELTAEDIT_VENV_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/deltaedit}
key=$({ cat "$req"; "$py" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-12)
venv="$cache/venv-$key"

if [[ "${1:-}" == "--python" ]]; then
  echo "$venv/bin/python"
  exit 0
fi
[[ -f "$venv/.complete" ]] && exit 0

if ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
  echo "venv.sh: $py has no venv/ensurepip module; install Debian's python3-venv (scripts/install-deps.sh)" >&2
  exit 2
fi
mkdir -p "$cache"
exec 9>"$venv.lock"
flock 9
[[ -f "$venv/.complete" ]] && exit 0 # made by a concurrent run while this one waited

start=$(date +%s)
echo "venv.sh: creating $venv (PyPI's torch is the CUDA build: a few GB on the first run)" >&2
rm -rf "$venv"
"$py" -m venv "$venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# The file is the whole resolved set: no resolver run, wheels only. An explicit wheelhouse rather
# than pip's HTTP cache, which the pip bundled with Debian's python3-venv does not keep.
"$venv/bin/pip" download --quiet --no-deps --only-binary=:all: -d "$cache/wheels" -r "$req"
"$venv/bin/pip" install --quiet --no-deps --no-index --find-links "$cache/wheels" -r "$req"
"$venv/bin/pip" check >&2
"$venv/bin/python" -c 'import torch, transformers, safetensors, peft, mergekit, numpy'
touch "$venv/.complete"
echo "venv.sh: ready in $(($(date +%s) - start)) s: $venv" >&2
