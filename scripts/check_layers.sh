#!/usr/bin/env bash
# check_layers.sh LAYER... - fails when a file of the library includes a layer above its own.
# The layers are given lowest first (the Makefile's LAYERS). A file in src/<layer>/ may include
# the public header, its own layer's headers and those of the layers before it; never
# src/internal.h (every layer at once, for tests only). The CLI (cli/) sees the public header
# and its own headers only: what a result depends on is a library call.
set -u
cd "$(dirname "$0")/.."
layers=("$@")
declare -A rank
for i in "${!layers[@]}"; do rank[${layers[$i]}]=$i; done

bad=0
complain() { echo "check-layers: $1" >&2; bad=1; }
# "LINE:HEADER" for each #include "HEADER" of a file
includes() {
    grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$1" | sed 's/^\([0-9]*\):[^"]*"\([^"]*\)".*/\1:\2/'
}

for dir in src/*/; do
    l=$(basename "$dir")
    [ "$l" = mpi ] && continue # the MPI plugin is a client of the public API, built apart
    [ -n "${rank[$l]+x}" ] || complain "src/$l/ is not a layer the Makefile lists (LAYERS)"
done

while IFS= read -r f; do
    l=$(cut -d/ -f2 <<<"$f")
    [ -n "${rank[$l]+x}" ] || continue
    while IFS=: read -r line inc; do
        target=${inc%%/*}
        if [ "$inc" = internal.h ]; then
            complain "$f:$line: includes internal.h (every layer); include the header of its own layer"
        elif [ "$target" != "$inc" ] && [ -n "${rank[$target]+x}" ] &&
             [ "${rank[$target]}" -gt "${rank[$l]}" ]; then
            complain "$f:$line: the $l layer includes \"$inc\" of the $target layer above it"
        elif [ "$target" = "$inc" ] && [ "$inc" != nnparity.h ]; then
            complain "$f:$line: includes \"$inc\" without its layer's directory"
        fi
    done < <(includes "$f")
done < <(find src -mindepth 2 -name '*.[ch]' | sort)

while IFS= read -r f; do
    while IFS=: read -r line inc; do
        [ "$inc" = nnparity.h ] && continue
        if [[ "$inc" == *..* ]] || { [ ! -e "$(dirname "$f")/$inc" ] && [ ! -e "cli/$inc" ]; }; then
            complain "$f:$line: the CLI includes \"$inc\", which is neither the public header nor one of its own"
        fi
    done < <(includes "$f")
done < <(find cli -name '*.[ch]' | sort)

[ "$bad" -eq 0 ] && echo "check-layers: every include goes down the layers (${layers[*]})"
exit "$bad"
