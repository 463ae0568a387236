#!/usr/bin/env bash
# The Python binding against an installed kvbits: installs the package with pip into a temporary
# folder (as a user would; from the source folder when pip or setuptools is missing), runs the
# unit tests (test_hf.py skips without torch and transformers) and the sample.
# Usage: bindings/python/test.sh PREFIX
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$here/setup-env.sh" "$1"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unset KVBITS_LIBRARY  # found through pkg-config, as a user's would be

# Building offline needs pip, setuptools >= 61 and a bdist_wheel (setuptools >= 70.1 or `wheel`).
can_build='import importlib.util as u, setuptools, sys
v = tuple(int(x) for x in setuptools.__version__.split(".")[:2])
sys.exit(not (v >= (61, 0) and (v >= (70, 1) or u.find_spec("wheel"))))'
if python3 -m pip --version >/dev/null 2>&1 && python3 -c "$can_build" 2>/dev/null; then
  cp -r "$here" "$work/src"  # pip builds in the folder it is given: keep the source tree clean
  python3 -m pip install --quiet --no-deps --no-build-isolation --no-index --target "$work/site" "$work/src"
  export PYTHONPATH="$work/site"
else
  echo "note: no offline pip build here (pip, setuptools >= 61, wheel); testing the package from its source folder"
  export PYTHONPATH="$here"
fi

cd "$work"  # so `import kvbits` is the installed one
python3 -c 'import kvbits; print("kvbits", kvbits.library_version(), "from", kvbits.library_path(), "; package", kvbits.__file__)'
python3 -m unittest discover -s "$here/tests" -t "$here/tests" -v
out=$(python3 "$root/samples/python/decode_demo.py")
echo "$out"
grep -q "plan: 2 layers, 4 query heads, 2 KV heads, head_dim 64" <<<"$out"
grep -q "cache: 2 sequences, 29 tokens" <<<"$out"
# The sample again on a plan file (the cross-language fixture's plan).
python3 "$root/bindings/crosslang/make_fixture.py" "$work/fixture"
out=$(python3 "$root/samples/python/decode_demo.py" "$work/fixture/plan.kvbplan")
echo "$out"
grep -q "plan: 2 layers, 8 query heads, 4 KV heads, head_dim 64; 3.00 key bits, 3 value bits" <<<"$out"
echo "bindings/python: OK"
