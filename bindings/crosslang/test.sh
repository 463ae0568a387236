#!/usr/bin/env bash
# Cross-language check: a plan calibrated in Python must give byte-identical decode outputs
# from C, Python, Rust and Go (README.md in this folder has the contract). A binding whose folder
# does not exist yet is skipped with a notice; any other failure fails.
# Usage: bindings/crosslang/test.sh PREFIX
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$root/bindings/python/setup-env.sh" "$1"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unset KVBITS_LIBRARY
export PYTHONPATH="$root/bindings/python${PYTHONPATH:+:$PYTHONPATH}"

fixture="$work/fixture"
python3 "$here/make_fixture.py" "$fixture"
echo "fixture: $(tr '\n' ' ' <"$fixture/case.txt")"

echo "== C"
cc -std=c99 -Wall -Wextra -Werror -pedantic "$here/crosslang.c" $(pkg-config --cflags --libs kvbits) \
  -o "$work/crosslang_c"
"$work/crosslang_c" "$fixture" "$work/out-c"
# The C outputs are the reference: they must be real attention outputs, not zeros or NaN.
python3 - "$fixture" "$work/out-c" <<'PY'
import sys, numpy as np
case = dict((l.split()[0], [int(x) for x in l.split()[1:]]) for l in open(sys.argv[1] + "/case.txt") if l.strip())
n, q, d = case["sequences"][0], case["n_q_heads"][0], case["head_dim"][0]
out = np.fromfile(sys.argv[2] + "/out.f32", "<f4")
lse = np.fromfile(sys.argv[2] + "/lse.f32", "<f4")
assert out.size == n * q * d and lse.size == n * q, (out.size, lse.size)
assert np.isfinite(out).all() and np.isfinite(lse).all() and np.abs(out).max() > 0.01
print(f"C: out {out.size} floats (|out| max {np.abs(out).max():.4f}), lse {lse.size} floats")
PY

compare() {  # compare LANGUAGE DIR: byte-identical to C
  cmp "$work/out-c/out.f32" "$2/out.f32"
  cmp "$work/out-c/lse.f32" "$2/lse.f32"
  echo "$1: out.f32 and lse.f32 byte-identical to C"
}

echo "== Python"
python3 "$here/crosslang.py" "$fixture" "$work/out-python"
compare Python "$work/out-python"

sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
need_tool() {  # need_tool COMMAND DEBIAN_PACKAGE...
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "installing ${*:2} (Debian) for $1"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${@:2}" >/dev/null
}

echo "== Rust"
if [[ -d "$root/bindings/rust" ]]; then
  need_tool cargo cargo
  (cd "$root/bindings/rust/kvbits" && CARGO_TARGET_DIR="$work/cargo-target" \
    cargo run --offline --quiet --release --example crosslang -- "$fixture" "$work/out-rust")
  compare Rust "$work/out-rust"
else
  echo "skipped: bindings/rust does not exist yet"
fi

echo "== Go"
if [[ -d "$root/bindings/go" ]]; then
  need_tool go golang-go
  (cd "$root/bindings/go" && GOPROXY=off go run ./cmd/kvbits-crosslang "$fixture" "$work/out-go")
  compare Go "$work/out-go"
else
  echo "skipped: bindings/go does not exist yet"
fi
echo "bindings/crosslang: OK"
