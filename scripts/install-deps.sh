#!/usr/bin/env bash
# Installs the Debian packages deltaedit needs, only those missing; silent when all are present.
set -euo pipefail
PKGS=(build-essential cmake pkg-config git
      nlohmann-json3-dev libcli11-dev libfmt-dev libeigen3-dev libpcre2-dev
      libgtest-dev libgmock-dev libbenchmark-dev
      libopenblas-dev libtorch-dev python3-torch
      libyaml-cpp-dev libutf8proc-dev python3-venv ccache
      clang libclang-rt-14-dev)
PKGS+=(chromium)  # the report test renders index.html headless
missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing missing Debian packages: ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
