#!/bin/sh
# valgrind-tests.sh <build-dir> -- memcheck every test, including each
# Criterion worker process (--trace-children): fails if any process reports
# an error or a leak, or if a test fails. Criterion's runner exit code
# ignores errors in workers, so every log is read.
set -u
build=${1:?usage: scripts/valgrind-tests.sh <build-dir>}
logs=$(mktemp -d)
status=0
for bin in "$build"/tests/test_*; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin")
    mkdir -p "$logs/$name"
    # not the system's programs a test runs (test_codegen compiles the
    # code it generates with cc: the compiler is not ours to check)
    valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect,possible \
        --trace-children=yes --trace-children-skip='/bin/*,/usr/bin/*,/usr/lib/gcc/*,/usr/libexec/*' \
        --log-file="$logs/$name/vg.%p.log" "$bin" --jobs 1 >"$logs/$name/out.txt" 2>&1
    rc=$?
    # a process that exec'd a skipped program leaves a log without a summary
    bad=$(grep -l "ERROR SUMMARY" "$logs/$name"/vg.*.log | xargs -r grep -L "ERROR SUMMARY: 0 errors")
    n=$(ls "$logs/$name"/vg.*.log | wc -l)
    if [ -n "$bad" ] || [ $rc -ne 0 ]; then
        echo "FAIL $name (runner rc=$rc); valgrind reports in:"
        for f in $bad; do echo "  $f"; grep -A20 "ERROR SUMMARY\|definitely lost\|Invalid" "$f" | head -40; done
        tail -5 "$logs/$name/out.txt"
        status=1
    else
        echo "ok   $name ($n processes clean)"
    fi
done
[ $status -eq 0 ] && rm -rf "$logs"
exit $status
