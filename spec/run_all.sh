#!/bin/sh
# Runs every test kind and ends with one line "N passed, N failed":
# the C unit tests (cmocka, under ASan/UBSan) given as arguments, then the
# Busted specs (unit, jobs, end to end) under LuaJIT.
# Usage: spec/run_all.sh [--c-only | --lua-only] [C test binaries...]
mode=all
case "${1:-}" in --c-only|--lua-only) mode=${1#--}; shift ;; esac
passed=0
failed=0
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

if [ "$mode" != lua-only ]; then
    for t in "$@"; do
        name=$(basename "$t")
        out="$log/$name.out"
        ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 "$t" >"$out" 2>&1
        rc=$?
        p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$out" | tail -1)
        f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$out" | tail -1)
        p=${p:-0}; f=${f:-0}
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi  # crash or sanitizer report
        if [ "$f" -ne 0 ]; then cat "$out"; fi
        echo "c: $name: $p passed, $f failed"
        passed=$((passed + p)); failed=$((failed + f))
    done
fi

if [ "$mode" != c-only ]; then
    out="$log/busted.tap"
    busted --output=TAP >"$out" 2>"$log/busted.err"
    rc=$?
    p=$(grep -c '^ok ' "$out")
    f=$(grep -c '^not ok ' "$out")
    grep -A 30 '^not ok ' "$out" | grep -v '^ok '
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        cat "$out" "$log/busted.err"; f=1   # busted itself failed (syntax error in a spec, ...)
    fi
    echo "busted: $p passed, $f failed"
    passed=$((passed + p)); failed=$((failed + f))
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
