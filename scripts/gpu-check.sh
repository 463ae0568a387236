#!/usr/bin/env bash
# GPU check in one command: device line, GPU tests, compute-sanitizer (memcheck + racecheck on a
# small filter), benchmarks. Every log is teed into $OUT (default: ./gpu-check-out).
# Usage: scripts/gpu-check.sh BIN_DIR      (default: this script's folder; BIN_DIR holds test_gpu_encode, test_gpu_decode,
#                                           test_gpu_cache, test_gpu_attention, test_gpu_capi, test_gpu_extend,
#                                           test_gpu_transfer, bench_encode_gpu, bench_decode_gpu,
#                                           bench_append_gpu, bench_extend_gpu, bench_transfer_gpu;
#                                           kvbits-tp-decode when built)
# Exit status: number of failed steps (0 = all passed); every step runs regardless.
set -u -o pipefail
BIN=${1:-$(dirname "$0")}
BIN=$(cd "$BIN" && pwd)
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
failed=0
step() {  # step NAME LOG CMD...: runs CMD, appends its output to $OUT/LOG, counts a failure
  local name=$1 log=$2
  shift 2
  echo "=== $name: $*" | tee -a "$OUT/$log"
  local t0=$SECONDS
  "$@" 2>&1 | tee -a "$OUT/$log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: rc=$rc, $((SECONDS - t0)) s" | tee -a "$OUT/$log"
  if [ "$rc" -ne 0 ]; then failed=$((failed + 1)); echo "$name" >>"$OUT/failed-steps.txt"; fi
}
: >"$OUT/failed-steps.txt"
step device device.log nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader
step test_gpu_encode tests.log "$BIN/test_gpu_encode" --gtest_output=xml:"$OUT/test_gpu_encode.xml"
step test_gpu_decode tests.log "$BIN/test_gpu_decode" --gtest_output=xml:"$OUT/test_gpu_decode.xml"
step test_gpu_cache tests.log "$BIN/test_gpu_cache" --gtest_output=xml:"$OUT/test_gpu_cache.xml"
step test_gpu_attention tests.log "$BIN/test_gpu_attention" --gtest_output=xml:"$OUT/test_gpu_attention.xml"
step test_gpu_capi tests.log "$BIN/test_gpu_capi" --gtest_output=xml:"$OUT/test_gpu_capi.xml"
step test_gpu_extend tests.log "$BIN/test_gpu_extend" --gtest_output=xml:"$OUT/test_gpu_extend.xml"
step test_gpu_transfer tests.log "$BIN/test_gpu_transfer" --gtest_output=xml:"$OUT/test_gpu_transfer.xml"
# The tensor-parallel sample: two ranks on one GPU without NCCL always; over NCCL when the machine
# has two GPUs (exit 77 = too few GPUs, not a failure).
if [ -x "$BIN/kvbits-tp-decode" ]; then
  step tp_one_gpu tests.log "$BIN/kvbits-tp-decode" --one-gpu
  echo "=== tp_nccl: $BIN/kvbits-tp-decode" | tee -a "$OUT/tests.log"
  "$BIN/kvbits-tp-decode" 2>&1 | tee -a "$OUT/tests.log"
  rc=${PIPESTATUS[0]}
  echo "=== tp_nccl: rc=$rc (77: fewer than 2 GPUs)" | tee -a "$OUT/tests.log"
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then failed=$((failed + 1)); echo tp_nccl >>"$OUT/failed-steps.txt"; fi
fi
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
step memcheck sanitizer.log "$CS" --tool memcheck --error-exitcode 1 "$BIN/test_gpu_decode" --gtest_filter='*Small*'
step racecheck sanitizer.log "$CS" --tool racecheck --racecheck-report all --error-exitcode 1 "$BIN/test_gpu_decode" --gtest_filter='*Small*'
step memcheck_extend sanitizer.log "$CS" --tool memcheck --error-exitcode 1 "$BIN/test_gpu_extend" --gtest_filter='*Small*'
step racecheck_extend sanitizer.log "$CS" --tool racecheck --racecheck-report all --error-exitcode 1 "$BIN/test_gpu_extend" --gtest_filter='*Small*'
step synccheck_extend sanitizer.log "$CS" --tool synccheck --error-exitcode 1 "$BIN/test_gpu_extend" --gtest_filter='*Small*'
step memcheck_encode sanitizer.log "$CS" --tool memcheck --error-exitcode 1 "$BIN/test_gpu_encode"
step memcheck_cache sanitizer.log "$CS" --tool memcheck --error-exitcode 1 "$BIN/test_gpu_cache" --gtest_filter='*Small*'
step racecheck_cache sanitizer.log "$CS" --tool racecheck --racecheck-report all --error-exitcode 1 "$BIN/test_gpu_cache" --gtest_filter='*Small*'
step memcheck_attention sanitizer.log "$CS" --tool memcheck --error-exitcode 1 "$BIN/test_gpu_attention" --gtest_filter='*Small*'
step memcheck_transfer sanitizer.log "$CS" --tool memcheck --error-exitcode 1 "$BIN/test_gpu_transfer" --gtest_filter='*Small*:*Corrupt*'
step bench_encode_gpu bench.log "$BIN/bench_encode_gpu"
step bench_decode_gpu bench.log "$BIN/bench_decode_gpu"
step bench_append_gpu bench.log "$BIN/bench_append_gpu"
step bench_extend_gpu bench.log "$BIN/bench_extend_gpu"
step bench_transfer_gpu bench.log "$BIN/bench_transfer_gpu"
echo "gpu-check: $failed failed step(s); logs in $OUT"
exit "$failed"
