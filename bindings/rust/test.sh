#!/usr/bin/env bash
# Builds and tests the Rust bindings against an installed kvbits, offline: `cargo test` of
# kvbits-sys and kvbits (header layout probe, safe API, doc tests, the crosslang example),
# warning-free `cargo doc`, then samples/rust with a self-calibrated plan (its output must equal
# the C samples/c/decode_demo.c line for line) and with a plan made by the installed CLI.
# Build output goes to a temporary folder; nothing is written to the source tree.
# Usage: bindings/rust/test.sh PREFIX
set -euo pipefail
if [[ $# -ne 1 ]]; then
  echo "usage: $0 PREFIX (an installed kvbits, e.g. build-test/install)" >&2
  exit 2
fi
prefix=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")/../.." && pwd)

# ---- toolchain: cargo from PATH or ~/.cargo/bin, else Debian's (rustc 1.63 is enough) ----
need=()
if ! command -v cargo >/dev/null 2>&1; then
  if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    need+=(cargo rustc)
  fi
fi
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if ((${#need[@]})); then
  echo "rust bindings: installing Debian packages: ${need[*]}"
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "rust bindings: $(cargo --version), $(rustc --version)"

# ---- the installed library, found the way users find it ----
pcfile=$(find "$prefix" -name kvbits.pc | head -n 1)
libfile=$(find "$prefix" -name libkvbits.so | head -n 1)
if [[ -z "$pcfile" || -z "$libfile" ]]; then
  echo "rust bindings: no kvbits.pc / libkvbits.so under $prefix" >&2
  exit 1
fi
export PKG_CONFIG_PATH="$(dirname "$pcfile")${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export LD_LIBRARY_PATH="$(dirname "$libfile")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
unset KVBITS_LIB_DIR KVBITS_INCLUDE_DIR KVBITS_NO_PKG_CONFIG

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CARGO_TARGET_DIR="$work/target" CARGO_NET_OFFLINE=true
cargo_flags=(--offline --locked)

echo "== rust: cargo test (kvbits-sys, kvbits)"
(cd "$here/bindings/rust" && cargo test "${cargo_flags[@]}" --workspace)

echo "== rust: cargo doc (warnings are errors)"
(cd "$here/bindings/rust" && RUSTDOCFLAGS="-D warnings" cargo doc "${cargo_flags[@]}" --workspace --no-deps --quiet)

echo "== rust: samples/rust"
(cd "$here/samples/rust" && cargo build "${cargo_flags[@]}" --release --quiet)
sample="$CARGO_TARGET_DIR/release/kvbits-rust-sample"
"$sample" | tee "$work/rust.out"
# Same made-up data, same calls: the Rust sample prints what the C demo prints.
cc -std=c99 "$here/samples/c/decode_demo.c" $(pkg-config --cflags --libs kvbits) -o "$work/decode_demo"
"$work/decode_demo" >"$work/c.out"
if ! diff "$work/c.out" <(tail -n +2 "$work/rust.out"); then
  echo "rust bindings: samples/rust and samples/c/decode_demo.c disagree" >&2
  exit 1
fi
grep -q "cache: 2 sequences, 29 tokens" "$work/rust.out"

# A plan of the bundled stories260K model, made by the installed CLI, loaded by the sample.
"$prefix/bin/kvbits-llama2c" capture --model "$here/data/stories260K/stories260K.bin" \
  --tokenizer "$here/data/stories260K/tok512.bin" --sequences 2 --tokens 64 --seed 3 \
  --out "$work/acts.safetensors" >/dev/null
"$prefix/bin/kvbits" calibrate --dump "$work/acts.safetensors" --k-bits 3 --v-bits 3 \
  --out "$work/plan.kvbplan" --date 2026-01-01T00:00:00Z --quiet
"$sample" "$work/plan.kvbplan" | tee "$work/rust-plan.out"
grep -q "plan: 5 layers, 8 query heads, 4 KV heads, head_dim 8" "$work/rust-plan.out"
grep -q "cache: 2 sequences, 29 tokens" "$work/rust-plan.out"

# A missing plan file fails with the library's status and message, not a panic.
if "$sample" "$work/missing.kvbplan" 2>"$work/err.txt"; then
  echo "rust bindings: the sample accepted a missing plan file" >&2
  exit 1
fi
grep -q "^kvbits sample: io_error: " "$work/err.txt"
echo "rust bindings: OK"
