#!/usr/bin/env bash
# diff_vs_probe.sh - how close `nnparity diff` of two large dumps comes to the memory-bandwidth
# floor, how it compares with a numpy script computing the same metrics, and how much memory it
# keeps, for F32, BF16 and F16 dumps whose pages are all in the page cache.
#
# Per dtype, two dumps of 8 tensors of TENSOR_MIB MiB (2 GiB a file by default) written by
# gen_dump: a reference and a port with a small known difference (bench/gen_dump.c says which). Timed alternately, RUNS times:
#   probe  bwprobe over the reference, then over the port: reading every byte of both files the
#          way the diff reads them (mapped, 2^20-element chunks, prefaulted, THREADS threads)
#   diff   nnparity diff -j THREADS REF PORT
#   kernel kernel_cached -j THREADS DTYPE: the compare kernel on pairs in the L1 cache
# and NUMPY_RUNS times (slow; 0 skips it) bench/diff_numpy.py REF PORT under /usr/bin/python3.
# Reported: probe/diff (target >= 0.70), numpy/diff (target >= 10), the diff's time per byte
# against F32's (target <= 1.3) and the peak resident size of each program. Beside them, the
# ceiling the compare kernel sets: a diff takes at least the longer of the kernel's time for its
# pairs and the probe's, so "best probe/diff" and the per-byte ratio's "at least" are what no
# way of reading the files could beat on this machine without a faster kernel.
#
#   bench/diff_vs_probe.sh BUILD DATA_DIR   RUNS (5), THREADS (nproc), NUMPY_RUNS (1),
#                                           DTYPES ("F32 BF16 F16"), TENSOR_MIB (256) from the
#                                           environment
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

build=${1:?usage: diff_vs_probe.sh BUILD DATA_DIR}
data=${2:?usage: diff_vs_probe.sh BUILD DATA_DIR}
runs=${RUNS:-5}
threads=${THREADS:-$(nproc)}
numpy_runs=${NUMPY_RUNS:-1}
dtypes=${DTYPES:-F32 BF16 F16}
mib=${TENSOR_MIB:-256}
if [ $((mib * 8 % 1024)) -eq 0 ]; then size="$((mib * 8 / 1024))g"; else size="$((mib * 8))m"; fi
python=/usr/bin/python3
mkdir -p "$build/bench"
# -O2 without -march, as the library's default build; internal.h for nnp__cmp_block
"${CC:-cc}" -std=c11 -O2 -g -fopenmp-simd -Wall -Wextra -D_GNU_SOURCE -I"$here/../include" \
    -I"$here/../src" "$here/kernel_cached.c" "$build/libnnparity.a" -o "$build/bench/kernel_cached" \
    -ljansson -lz -lpthread -lm

# Peak resident size (MiB) of a command, from the kernel's own count for its children.
peak_rss() {
    "$python" -c 'import resource, subprocess, sys
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)
print("%.0f" % (resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024))' "$@"
}

# "SECONDS MIB": wall time and peak resident size of one run (for the slow numpy peer).
time_and_rss() {
    "$python" -c 'import resource, subprocess, sys, time
t = time.monotonic()
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)
t = time.monotonic() - t
print("%.4f %.0f" % (t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024))' "$@"
}

probe_both() {
    "$build/bench/bwprobe" -j "$threads" "$1" && "$build/bench/bwprobe" -j "$threads" "$2"
}

# The reference and port of a dtype, written on first use (the 2 GiB F32 reference is the
# stats benchmark's file: gen_dump writes the same bytes for both).
files_for() {
    local d=$1 lower ref port
    lower=$(echo "$d" | tr 'A-Z' 'a-z')
    ref="$data/diff_${lower}_ref_${size}.safetensors"
    [ "$d" = F32 ] && [ "$size" = 2g ] && ref="$data/f32_2g.safetensors"
    port="$data/diff_${lower}_port_${size}.safetensors"
    [ -f "$ref" ] || "$build/bench/gen_dump" big "$ref" 8 "$mib" "$d" >&2
    [ -f "$port" ] || "$build/bench/gen_dump" big "$port" 8 "$mib" "$d" port >&2
    echo "$ref $port"
}

