#!/usr/bin/env bash
# run.sh - builds the benchmark helpers, writes the data files once (bench/data/, about 12 GB, and
# 16 GB more for the 8 GiB memory run) and runs every benchmark; see bench/README.md for what each
# measures.
#
#   bash bench/run.sh BUILD      (what `make bench` runs, BUILD being the library's build dir)
#   BIG=0 bash bench/run.sh BUILD    skips the diff of two 8 GiB dumps (peak memory only)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}
data=${BENCH_DATA:-$here/data}
cc=${CC:-cc}

for f in "$build/libnnparity.a" "$build/nnparity"; do
    [ -f "$f" ] || { echo "run.sh: $f is missing; run make first" >&2; exit 1; }
done
mkdir -p "$build/bench" "$data"
# -O2 without -march: the same code generation choices as the library's default build.
"$cc" -std=c11 -O2 -g -Wall -Wextra "$here/bwprobe.c" -o "$build/bench/bwprobe" -lpthread
"$cc" -std=c11 -O2 -g -Wall -Wextra -I"$here/../include" "$here/gen_dump.c" \
    "$build/libnnparity.a" -o "$build/bench/gen_dump" -ljansson -lz -lpthread -lm

"$cc" -std=c11 -O2 -g -Wall -Wextra -I"$here/../include" "$here/capture_c.c" \
    "$build/libnnparity.a" -o "$build/bench/capture_c" -ljansson -lz -lpthread -lm

big="$data/f32_2g.safetensors"
if [ ! -f "$big" ]; then
    echo "writing $big (8 x 256 MiB of F32)..."
    "$build/bench/gen_dump" big "$big" 8 256
fi

echo "== $(date -u +%F), $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
out1=$(bash "$here/stats_vs_probe.sh" "$build" "$big")
echo "$out1"
out2=$(bash "$here/open_100k.sh" "$build" "$data")
echo "$out2"
out3=$(bash "$here/capture_vs_dd.sh" "$build" "$data")
echo "$out3"
# diff: writes its dumps on first use (five more files of 2 GiB: F32 port, BF16 and F16 pairs)
out_diff=$(bash "$here/diff_vs_probe.sh" "$build" "$data")
echo "$out_diff"
out4=$(bash "$here/align_100k.sh" "$build")
echo "$out4"
out5=$(NNPARITY_LIB="$build/libnnparity.so" /usr/bin/python3 "$here/capture_torch.py")
echo "$out5"
# peak memory must not grow with the dump: the same diff on two 8 GiB dumps (F32 only, no numpy)
out6=""
if [ "${BIG:-1}" != 0 ]; then
    out6=$(RUNS=3 NUMPY_RUNS=0 DTYPES=F32 TENSOR_MIB=1024 bash "$here/diff_vs_probe.sh" "$build" "$data")
    echo "$out6"
fi
echo "== summary"
echo "$out1" | grep 'ratio probe/stats' | sed 's/^ */stats vs bandwidth probe: /'
echo "$out2" | grep 'with metadata' | sed 's/^ */open 100k tensors: /'
echo "$out2" | grep 'plain file' | sed 's/^ */open 100k tensors: /'
echo "$out2" | grep -E 'against a copy|open \+ match' | sed 's/^ */open + match 100k: /'
echo "$out3" | grep 'ratio dd/capture' | sed 's/^ */C capture vs dd: /'
echo "$out_diff" | sed -n '/^== diff summary/,$p' | tail -n +2 | sed 's/^/diff /'
echo "$out4" | grep -E '^  (total|aligned)' | sed 's/^ */align 100k x 100k: /'
echo "$out5" | grep -E '^ratio' | sed 's/^ */PyTorch capture: /'
if [ -n "$out6" ]; then
    echo "$out6" | grep -E 'peak RSS|ratio probe' | sed 's/^ */diff 2 x 8 GiB: /'
fi
