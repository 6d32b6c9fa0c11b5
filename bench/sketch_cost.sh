#!/usr/bin/env bash
# sketch_cost.sh - what records' fingerprints cost (docs/sketch.md): the share of a C capture's
# time that the writer's sketching takes, with many small records and with few large ones
# (each timed against the same capture with NNPARITY_SKETCH=0, alternately, target < 5%),
# and decoding the stored sketches of two captures of 100,000 records (target well under
# 1 s). Builds bench/sketch_cost.c against BUILD's static library (it calls the kernel for
# bench/sketch_torch.py).
#
#   bench/sketch_cost.sh BUILD DATA_DIR      RUNS (default 7) from env
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: sketch_cost.sh BUILD DATA_DIR}
data=${2:?usage: sketch_cost.sh BUILD DATA_DIR}
runs=${RUNS:-7}
if [ ! -f "$build/libnnparity.a" ]; then
    echo "sketch_cost.sh: $build/libnnparity.a is missing; run make first" >&2
    exit 1
fi
mkdir -p "$build/bench" "$data"
# -O2 without -march, as the library's default build
"${CC:-cc}" -std=c11 -O2 -g -fopenmp-simd -Wall -Wextra -D_GNU_SOURCE -I"$here/../include" \
    -I"$here/../src" "$here/sketch_cost.c" "$build/libnnparity.a" -o "$build/bench/sketch_cost" \
    -ljansson -lz -lpcre2-8 -lpthread -lm
"${CC:-cc}" -std=c11 -O2 -g -Wall -Wextra -I"$here/../include" "$here/gen_dump.c" \
    "$build/libnnparity.a" -o "$build/bench/gen_dump" -ljansson -lz -lpcre2-8 -lpthread -lm

"$build/bench/sketch_cost" capture "$data/sketch_small.safetensors" 20000 1024 "$runs"
"$build/bench/sketch_cost" capture "$data/sketch_large.safetensors" 64 1048576 "$runs"
# two captures of 100,000 records, written afresh: a file from an older writer has no sketches
"$build/bench/gen_dump" many "$data/sketch_100k_a.safetensors" 100000
"$build/bench/gen_dump" many "$data/sketch_100k_b.safetensors" 100000
"$build/bench/sketch_cost" decode "$data/sketch_100k_a.safetensors" \
    "$data/sketch_100k_b.safetensors" "$runs"
rm -f "$data"/sketch_100k_[ab].safetensors
