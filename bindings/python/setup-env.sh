# Sourced by bindings/python/test.sh and bindings/crosslang/test.sh with the install PREFIX as $1:
# points pkg-config and the loader at PREFIX, and makes sure python3 and numpy are there
# (Debian's python3-numpy for Debian's python3, else pip).
kvb_prefix=$(cd "$1" && pwd)
kvb_pc=$(find "$kvb_prefix" -name kvbits.pc | head -n 1)
kvb_lib=$(find "$kvb_prefix" -name 'libkvbits.so' | head -n 1)
if [[ -z "$kvb_pc" || -z "$kvb_lib" ]]; then
  echo "no kvbits.pc / libkvbits.so under $kvb_prefix (install kvbits there first)" >&2
  exit 1
fi
export PKG_CONFIG_PATH="$(dirname "$kvb_pc")${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export LD_LIBRARY_PATH="$(dirname "$kvb_lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in the source tree

kvb_apt() {  # kvb_apt PACKAGE...: Debian packages, through sudo when not root
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! command -v python3 >/dev/null 2>&1; then
  echo "kvbits: installing python3 and numpy (Debian)"
  kvb_apt python3 python3-numpy
fi
if ! python3 -c 'import numpy' 2>/dev/null; then
  kvb_py=$(readlink -f "$(command -v python3)")
  if dpkg -S "$kvb_py" >/dev/null 2>&1; then
    echo "kvbits: installing python3-numpy (Debian's python3: $kvb_py)"
    kvb_apt python3-numpy
  else
    echo "kvbits: installing numpy with pip for $kvb_py"
    python3 -m pip install --quiet numpy
  fi
fi
python3 -c 'import numpy' || { echo "numpy is still missing" >&2; exit 1; }
