#!/bin/sh
# Runs every test kind and ends with one line "N passed, N failed":
# the C unit tests (cmocka, under ASan/UBSan) given as arguments, then the
# Busted specs (unit, jobs, end to end) under LuaJIT, then the fuzz targets
# named in FUZZ_TARGETS (if any) for FUZZ_SECONDS each, one test apiece.
# Usage: spec/run_all.sh [--c-only | --lua-only | --fuzz-only] [C test binaries...]
mode=all
case "${1:-}" in --c-only|--lua-only|--fuzz-only) mode=${1#--}; shift ;; esac
here=$(cd "$(dirname "$0")" && pwd)
passed=0
failed=0
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

if [ "$mode" = all ] || [ "$mode" = c-only ]; then
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

if [ "$mode" = all ] || [ "$mode" = lua-only ]; then
    # Every spec with the test driver on one worker, then the differential
    # and Spark-suite specs again on two (SPEC section 15: the same results
    # whatever the number of workers).
    for workers in 1 2; do
        out="$log/busted-$workers.tap"
        if [ "$workers" = 1 ]; then
            STREAMRUN_WORKERS=1 busted --output=TAP >"$out" 2>"$log/busted.err"
        else
            STREAMRUN_WORKERS=2 busted --output=TAP spec/jobs spec/unit/native_spec.lua \
                spec/unit/state_spark_spec.lua spec/unit/window_spark_spec.lua spec/unit/event_spark_spec.lua \
                spec/unit/state_property_spec.lua spec/unit/window_property_spec.lua \
                spec/unit/event_property_spec.lua >"$out" 2>"$log/busted.err"
        fi
        rc=$?
        # Pending specs (known bugs, each with its comment) are not passes.
        s=$(grep -c '^ok .*# SKIP' "$out")
        p=$(($(grep -c '^ok ' "$out") - s))
        f=$(grep -c '^not ok ' "$out")
        grep -A 30 '^not ok ' "$out" | grep -v '^ok '
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
            cat "$out" "$log/busted.err"; f=1   # busted itself failed (syntax error in a spec, ...)
        fi
        echo "busted (test driver on $workers worker(s)): $p passed, $f failed, $s pending"
        passed=$((passed + p)); failed=$((failed + f))
    done
fi

# Each fuzz target runs from its seeds (build/fuzz/seeds/<name less fuzz_>)
# into a fresh corpus, on tmpfs when there is one; it passes when it finds
# nothing. What it finds stays in build/fuzz/artifacts/ (rerun the target
# on that file to reproduce). Huge allocations fail instead of aborting, as
# on a host without overcommit; UBSan reports are fatal but for the known
# bugs of spec/fuzz/ubsan.supp.
if [ "$mode" = all ] || [ "$mode" = fuzz-only ]; then
    for t in ${FUZZ_TARGETS:-}; do
        name=$(basename "$t")
        dir=$(dirname "$t")
        corpus="$dir/corpus/$name"
        rm -rf "$corpus"
        mkdir -p "$corpus" "$dir/artifacts"
        tmp=${TMPDIR:-/tmp}
        if [ -d /dev/shm ] && [ -w /dev/shm ]; then tmp=/dev/shm; fi
        out="$log/$name.out"
        TMPDIR=$tmp \
        ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1:max_allocation_size_mb=2048 \
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:suppressions="$here/fuzz/ubsan.supp" \
            "$t" -max_total_time="${FUZZ_SECONDS:-10}" -seed="${FUZZ_SEED:-1}" -timeout=10 \
                -print_final_stats=1 -artifact_prefix="$dir/artifacts/$name-" \
                "$corpus" "$dir/seeds/${name#fuzz_}" >"$out" 2>&1
        rc=$?
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out")
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out")
        added=$(sed -n 's/^stat::new_units_added: *//p' "$out")
        if [ "$rc" -eq 0 ] && [ -n "$runs" ]; then
            echo "fuzz: $name: ${runs} runs in ${FUZZ_SECONDS:-10} s (${rate}/s, ${added} new inputs): passed"
            passed=$((passed + 1))
        else
            tail -n 60 "$out"
            echo "fuzz: $name: failed (exit $rc; the input is in $dir/artifacts/)"
            failed=$((failed + 1))
        fi
    done
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
