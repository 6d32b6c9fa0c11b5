#!/usr/bin/env bash
# open_100k.sh - the cost of opening a dump with 100,000 small tensors, as a long capture leaves:
# `nnparity ls` (open, validate the whole header, apply provenance, order, print) on
#   - a dump written by nnparity's writer, whose __metadata__ carries a provenance entry per
#     tensor (module, role, call, type, seq) that must be parsed and applied, and
#   - a plain file laid out as the reference writer writes it, without metadata (the peer).
# A third figure is Python's json.loads of the plain header (interpreter start included): the
# floor a reference-style reader in Python pays before it has validated anything. Last, the
# two files are each opened beside a copy of themselves and paired (bench/match_100k.c): the
# open + match that a diff of two long captures pays before and besides reading the data.
#
#   bench/open_100k.sh BUILD DATA_DIR      RUNS (default 5) from env
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

build=${1:?usage: open_100k.sh BUILD DATA_DIR}
data=${2:?usage: open_100k.sh BUILD DATA_DIR}
runs=${RUNS:-5}
python=${PYTHON:-/usr/bin/python3}
count=100000

meta="$data/meta_100k.safetensors"
plain="$data/plain_100k.safetensors"
mkdir -p "$data"
[ -f "$meta" ] || "$build/bench/gen_dump" many "$meta" "$count"
[ -f "$plain" ] || "$python" "$here/gen_plain.py" "$plain" "$count"

pyjson='import json, struct, sys
f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]; json.loads(f.read(n))'

cat "$meta" "$plain" > /dev/null
"$build/nnparity" ls "$meta" > /dev/null
"$build/nnparity" ls "$plain" > /dev/null
tm=() tp=() tj=()
for _ in $(seq "$runs"); do
    tm+=("$(time_cmd "$build/nnparity" ls "$meta")")
    tp+=("$(time_cmd "$build/nnparity" ls "$plain")")
    tj+=("$(time_cmd "$python" -c "$pyjson" "$plain")")
done
m=$(median "${tm[@]}")
p=$(median "${tp[@]}")
j=$(median "${tj[@]}")
echo "open_100k: $count tensors, median of $runs"
echo "  ls, nnparity metadata:  ${tm[*]}"
echo "  ls, plain:              ${tp[*]}"
echo "  python json.loads:      ${tj[*]}"
printf '  nnparity ls, with metadata  %.3f s  (%.2f x plain)\n' "$m" "$(ratio "$m" "$p")"
printf '  nnparity ls, plain file     %.3f s\n' "$p"
printf '  python json.loads (plain)   %.3f s  (plain ls = %.2f x this)\n' "$j" "$(ratio "$p" "$j")"

# Opening two such dumps and pairing them, as `nnparity diff` does before and besides reading
# the data (match_100k.c; target: under 0.5 s). The port is a copy of the reference, so every
# record pairs by name and nothing is aligned.
"${CC:-cc}" -std=c11 -O2 -g -Wall -Wextra -D_GNU_SOURCE -I"$here/../include" \
    "$here/match_100k.c" "$build/libnnparity.a" -o "$build/bench/match_100k" \
    -ljansson -lz -lpthread -lm
for f in "$meta" "$plain"; do
    copy="${f%.safetensors}_copy.safetensors"
    [ -f "$copy" ] || { cp "$f" "$copy.partial" && mv "$copy.partial" "$copy"; }
    cat "$copy" > /dev/null
    echo "  $(basename "$f") against a copy of itself:"
    "$build/bench/match_100k" "$f" "$copy" "$runs" | tail -n +2
done
