#!/usr/bin/env bash
# Fuzzes the plan reader for a bounded time.
#   tests/fuzz/run_fuzz.sh BUILD_DIR SECONDS
# BUILD_DIR must be configured with -Dfuzz=true (clang). Writes fresh seeds, keeps the growing
# corpus in BUILD_DIR/fuzz-plan-reader/corpus, and exits non-zero on any finding: crash,
# sanitizer report, uncaught exception, leak, timeout or out-of-memory.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 BUILD_DIR SECONDS" >&2
  exit 2
fi
build=$1
seconds=$2
here=$(cd "$(dirname "$0")" && pwd)
fuzzer=$build/tests/fuzz/fuzz_plan_reader
make_corpus=$build/tests/fuzz/make_plan_corpus
for exe in "$fuzzer" "$make_corpus"; do
  if [ ! -x "$exe" ]; then
    echo "$exe is missing: configure with -Dfuzz=true (CC=clang CXX=clang++) and build" >&2
    exit 2
  fi
done

work=$build/fuzz-plan-reader
seeds=$work/seeds
corpus=$work/corpus
artifacts=$work/artifacts
rm -rf "$seeds" "$artifacts"
mkdir -p "$seeds" "$corpus" "$artifacts"
"$make_corpus" "$seeds"

status=0
"$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1536 \
  -max_len=65536 -print_final_stats=1 -dict="$here/plan.dict" -artifact_prefix="$artifacts/" \
  "$corpus" "$seeds" || status=$?

if [ "$status" -ne 0 ] || [ -n "$(ls -A "$artifacts")" ]; then
  echo "fuzz_plan_reader: FINDINGS (exit status $status); reproducers in $artifacts:" >&2
  ls -l "$artifacts" >&2
  exit 1
fi
echo "fuzz_plan_reader: clean after $seconds s"
