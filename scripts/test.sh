#!/usr/bin/env bash
# The whole test suite, as CI runs it: release build with -Werror + tests, the same tests under
# AddressSanitizer + UndefinedBehaviorSanitizer, the C sample built against the installed
# library through pkg-config, and a bounded libFuzzer run of the plan reader.
# Usage: scripts/test.sh            (FUZZ_SECONDS=60 by default; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh --with-fuzz
source scripts/env.sh
jobs=$(nproc)
fuzz_seconds=${FUZZ_SECONDS:-60}

echo "== build (gcc, -Werror) and unit tests"
[[ -d build-test ]] || meson setup build-test -Dwerror=true -Dcuda=auto -Dprefix="$PWD/build-test/install" >/dev/null
ninja -C build-test -j "$jobs"
meson test -C build-test --print-errorlogs --num-processes "$jobs"

echo "== install + C sample through pkg-config"
meson install -C build-test --quiet
scripts/check-install.sh "$PWD/build-test/install"

# Each binding has its own test script (installs its toolchain if missing, builds against the
# freshly installed library, runs its tests and samples).
for t in bindings/*/test.sh; do
  [[ -e "$t" ]] || continue
  echo "== bindings: $t"
  bash "$t" "$PWD/build-test/install"
done

echo "== AddressSanitizer + UndefinedBehaviorSanitizer"
[[ -d build-asan ]] || meson setup build-asan -Dwerror=true -Dcuda=disabled -Dbench=false \
  -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug >/dev/null
ninja -C build-asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  meson test -C build-asan --print-errorlogs --num-processes "$jobs" --suite unit

if [[ "$fuzz_seconds" != 0 ]]; then
  echo "== libFuzzer: plan reader for ${fuzz_seconds}s"
  [[ -d build-fuzz ]] || CC=clang CXX=clang++ meson setup build-fuzz -Dfuzz=true -Dcuda=disabled \
    -Dtests=false -Dbench=false >/dev/null
  ninja -C build-fuzz -j "$jobs" tests/fuzz/fuzz_plan_reader tests/fuzz/make_plan_corpus
  tests/fuzz/run_fuzz.sh build-fuzz "$fuzz_seconds"
fi
echo "kvbits: all tests passed"
