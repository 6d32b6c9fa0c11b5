#!/usr/bin/env bash
# demo.sh - what `make demo` shows: the bundled example (examples/vit/README.md), torchvision's
# VisionTransformer against its C port with one bug planted (a tanh-approximated GELU in block
# 2's MLP). The reference records every module through the PyTorch bridge; `nnparity ls` lists
# that dump; `nnparity run` runs the reference and the port, the port again on the reference's
# inputs, and names the layer whose error it is: the first divergence, its own error, and the
# layers after it that only inherit it. Ends with the path of the HTML report.
#
#   bash examples/demo.sh [BUILD]     BUILD: the build folder, relative to the repository root
#
# Also writes tiny_mlp's two dumps that README.md's tour reads. Exits 0 when the demo worked
# (`nnparity run` itself exits 1 here: it finds the bug, which is what it is for).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
python=${PYTHON:-/usr/bin/python3}
out="$build/demo"
bug=gelu-tanh
mkdir -p "$out"
# reference.py's bridge loads this build's library, not build/'s
export NNPARITY_LIB="$PWD/$build/libnnparity.so"
unset NNPARITY_CAPTURE NNPARITY_INJECT NNPARITY_RULES VIT_PORT_BUG

# the dumps of README.md's tour: a small C engine, and the same with a negative LayerNorm epsilon
"$build/examples/tiny_mlp" "$out/tiny_mlp.safetensors"
"$build/examples/tiny_mlp" "$out/tiny_mlp_bad_eps.safetensors" --bad-eps

# show a command before running it: one argument per line, the lines joined with "\"
show() {
    local prefix='$ '
    while [ $# -gt 1 ]; do echo "$prefix$1 \\"; prefix='      '; shift; done
    echo "$prefix$1"
}

echo "# The reference: torchvision's VisionTransformer (examples/vit/reference.py), every module"
echo "# recorded through the PyTorch bridge; it also exports its weights for the C port."
show "$python examples/vit/reference.py --weights $out/vit_weights.safetensors" \
     "--capture $out/vit_ref.safetensors"
"$python" examples/vit/reference.py --weights "$out/vit_weights.safetensors" \
    --capture "$out/vit_ref.safetensors"
show "$build/nnparity ls $out/vit_ref.safetensors | head -n 9"
listing=$("$build/nnparity" ls "$out/vit_ref.safetensors")
head -n 9 <<<"$listing"
echo "   ..."

echo
echo "# The port (examples/vit_port.c) with --bug $bug: block 2's GELU uses the tanh"
echo "# approximation. Every layer after it fails a plain diff; \`nnparity run\` runs the port"
echo "# again on the reference's inputs and tells the layer's own error from the inherited one."
port="$build/examples/vit_port $out/vit_weights.safetensors --bug $bug"
show "$build/nnparity run --ref '$python examples/vit/reference.py'" "--port '$port'" \
     "--rules examples/vit/vit.rules --out $out/vit_run"
# The commands' own output (their logits) is kept in $out/vit_run/*.stderr.
status=0
"$build/nnparity" run --ref "$python examples/vit/reference.py" --port "$port" \
    --rules examples/vit/vit.rules --out "$out/vit_run" 2>"$out/vit_run.log" || status=$?
if [ "$status" -ne 1 ]; then
    cat "$out/vit_run.log" >&2
    echo "demo: nnparity run exited with status $status, not 1 (the bug found)" >&2
    exit 1
fi

echo
echo "HTML report: $out/vit_run/report.html"
