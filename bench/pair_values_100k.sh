#!/usr/bin/env bash
# pair_values_100k.sh - pairing by evidence at scale: two captures of RECORDS (default 100,000)
# records whose names share nothing, paired from their stored fingerprints alone (identity
# classes, locality-sensitive candidates, the value chain, the structural gaps). Target: under
# 1 s. Builds bench/pair_values_100k.c against BUILD's static library (it calls the library's
# internal pairing), writes the captures into DIR once and reuses them.
#
#   bench/pair_values_100k.sh BUILD DIR       RUNS (default 5) and RECORDS from env
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: pair_values_100k.sh BUILD DIR}
dir=${2:?usage: pair_values_100k.sh BUILD DIR}
if [ ! -f "$build/libnnparity.a" ]; then
    echo "pair_values_100k.sh: $build/libnnparity.a is missing; run make first" >&2
    exit 1
fi
mkdir -p "$build/bench" "$dir"
"${CC:-cc}" -std=c11 -O2 -g -fopenmp-simd -Wall -Wextra -D_GNU_SOURCE -I"$here/../include" \
    -I"$here/../src" "$here/pair_values_100k.c" "$build/libnnparity.a" -o "$build/bench/pair_values_100k" \
    -ljansson -lz -lpcre2-8 -lpthread -lm
"$build/bench/pair_values_100k" "$dir" "${RECORDS:-100000}" "${RUNS:-5}"
