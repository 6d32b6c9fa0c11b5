#!/usr/bin/env bash
# run_tests.sh - runs every test suite and ends with one summary line, "check: N passed, N failed".
#   1. the C unit tests (cmocka), as built normally and under ASan+UBSan, and the threaded ones
#      under ThreadSanitizer;
#   2. the Python tests (pytest): CLI golden tests, interop with numpy and torch, exhaustive dtypes;
#   3. the CLI tests again against the sanitized CLI;
#   4. the sanitized CLI over hostile file systems (tests/fs_hostile.py, its short mode).
# Called by `make check` with BUILD, ASAN_BUILD, TSAN_BUILD and PYTHON set.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
ASAN_BUILD=${ASAN_BUILD:-build/asan}
TSAN_BUILD=${TSAN_BUILD:-build/tsan}
PYTHON=${PYTHON:-/usr/bin/python3}
export NNP_CONFORMANCE=${NNP_CONFORMANCE:-$(pwd)/tests/conformance}
export CMOCKA_MESSAGE_OUTPUT=stdout
# Leaks are failures; a sanitizer report ends the test binary with an error. Options already
# in the environment are kept, but these come after them, and the last setting of an option
# wins: no environment can turn leak checking off or a report into a pass.
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=1:abort_on_error=0:exitcode=86
# LeakSanitizer reads its own options after ASan's
export LSAN_OPTIONS=${LSAN_OPTIONS:+$LSAN_OPTIONS:}detect_leaks=1:exitcode=86
export UBSAN_OPTIONS=${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}print_stacktrace=1:halt_on_error=1:exitcode=87
# A data race is a failure too.
export TSAN_OPTIONS=${TSAN_OPTIONS:+$TSAN_OPTIONS:}halt_on_error=1:exitcode=88

passed=0
failed=0
failures=()
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

run_cmocka() { # binary label
    local bin=$1 label=$2 out="$log/$(basename "$1").$2.txt" p f rc
    # a hung test fails in minutes, not at CI's time limit
    timeout 600 "$bin" >"$out" 2>&1
    rc=$?
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$out" | tail -n1)
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$out" | tail -n1)
    p=${p:-0}
    f=${f:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1 # crashed, or a sanitizer stopped it, before cmocka could count
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$f" -ne 0 ]; then
        failures+=("$label $(basename "$bin")")
        cat "$out"
    fi
    printf '%-8s %-28s %3d passed, %d failed\n' "$label" "$(basename "$bin")" "$p" "$f"
}

run_pytest() { # label, pytest args...
    local label=$1 out="$log/pytest.$1.txt" line p f e
    shift
    timeout 1200 "$PYTHON" -m pytest -q -p no:cacheprovider "$@" >"$out" 2>&1
    line=$(grep -E '^(=+ )?[0-9]+ (passed|failed|error)' "$out" | tail -n1)
    p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+')
    f=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+')
    e=$(grep -oE '[0-9]+ errors?' <<<"$line" | grep -oE '[0-9]+')
    p=${p:-0}
    f=$(( ${f:-0} + ${e:-0} ))
    if [ -z "$line" ]; then
        f=1 # pytest itself failed to run
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$f" -ne 0 ]; then
        failures+=("pytest $label")
        cat "$out"
    fi
    printf '%-8s %-28s %3d passed, %d failed\n' "pytest" "$label" "$p" "$f"
}

run_plain() { # label, command...: a program whose last line is "NAME: N passed, N failed"
    local label=$1 out="$log/plain.$1.txt" line p f
    shift
    timeout 900 "$@" >"$out" 2>&1
    line=$(grep -E '^[a-z_]+: [0-9]+ passed, [0-9]+ failed$' "$out" | tail -n1)
    p=$(sed -E 's/.*: ([0-9]+) passed.*/\1/' <<<"$line")
    f=$(sed -E 's/.*, ([0-9]+) failed/\1/' <<<"$line")
    p=${p:-0}
    f=${f:-1} # no summary: it did not finish
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$f" -ne 0 ]; then
        failures+=("$label")
        cat "$out"
    fi
    printf '%-8s %-28s %3d passed, %d failed\n' "plain" "$label" "$p" "$f"
}

for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] && run_cmocka "$t" unit
done
for t in "$ASAN_BUILD"/tests/test_*; do
    [ -x "$t" ] && run_cmocka "$t" asan
done
for t in "$TSAN_BUILD"/tests/test_*; do
    [ -x "$t" ] && run_cmocka "$t" tsan
done

NNPARITY_BIN="$BUILD/nnparity" NNPARITY_LIB="$BUILD/libnnparity.so" \
    run_pytest all tests/py
NNPARITY_BIN="$ASAN_BUILD/nnparity" \
    run_pytest cli-asan tests/py -m cli
run_plain fs_hostile "$PYTHON" tests/fs_hostile.py --bin "$ASAN_BUILD/nnparity" \
    --lib "$BUILD/libnnparity.so"

if [ ${#failures[@]} -gt 0 ]; then
    echo "failed suites: ${failures[*]}"
fi
echo "check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
