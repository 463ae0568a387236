#!/usr/bin/env bash
# Installs the Debian 12 packages kvbits needs to build and test, skipping those present.
# Usage: scripts/setup-deps.sh [--with-fuzz]
set -euo pipefail

pkgs=(build-essential meson ninja-build pkg-config python3
      libzstd-dev libxxhash-dev nlohmann-json3-dev libcli11-dev
      libgtest-dev libbenchmark-dev)
if [[ "${1:-}" == "--with-fuzz" ]]; then
  pkgs+=(clang libclang-rt-14-dev)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "kvbits: installing missing Debian packages: ${missing[*]}"
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# nvcc is optional: the CUDA backend builds whenever it is found. Debian's CUDA toolkit or
# NVIDIA's both work; NVIDIA's installs outside PATH.
if ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  echo "kvbits: note: nvcc found in /usr/local/cuda/bin; the build scripts add it to PATH"
fi
