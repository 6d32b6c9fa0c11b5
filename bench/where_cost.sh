#!/usr/bin/env bash
# where_cost.sh - what profiles and hints add to `diff` of two large F32 dumps whose every pair
# fails (docs/diff.md, "Where and hints"; target: at most 15% more). Builds bench/where_cost.c
# against BUILD's static library.
#
#   bench/where_cost.sh BUILD DATA_DIR      COUNT (64: two 1 GiB dumps), ELEMS (4194304), RUNS (5)
#                                           from env
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: where_cost.sh BUILD DATA_DIR}
data=${2:?usage: where_cost.sh BUILD DATA_DIR}
if [ ! -f "$build/libnnparity.a" ]; then
    echo "where_cost.sh: $build/libnnparity.a is missing; run make first" >&2
    exit 1
fi
mkdir -p "$build/bench" "$data"
"${CC:-cc}" -std=c11 -O2 -g -Wall -Wextra -D_GNU_SOURCE -I"$here/../include" \
    "$here/where_cost.c" "$build/libnnparity.a" -o "$build/bench/where_cost" \
    -ljansson -lz -lpcre2-8 -lpthread -lm
"$build/bench/where_cost" "$data" "${COUNT:-64}" "${ELEMS:-4194304}" "${RUNS:-5}"
