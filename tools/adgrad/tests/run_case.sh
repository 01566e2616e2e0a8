#!/bin/sh
# run_case.sh ADGRAD CASES EXPECTED NAME -- one end-to-end test of adgrad.
#
# CASES/NAME.args holds the case: its first line is "exit N" (the status
# adgrad must return), an optional line "stdin FILE" feeds FILE to it, a
# line "requires F" skips the case (status 77) when adgrad has no function
# F (an op the library being built does not declare), and every other
# line is one argument (no quoting: a line is an argument as
# it stands, ';' and spaces included). adgrad runs in CASES, so file
# arguments are relative to it. Its standard output and error must equal
# EXPECTED/NAME.out and EXPECTED/NAME.err byte for byte; a missing
# expected file means the stream must be empty -- except for a case whose
# name ends in _nocompare (outputs that change with the op set, like
# --help), whose streams are compared only where an expected file exists.
#
# ADGRAD_WRAPPER runs adgrad under another program, e.g.
#   ADGRAD_WRAPPER="valgrind -q --error-exitcode=99 --leak-check=full
#     --errors-for-leak-kinds=all" ctest -R adgrad
# (any report changes the output or the status, so the test fails).
# ADGRAD_UPDATE=1 rewrites the expected files from this run instead.
set -u
adgrad=$1 cases=$2 expected=$3 name=$4
args=$cases/$name.args
[ -f "$args" ] || { echo "run_case: no $args" >&2; exit 2; }
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT

want_status=
stdin_file=/dev/null
set --
first=1
while IFS= read -r line || [ -n "$line" ]; do
    if [ $first = 1 ]; then
        first=0
        case $line in
        "exit "*) want_status=${line#exit }; continue ;;
        *) echo "run_case: $args: the first line must be 'exit N'" >&2; exit 2 ;;
        esac
    fi
    case $line in
    "stdin "*) stdin_file=${line#stdin }; continue ;;
    "requires "*)
        "$adgrad" --list-functions | grep -q "^${line#requires }(" ||
            { echo "skipped: adgrad has no function ${line#requires }"; exit 77; }
        continue ;;
    esac
    set -- "$@" "$line"
done <"$args"

# shellcheck disable=SC2086 # the wrapper is a command line
(cd "$cases" && ${ADGRAD_WRAPPER:-} "$adgrad" "$@" <"$stdin_file" >"$tmp/out" 2>"$tmp/err")
status=$?

if [ "${ADGRAD_UPDATE:-0}" = 1 ] && [ "$name" = "${name%_nocompare}" ]; then
    [ -s "$tmp/out" ] && cp "$tmp/out" "$expected/$name.out" || rm -f "$expected/$name.out"
    [ -s "$tmp/err" ] && cp "$tmp/err" "$expected/$name.err" || rm -f "$expected/$name.err"
    [ "$status" = "$want_status" ] || echo "note: $name exits $status, the case says $want_status" >&2
    exit 0
fi

fail=0
for stream in out err; do
    if [ -f "$expected/$name.$stream" ]; then
        if ! cmp -s "$expected/$name.$stream" "$tmp/$stream"; then
            echo "== std$stream differs from $expected/$name.$stream:"
            diff -u "$expected/$name.$stream" "$tmp/$stream" | head -60
            fail=1
        fi
    elif [ "$name" = "${name%_nocompare}" ] && [ -s "$tmp/$stream" ]; then
        echo "== unexpected std$stream (no $expected/$name.$stream):"
        head -40 "$tmp/$stream"
        fail=1
    fi
done
if [ "$status" != "$want_status" ]; then
    echo "== exit status $status, want $want_status"
    fail=1
fi
[ $fail = 0 ] && echo "ok: adgrad $*"
exit $fail
