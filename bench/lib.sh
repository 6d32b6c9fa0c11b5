# lib.sh - helpers the benchmark scripts share (sourced, not run): wall-clock timing of a command
# and the median of a list of times.

# Seconds (wall clock) that "$@" takes, stdout discarded. A non-zero exit other than 1 (stats'
# "found a NaN/Inf") is a failure.
time_cmd() {
    local t0 t1 rc=0
    t0=$EPOCHREALTIME
    "$@" > /dev/null || rc=$?
    t1=$EPOCHREALTIME
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then
        echo "benchmark command failed ($rc): $*" >&2
        return 1
    fi
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f\n", b - a }'
}

# The median of the numbers given as arguments.
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) printf "%.4f\n", v[(NR + 1) / 2]; else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# a / b to two decimals.
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f\n", a / b }'
}
