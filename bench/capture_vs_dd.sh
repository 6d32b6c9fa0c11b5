#!/usr/bin/env bash
# capture_vs_dd.sh - C capture write throughput against dd writing the same bytes, in the same
# block size, to the same file system (target: capture >= 0.7 of dd). Neither syncs; both write
# through the page cache, which is what a capture does. Runs alternate so drift hits both alike.
#
#   bench/capture_vs_dd.sh BUILD DATA_DIR     RUNS (default 5), COUNT (256) and MIB (4) from env
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
build=${1:?usage: capture_vs_dd.sh BUILD DATA_DIR}
data=${2:?usage: capture_vs_dd.sh BUILD DATA_DIR}
runs=${RUNS:-5}
count=${COUNT:-256}
mib=${MIB:-4}
out="$data/capture_c.safetensors"
ddout="$data/dd.bin"

cap=() dd_=()
for _ in $(seq "$runs"); do
    rm -f "$out" "$ddout"
    cap+=("$(time_cmd "$build/bench/capture_c" "$out" "$count" "$mib")")
    rm -f "$out" "$ddout"
    dd_+=("$(time_cmd dd if=/dev/zero of="$ddout" bs="${mib}M" count="$count" status=none)")
done
rm -f "$out" "$ddout"
c=$(median "${cap[@]}")
d=$(median "${dd_[@]}")
echo "capture_vs_dd: $count x $mib MiB float32, median of $runs"
echo "  capture runs: ${cap[*]}"
echo "  dd runs:      ${dd_[*]}"
echo "  nnp_tap capture  $c s"
echo "  dd               $d s"
echo "  ratio dd/capture = $(ratio "$d" "$c")  (target >= 0.70)"
