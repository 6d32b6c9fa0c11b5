#!/usr/bin/env bash
# open_100k.sh - the cost of opening a dump with 100,000 small tensors, as a long capture leaves:
# `nnparity ls` (open, validate the whole header, apply provenance, order, print) on
#   - a dump written by nnparity's writer, whose __metadata__ carries a provenance entry per
#     tensor (module, role, call, type, seq) that must be parsed and applied, and
#   - a plain file laid out as the reference writer writes it, without metadata (the peer).
# A third figure is Python's json.loads of the plain header (interpreter start included): the
# floor a reference-style reader in Python pays before it has validated anything.
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
