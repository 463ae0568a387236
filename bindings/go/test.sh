#!/usr/bin/env bash
# Builds and tests the Go binding against an installed kvbits, offline: go vet, gofmt, the
# unit tests (again under the race detector where the toolchain has it), the crosslang
# command, and samples/go, whose output must equal samples/c/decode_demo.c's line for line.
# Usage: bindings/go/test.sh PREFIX     (PREFIX: where `meson install` put kvbits)
set -euo pipefail
[[ $# -eq 1 ]] || { echo "usage: $0 PREFIX" >&2; exit 2; }
prefix=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

# The toolchain: Debian 12's Go (1.19), a C compiler for cgo, pkg-config.
missing=()
command -v go >/dev/null 2>&1 || missing+=(golang-go)
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
if ((${#missing[@]})); then
  echo "bindings/go: installing missing Debian packages: ${missing[*]}"
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

pc=$(find "$prefix" -name kvbits.pc | head -n 1)
lib=$(find "$prefix" -name 'libkvbits.so' | head -n 1)
[[ -n "$pc" && -n "$lib" ]] || { echo "bindings/go: no kvbits.pc / libkvbits.so under $prefix" >&2; exit 1; }
export PKG_CONFIG_PATH="$(dirname "$pc")" LD_LIBRARY_PATH="$(dirname "$lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# Offline and self-contained: no module proxy, no toolchain download, caches in a temp dir.
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local GOWORK=off GOSUMDB=off CGO_ENABLED=1 \
  GOCACHE="$work/cache" GOPATH="$work/gopath" GOTMPDIR="$work"
go version

echo "== bindings/go: gofmt, vet, tests"
cd "$here"
unformatted=$(gofmt -l . "$root/samples/go")
[[ -z "$unformatted" ]] || { echo "bindings/go: not gofmt-clean: $unformatted" >&2; exit 1; }
go vet ./...
go test -count=1 ./...
# The strict cgo pointer checks: no Go pointer may reach C inside memory passed to it.
GODEBUG=cgocheck=2 go test -count=1 ./...
case "$(go env GOOS)/$(go env GOARCH)" in
  linux/amd64 | linux/arm64)
    echo "== bindings/go: tests under the race detector"
    go test -race -count=1 ./... ;;
  *) echo "bindings/go: note: no race detector on $(go env GOOS)/$(go env GOARCH); skipped" ;;
esac
go build -o "$work/kvbits-crosslang" ./cmd/kvbits-crosslang

echo "== samples/go: the same output as samples/c/decode_demo.c"
(cd "$root/samples/go" && go vet ./... && go build -o "$work/decode_demo_go" .)
cc -std=c99 -Wall -Wextra -Werror "$root/samples/c/decode_demo.c" $(pkg-config --cflags --libs kvbits) \
  -o "$work/decode_demo_c"
"$work/decode_demo_go" | tee "$work/go.txt"
"$work/decode_demo_c" >"$work/c.txt"
diff "$work/c.txt" "$work/go.txt"
grep -q "cache: 2 sequences, 29 tokens" "$work/go.txt"
if [[ -x "$prefix/bin/kvbits" && -x "$prefix/bin/kvbits-llama2c" ]]; then
  # A plan made by the CLI from the bundled model's activations, loaded by both demos.
  "$prefix/bin/kvbits-llama2c" capture --model "$root/data/stories260K/stories260K.bin" \
    --tokenizer "$root/data/stories260K/tok512.bin" --sequences 2 --tokens 64 --seed 3 \
    --out "$work/acts.safetensors" >/dev/null
  "$prefix/bin/kvbits" calibrate --dump "$work/acts.safetensors" --k-bits 3 --v-bits 3 \
    --out "$work/plan.kvbplan" --date 2026-01-01T00:00:00Z --quiet
  "$work/decode_demo_go" "$work/plan.kvbplan" | tee "$work/go.txt"
  "$work/decode_demo_c" "$work/plan.kvbplan" >"$work/c.txt"
  diff "$work/c.txt" "$work/go.txt"
  grep -q "plan: 5 layers, 8 query heads, 4 KV heads, head_dim 8" "$work/go.txt"
else
  echo "bindings/go: note: no kvbits CLI under $prefix/bin; the plan-file run is skipped"
fi
echo "bindings/go: OK"
