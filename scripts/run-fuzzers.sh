#!/bin/sh
# run-fuzzers.sh [--merge] [--build-dir DIR] [--jobs N] [SECONDS]
#
# Builds the libFuzzer harnesses of tests/fuzz with clang (-DAD_FUZZ=ON:
# the libraries instrumented too, ASan + UBSan) in build-fuzz, then runs
# every harness the build made (tests/fuzz/fuzz_*) for SECONDS (default:
# $FUZZ_SECONDS, else 60) on a copy of its seed corpus
# tests/fuzz/corpus/<harness> (or <harness without "fuzz_">), so the
# committed corpus is never written to. Prints each harness's executions per second and fails
# (exit 1) if any harness finds a crash, an invariant violation, a leak, a
# timeout or an out-of-memory; the input that did it is copied to
# tests/fuzz/crashes/ (not committed) and the log's tail is printed.
#
#   --merge          afterwards, merge what the runs found into the
#                    committed corpus (libFuzzer -merge=1 keeps only inputs
#                    that add coverage); review and commit it yourself
#   --build-dir DIR  build there instead of build-fuzz
#   --jobs N         run N processes per harness (libFuzzer -jobs/-workers)
#
# Reproduce a crash:   build-fuzz/tests/fuzz/<harness> tests/fuzz/crashes/<file>
# Narrate an API one:  FUZZ_API_TRACE=1 build-fuzz/tests/fuzz/fuzz_api <file>
# See docs/reliability.md.
set -u
cd "$(dirname "$0")/.."

merge=0
build=build-fuzz
jobs=1
seconds=${FUZZ_SECONDS:-60}
while [ $# -gt 0 ]; do
    case "$1" in
    --merge) merge=1 ;;
    --build-dir) shift; build=${1:?--build-dir needs a directory} ;;
    --jobs) shift; jobs=${1:?--jobs needs a number} ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *[!0-9]*|'') echo "run-fuzzers.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    *) seconds=$1 ;;
    esac
    shift
done

cc=${CC:-clang}
if ! command -v "$cc" >/dev/null 2>&1; then
    echo "run-fuzzers.sh: $cc not found; libFuzzer needs clang (apt-get install clang)" >&2
    exit 2
fi

echo "== building the fuzzers with $cc in $build"
CC=$cc cmake -S . -B "$build" -DAD_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DAD_BUILD_TESTS=OFF -DAD_BUILD_EXAMPLES=OFF -DAD_BUILD_BENCH=OFF >"$build.configure.log" 2>&1 ||
    { cat "$build.configure.log"; exit 1; }
rm -f "$build.configure.log"
cmake --build "$build" -j2 || exit 1
harnesses=$(cd "$build/tests/fuzz" && for f in fuzz_*; do [ -f "$f" ] && [ -x "$f" ] && echo "$f"; done)
if [ -z "$harnesses" ]; then
    echo "run-fuzzers.sh: no harness in $build/tests/fuzz" >&2
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/run-fuzzers.XXXXXX")
status=0
summary=""
for harness in $harnesses; do
    bin=$build/tests/fuzz/$harness
    seeds=tests/fuzz/corpus/$harness
    [ -d "$seeds" ] || seeds=tests/fuzz/corpus/${harness#fuzz_}
    corpus=$work/$harness
    mkdir -p "$corpus" "$work/$harness-artifacts"
    cp "$seeds"/* "$corpus"/ 2>/dev/null
    dict=
    [ -f "tests/fuzz/$harness.dict" ] && dict=-dict=tests/fuzz/$harness.dict
    echo "== $harness: $seconds s on a copy of $seeds ($(ls "$corpus" | wc -l) seeds)"
    log=$work/$harness.log
    if [ "$jobs" -gt 1 ]; then
        par="-jobs=$jobs -workers=$jobs"
    else
        par=
    fi
    # -timeout: one input may take 10 s; -rss_limit_mb: the process 2 GB;
    # -error_exitcode / -timeout_exitcode: any finding fails the run;
    # -entropic_scale_per_exec_time: slow inputs (fuzz_api's large tapes for
    # the code generator, 0.1 s each) are mutated less often, or they
    # would fill the corpus and cut the executions per second by 5.
    # shellcheck disable=SC2086
    "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
        -entropic_scale_per_exec_time=1 \
        -print_final_stats=1 -error_exitcode=77 -timeout_exitcode=78 \
        -artifact_prefix="$work/$harness-artifacts/" $dict $par "$corpus" >"$log" 2>&1
    rc=$?
    [ "$jobs" -gt 1 ] && cat fuzz-*.log >>"$log" 2>/dev/null && rm -f fuzz-*.log
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | awk '{s += $1} END {print s + 0}')
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | awk '{s += $1} END {print s + 0}')
    found=$(ls "$work/$harness-artifacts" 2>/dev/null)
    if [ $rc -ne 0 ] || [ -n "$found" ]; then
        status=1
        mkdir -p tests/fuzz/crashes
        for f in $found; do
            cp "$work/$harness-artifacts/$f" "tests/fuzz/crashes/$harness-$f"
            echo "   saved tests/fuzz/crashes/$harness-$f"
        done
        echo "FAIL $harness (exit $rc); the end of its log:"
        grep -v '^#[0-9]' "$log" | tail -40
        summary="$summary
FAIL $harness: $execs executions, $rate exec/s"
    else
        summary="$summary
ok   $harness: $execs executions, $rate exec/s, corpus $(ls "$seeds" 2>/dev/null | wc -l) -> $(ls "$corpus" | wc -l) inputs"
    fi
    if [ $merge -eq 1 ] && [ $rc -eq 0 ] && [ -d "$seeds" ]; then
        "$bin" -merge=1 "$seeds" "$corpus" >"$work/$harness.merge.log" 2>&1 &&
            echo "   merged into $seeds (now $(ls "$seeds" | wc -l) files): review, then commit"
    fi
done
echo "== libFuzzer summary$summary"
if [ $status -eq 0 ]; then
    rm -rf "$work"
else
    echo "(logs in $work)"
fi
exit $status
