#!/usr/bin/env bash
# scale_mpi.sh - times `nnparity diff` of two 1 GiB dumps (4 x 256 MiB of F32, the port with a
# known small difference) in one process and shared among 1, 2, ... MPI processes on this
# machine (docs/scale.md). Each process runs one thread, so that process counts compare like
# for like; the page cache is warm (a first run reads the files in, untimed).
#
#   bash bench/scale_mpi.sh BUILD [PROCS...]     (default PROCS: 1 2)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
build=${1:-build}
shift || true
procs=("$@")
[ ${#procs[@]} -gt 0 ] || procs=(1 2)
data=${BENCH_DATA:-$here/data}
cc=${CC:-cc}
runs=${RUNS:-5}

for f in "$build/libnnparity.a" "$build/nnparity" "$build/libnnparity_mpi.so"; do
    [ -f "$f" ] || { echo "scale_mpi.sh: $f is missing; run make (with mpicc installed)" >&2; exit 1; }
done
command -v mpirun > /dev/null || { echo "scale_mpi.sh: mpirun is not installed" >&2; exit 1; }
mkdir -p "$build/bench" "$data"
"$cc" -std=c11 -O2 -g -Wall -Wextra -I"$here/../include" "$here/gen_dump.c" \
    "$build/libnnparity.a" -o "$build/bench/gen_dump" -ljansson -lz -lpthread -lm
ref="$data/scale_ref.safetensors" port="$data/scale_port.safetensors"
[ -f "$ref" ] || "$build/bench/gen_dump" big "$ref" 4 256
[ -f "$port" ] || "$build/bench/gen_dump" big "$port" 4 256 F32 port
# 1 MiB dumps: what a distributed diff costs beyond the comparing (MPI's start and end)
tiny_ref="$data/scale_tiny_ref.safetensors" tiny_port="$data/scale_tiny_port.safetensors"
[ -f "$tiny_ref" ] || "$build/bench/gen_dump" big "$tiny_ref" 1 1
[ -f "$tiny_port" ] || "$build/bench/gen_dump" big "$tiny_port" 1 1 F32 port

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
one() { "$build/nnparity" diff -j "$1" "$ref" "$port"; }
many() { mpirun --oversubscribe -np "$1" "$build/nnparity" diff --mpi -j 1 "${2:-$ref}" "${3:-$port}"; }
one 1 > /dev/null || true # reads the files into the page cache

report() { # label, command...
    local label=$1 t=()
    shift
    for _ in $(seq "$runs"); do t+=("$(time_cmd "$@")"); done
    printf '%-34s %8.3f s (median of %d)\n' "$label" "$(median "${t[@]}")" "$runs"
}
echo "nnparity diff, 2 x 1 GiB of F32, warm page cache, $(nproc) CPUs"
report "one process, 1 thread" one 1
report "one process, $(nproc) threads" one "$(nproc)"
for n in "${procs[@]}"; do
    report "mpirun -np $n --mpi, 1 thread each" many "$n"
    report "  the same on 1 MiB dumps (start-up)" many "$n" "$tiny_ref" "$tiny_port"
done
