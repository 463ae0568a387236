#!/usr/bin/env bash
# Uses an installed kvbits exactly as a user would: the CLI tools from PREFIX/bin, the C samples
# compiled against the installed header and library found through pkg-config.
# Usage: scripts/check-install.sh PREFIX
set -euo pipefail
prefix=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pcdir=$(dirname "$(find "$prefix" -name kvbits.pc | head -n 1)")
libdir=$(dirname "$(find "$prefix" -name 'libkvbits.so' | head -n 1)")
export PKG_CONFIG_PATH="$pcdir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}" LD_LIBRARY_PATH="$libdir"

"$prefix/bin/kvbits-llama2c" capture --model "$here/data/stories260K/stories260K.bin" \
  --tokenizer "$here/data/stories260K/tok512.bin" --sequences 2 --tokens 64 --seed 3 --out "$work/acts.safetensors" >/dev/null
"$prefix/bin/kvbits" calibrate --dump "$work/acts.safetensors" --k-bits 3 --v-bits 3 --out "$work/plan.kvbplan" \
  --date 2026-01-01T00:00:00Z --quiet
# The runtime on the installed libkvbits: a packed cache through the C API.
"$prefix/bin/kvbits-llama2c" generate --model "$here/data/stories260K/stories260K.bin" \
  --tokenizer "$here/data/stories260K/tok512.bin" --prompt "Once upon a time" --steps 8 --plan "$work/plan.kvbplan"
cc -std=c99 -Wall -Wextra -Werror -pedantic "$here/samples/c/plan_info.c" $(pkg-config --cflags --libs kvbits) \
  -o "$work/plan_info"
out=$("$work/plan_info" "$work/plan.kvbplan")
echo "$out"
grep -q "5 layers, 8 query heads, 4 KV heads, head_dim 8" <<<"$out"

# decode_demo: context, plan, two sequences, decode; with the calibrated plan and without one
# (it then calibrates its own through the calibrator API).
cc -std=c99 -Wall -Wextra -Werror -pedantic "$here/samples/c/decode_demo.c" $(pkg-config --cflags --libs kvbits) \
  -o "$work/decode_demo"
out=$("$work/decode_demo" "$work/plan.kvbplan")
echo "$out"
grep -q "plan: 5 layers, 8 query heads, 4 KV heads, head_dim 8" <<<"$out"
grep -q "cache: 2 sequences, 29 tokens" <<<"$out"
out=$("$work/decode_demo")
echo "$out"
grep -q "bytes used: " <<<"$out"
echo "check-install: OK"
