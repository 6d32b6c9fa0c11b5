#!/usr/bin/env bash
# stats_vs_probe.sh - how close `nnparity stats` comes to the memory bandwidth floor on a large
# F32 dump whose pages are all in the page cache. bwprobe reads the same bytes the same way
# (mapping, chunking, prefaulting, threads) and computes nothing, so probe_time / stats_time is
# the fraction of the floor that stats reaches (1.0 = as fast as reading the bytes). The target
# is >= 0.7. Both run alternately so drift (frequency, other load) hits both alike.
#
#   bench/stats_vs_probe.sh BUILD FILE     RUNS (default 5) and THREADS (default nproc) from env
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

build=${1:?usage: stats_vs_probe.sh BUILD FILE}
file=${2:?usage: stats_vs_probe.sh BUILD FILE}
runs=${RUNS:-5}
threads=${THREADS:-$(nproc)}

# Warm the page cache, then one untimed run of each (first-touch effects in either binary).
cat "$file" > /dev/null
"$build/bench/bwprobe" -j "$threads" "$file" > /dev/null
"$build/nnparity" stats -j "$threads" "$file" > /dev/null || [ $? -eq 1 ]

probe=() stats=()
for _ in $(seq "$runs"); do
    probe+=("$(time_cmd "$build/bench/bwprobe" -j "$threads" "$file")")
    stats+=("$(time_cmd "$build/nnparity" stats -j "$threads" "$file")")
done
p=$(median "${probe[@]}")
s=$(median "${stats[@]}")
bytes=$(stat -c %s "$file")
echo "stats_vs_probe: $(basename "$file"), $bytes bytes, $threads threads, median of $runs"
echo "  probe runs: ${probe[*]}"
echo "  stats runs: ${stats[*]}"
awk -v p="$p" -v s="$s" -v b="$bytes" 'BEGIN {
    printf "  bwprobe         %.3f s  (%.2f GB/s)\n", p, b / p / 1e9
    printf "  nnparity stats  %.3f s  (%.2f GB/s)\n", s, b / s / 1e9
    printf "  ratio probe/stats = %.2f  (target >= 0.70)\n", p / s }'