# Every dtype's timings first, then the numpy peer: its several GiB of arrays would push the
# next dtype's files out of the page cache and fragment memory before they are timed.
declare -A probe_t diff_t rss_diff bytes_of ref_of port_of numpy_t rss_numpy floor_t
for d in $dtypes; do
    read -r ref port < <(files_for "$d")
    ref_of[$d]=$ref port_of[$d]=$port
    bytes_of[$d]=$(($(stat -c %s "$ref") + $(stat -c %s "$port")))
    # Drop the two files from the page cache and read them back, then one untimed run of each:
    # how long ago and under what memory pressure a file was cached changes how fast its pages
    # map (by 20-40% here), so every dtype starts from the same state.
    for f in "$ref" "$port"; do dd if="$f" iflag=nocache count=0 status=none; done
    cat "$ref" "$port" > /dev/null
    probe_both "$ref" "$port" > /dev/null
    "$build/nnparity" diff -j "$threads" "$ref" "$port" > /dev/null || [ $? -eq 1 ]
    probe=() diff=() kernel=()
    for _ in $(seq "$runs"); do
        probe+=("$(time_cmd probe_both "$ref" "$port")")
        diff+=("$(time_cmd "$build/nnparity" diff -j "$threads" "$ref" "$port")")
        kernel+=("$("$build/bench/kernel_cached" -j "$threads" "$d" 1 | awk '{ print $2 }')")
    done
    rss_diff[$d]=$(peak_rss "$build/nnparity" diff -j "$threads" "$ref" "$port")
    probe_t[$d]=$(median "${probe[@]}")
    diff_t[$d]=$(median "${diff[@]}")
    echo "diff_vs_probe: $d, $(basename "$ref") vs $(basename "$port"), ${bytes_of[$d]} bytes," \
        "$threads threads, median of $runs"
    echo "  probe runs: ${probe[*]}"
    echo "  diff runs:  ${diff[*]}"
    echo "  kernel in cache runs (ns a pair): ${kernel[*]}"
    awk -v p="${probe_t[$d]}" -v t="${diff_t[$d]}" -v b="${bytes_of[$d]}" 'BEGIN {
        printf "  bwprobe (both files)  %.3f s  (%.2f GB/s)\n", p, b / p / 1e9
        printf "  nnparity diff         %.3f s  (%.2f GB/s)\n", t, b / t / 1e9 }'
    echo "  peak RSS of nnparity diff: ${rss_diff[$d]} MiB (target < 200)"
    echo "  ratio probe/diff = $(ratio "${probe_t[$d]}" "${diff_t[$d]}")  (target >= 0.70)"
    # The floor: the kernel's fastest cached time a pair for the pairs of one file (a lower
    # bound), or the probe's time where reading takes longer. Reading and comparing overlapping
    # perfectly, a diff could reach it; nothing can beat it.
    ns=$(printf '%s\n' "${kernel[@]}" | sort -g | head -n 1)
    elem_bytes=2
    [ "$d" = F32 ] && elem_bytes=4
    read -r kernel_s floor limit < <(awk -v ns="$ns" -v m="$mib" -v e="$elem_bytes" \
        -v p="${probe_t[$d]}" 'BEGIN { k = ns * 1e-9 * 8 * m * 1048576 / e
        printf "%.4f %.4f %s\n", k, (k > p ? k : p), (k > p ? "kernel" : "reading") }')
    floor_t[$d]=$floor
    echo "  compare kernel in cache: $ns ns a pair, $threads threads together ($kernel_s s for" \
        "the pairs; $limit is the limit); best probe/diff it allows $(ratio "${probe_t[$d]}" "${floor_t[$d]}")"
done
for d in $dtypes; do
    [ "$numpy_runs" -gt 0 ] || break
    numpy=() rss=0
    for _ in $(seq "$numpy_runs"); do
        read -r t m < <(time_and_rss "$python" "$here/diff_numpy.py" "${ref_of[$d]}" "${port_of[$d]}")
        numpy+=("$t")
        rss=$m
    done
    numpy_t[$d]=$(median "${numpy[@]}")
    rss_numpy[$d]=$rss
    echo "diff_numpy.py: $d, runs: ${numpy[*]} s, peak RSS $rss MiB;" \
        "ratio numpy/diff = $(ratio "${numpy_t[$d]}" "${diff_t[$d]}")  (target >= 10)"
done
echo "== diff summary"
for d in $dtypes; do
    line="$d: probe/diff $(ratio "${probe_t[$d]}" "${diff_t[$d]}") (target >= 0.70;"
    line="$line best this kernel allows $(ratio "${probe_t[$d]}" "${floor_t[$d]}"))"
    [ -n "${numpy_t[$d]:-}" ] &&
        line="$line, numpy/diff $(ratio "${numpy_t[$d]}" "${diff_t[$d]}") (target >= 10)"
    if [ "$d" != F32 ] && [ -n "${diff_t[F32]:-}" ]; then
        per_byte=$(awk -v t="${diff_t[$d]}" -v b="${bytes_of[$d]}" -v f="${diff_t[F32]}" \
            -v fb="${bytes_of[F32]}" 'BEGIN { printf "%.2f", (t / b) / (f / fb) }')
        # against the F32 diff as measured: a faster F32 diff would only raise the ratio
        least=$(awk -v t="${floor_t[$d]}" -v b="${bytes_of[$d]}" -v f="${diff_t[F32]}" \
            -v fb="${bytes_of[F32]}" 'BEGIN { printf "%.2f", (t / b) / (f / fb) }')
        line="$line, per byte vs F32 $per_byte (target <= 1.3;"
        line="$line at least $least with this kernel)"
    fi
    echo "$line, peak RSS ${rss_diff[$d]} MiB (target < 200)"
done
