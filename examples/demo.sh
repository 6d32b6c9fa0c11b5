#!/usr/bin/env bash
# demo.sh - what `make demo` shows: a small C engine records its layers into a dump, and
# nnparity lists it and finds where a NaN first appears in a buggy run.
set -euo pipefail
build=${1:-build}
out="$build/demo"
mkdir -p "$out"
"$build/examples/tiny_mlp" "$out/tiny_mlp.safetensors"
"$build/examples/tiny_mlp" "$out/tiny_mlp_bad_eps.safetensors" --bad-eps

run() { echo; echo "\$ $*"; "$@"; }
run "$build/nnparity" ls "$out/tiny_mlp.safetensors"
run "$build/nnparity" stats "$out/tiny_mlp.safetensors"
echo
echo "# The same engine with a negative LayerNorm epsilon:"
run "$build/nnparity" stats "$out/tiny_mlp_bad_eps.safetensors" 'out0' || true
echo
echo "Dumps written to $out/"
