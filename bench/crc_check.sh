#!/usr/bin/env bash
# crc_check.sh - what checking the CRC-32 of archive members costs. First the speed of the CRC
# itself (crc_speed: each implementation in GB/s, and one check pass over a mapped file); then
# `nnparity diff -j THREADS` of two 1 GiB torch checkpoints and of two 1 GiB npz archives (every
# stored member checked, inside the comparing pass) against the diff of the same tensors as
# safetensors (nothing to check), alternately, RUNS times each, all files in the page cache.
# Reported: each diff's median and the ratio .pt time / safetensors time (and .npz's). The
# safetensors peer has other data offsets (alignment), so crc_diff then times the check alone:
# nnp_diff_dumps of the .pt files (and the .npz files) in one process with members checked
# beforehand (none), with the check folded into the pass (as `nnparity diff` does it) and with
# a separate pass (nnp_dump_data's own check), alternately.
#
#   bash bench/crc_check.sh BUILD DATA_DIR     RUNS (7), THREADS (nproc) from the environment
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

build=${1:?usage: crc_check.sh BUILD DATA_DIR}
data=${2:?usage: crc_check.sh BUILD DATA_DIR}
runs=${RUNS:-7}
threads=${THREADS:-$(nproc)}
mkdir -p "$build/bench" "$data"
isal=()
[ -f /usr/include/isa-l/crc.h ] && isal=(-DWITH_ISAL -lisal) # a peer where it is installed
"${CC:-cc}" -std=c11 -O2 -g -fopenmp-simd -Wall -Wextra -D_GNU_SOURCE -I"$here/../include" \
    -I"$here/../src" "$here/crc_speed.c" "$build/libnnparity.a" -o "$build/bench/crc_speed" \
    -ljansson -lz -lpcre2-8 -lpthread -lm "${isal[@]}"
"${CC:-cc}" -std=c11 -O2 -g -Wall -Wextra -I"$here/../include" "$here/crc_diff.c" \
    "$build/libnnparity.a" -o "$build/bench/crc_diff" -ljansson -lz -lpcre2-8 -lpthread -lm

if [ ! -f "$data/zip_port.npz" ]; then
    echo "writing $data/zip_{ref,port}.{pt,npz} (4 GiB)..." >&2
    /usr/bin/python3 "$here/gen_zip.py" "$data"
fi
for side in ref port; do
    st="$data/zip_$side.safetensors"
    [ -f "$st" ] || "$build/nnparity" convert "$data/zip_$side.pt" "$st" > /dev/null
done

cat "$data"/zip_* > /dev/null
echo "crc_check: CRC-32 speed, one thread"
"$build/bench/crc_speed" "$data/zip_ref.pt"

declare -A times
kinds="safetensors pt npz"
for k in $kinds; do # one untimed run each
    "$build/nnparity" diff -j "$threads" "$data/zip_ref.$k" "$data/zip_port.$k" > /dev/null || [ $? -eq 1 ]
done
for _ in $(seq "$runs"); do
    for k in $kinds; do
        times[$k]+="$(time_cmd "$build/nnparity" diff -j "$threads" "$data/zip_ref.$k" \
            "$data/zip_port.$k") "
    done
done
echo "crc_check: nnparity diff -j $threads of two 1 GiB files (4 x 256 MiB F32), median of $runs"
for k in $kinds; do
    # shellcheck disable=SC2086
    m=$(median ${times[$k]})
    times[$k.median]=$m
    echo "  $k: $m s   (runs: ${times[$k]})"
done
echo "  ratio pt/safetensors = $(ratio "${times[pt.median]}" "${times[safetensors.median]}")," \
    "npz/safetensors = $(ratio "${times[npz.median]}" "${times[safetensors.median]}")"
for k in pt npz; do
    "$build/bench/crc_diff" "$data/zip_ref.$k" "$data/zip_port.$k" "$runs" "$threads"
done
