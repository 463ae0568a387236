#!/usr/bin/env bash
# The main job on the bundled real model (stories260K, a trained tiny Llama):
#   1. run the model and capture its pre-RoPE Q/K activations (8 self-sampled sequences x 256 tokens),
#   2. calibrate Block-GTQ bit plans at 2 and 3 key bits per dim (plus the uniform TQ-MSE baseline),
#   3. inspect and verify them, and write the allocation pictures.
# Output goes to report/ (override with KVBITS_REPORT_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh
source scripts/env.sh
jobs=$(nproc)
[[ -d build-release ]] || meson setup build-release -Dbuildtype=release -Dcuda=auto -Dtests=false -Dbench=false >/dev/null
ninja -C build-release -j "$jobs" >/dev/null
out=${KVBITS_REPORT_DIR:-report}
mkdir -p "$out"
model=data/stories260K/stories260K.bin tok=data/stories260K/tok512.bin
bin=build-release

echo "== 1. capture activations from stories260K (8 x 256 tokens, self-sampled at T=1)"
"$bin/samples/llama2c/kvbits-llama2c" capture --model "$model" --tokenizer "$tok" \
  --sequences 8 --tokens 256 --seed 1 --out "$out/stories260K-calib.safetensors"

for k in 2 3; do
  echo
  echo "== 2. calibrate: Block-GTQ K${k}V${k} (product score)"
  "$bin/src/cli/kvbits" calibrate --dump "$out/stories260K-calib.safetensors" --k-bits "$k" --v-bits "$k" \
    --fingerprint-file "$model" --out "$out/stories260K-K${k}V${k}.kvbplan"
  "$bin/src/cli/kvbits" calibrate --dump "$out/stories260K-calib.safetensors" --k-bits "$k" --v-bits "$k" \
    --method uniform --fingerprint-file "$model" --out "$out/stories260K-K${k}V${k}-uniform.kvbplan" --quiet
done

echo
echo "== 3. inspect the 3-bit plan"
"$bin/src/cli/kvbits" inspect "$out/stories260K-K3V3.kvbplan" --svg "$out/stories260K-K3V3.svg"
"$bin/src/cli/kvbits" inspect "$out/stories260K-K2V2.kvbplan" --no-table --svg "$out/stories260K-K2V2.svg" >/dev/null
echo
for p in "$out"/*.kvbplan; do "$bin/src/cli/kvbits" verify "$p"; done
echo
echo "note: stories260K has head_dim 8 (4 RoPE blocks), so the fp16 scales of up to 4 groups weigh"
echo "      as much as the codes; at head_dim 128 a K3V3 Block-GTQ head takes ~110 B/token vs 512 in fp16."
echo "demo: plans and pictures are in $out/"
