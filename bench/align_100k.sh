#!/usr/bin/env bash
# align_100k.sh - automatic alignment of two captures of about 100,000 records each whose names
# differ (Hugging Face against GGUF-style names; 0.5% of the records missing and 0.5% added on
# the port's side): the time nnp__align and nnp__align_rules take together (target: about 1 s
# or less), and the fraction of the port's records aligned as the captures were built.
# Builds bench/align_100k.c against BUILD's static library (it calls the library's internal
# functions), which times RUNS runs in one process and reports their median.
#
#   bench/align_100k.sh BUILD       RUNS (default 5) and RECORDS (100000) from env
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: align_100k.sh BUILD}
runs=${RUNS:-5}
records=${RECORDS:-100000}
if [ ! -f "$build/libnnparity.a" ]; then
    echo "align_100k.sh: $build/libnnparity.a is missing; run make first" >&2
    exit 1
fi
mkdir -p "$build/bench"
# -O2 without -march, as the library's default build
"${CC:-cc}" -std=c11 -O2 -g -fopenmp-simd -Wall -Wextra -D_GNU_SOURCE -I"$here/../include" \
    -I"$here/../src" "$here/align_100k.c" "$build/libnnparity.a" -o "$build/bench/align_100k" \
    -ljansson -lz -lpthread -lm
"$build/bench/align_100k" "$records" "$runs"
