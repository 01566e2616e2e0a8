#!/bin/sh
# check-abi.sh -- what the built libraries promise to other programs.
#
#   scripts/check-abi.sh <build-dir>
#
# <build-dir> is a configured and built tree of this project (a plain
# build: no sanitizers, no coverage). For libautodiff and, when built,
# libnn it checks:
#   - the shared library exports exactly the functions its header declares
#     with AD_API / NN_API (nm -D), nothing else (no ad__ internals, no
#     foreign prefixes; libnn exports no ad_ function and holds no copy of
#     the engine);
#   - the SONAME is lib<name>.so.MAJOR and the file lib<name>.so.X.Y.Z, from
#     the version macros, which match the CMake project version and
#     ad_version();
#   - no writable global data (.data/.bss/TLS) in any object: no global
#     mutable state;
#   - the objects call no C allocator except in src/engine/mem.c (the default
#     hook, realloc/free), and never print, abort, exit or assert;
#   - every public header compiles alone as C11 and as C++11/C++17 with gcc
#     and clang (-Wall -Wextra -Wpedantic -Werror), with and without
#     AD_STATIC_DEFINE; tests/test_cxx_header.cpp links and runs;
#   - a program links against the static library with and without
#     AD_STATIC_DEFINE and with -fvisibility=hidden, and runs.
# Prints every finding and exits 1 if any check failed.
set -eu

if [ $# -ne 1 ] || [ ! -f "$1/CMakeCache.txt" ]; then
    echo "usage: $0 <configured-and-built-build-dir>" >&2
    exit 2
fi
build=$(cd "$1" && pwd)
exec 2>&1 # one stream, so findings stay in order in CI logs
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ad-check-abi.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fails=0
bad() {
    printf 'check-abi: FAIL: %s\n' "$*" >&2
    fails=$((fails + 1))
}
ok() { printf 'check-abi: ok: %s\n' "$*"; }

if grep -Eq '^AD_(SANITIZE|TSAN):BOOL=ON' "$build/CMakeCache.txt"; then
    echo "check-abi: $build is a sanitizer build; use a plain one" >&2
    exit 2
fi

ad_h=$root/autodiff/include/autodiff/autodiff.h
macro() { sed -n "s/^#define $1 \"*\([0-9A-Za-z.]*\)\"*.*/\1/p" "$ad_h"; }
major=$(macro AD_VERSION_MAJOR)
minor=$(macro AD_VERSION_MINOR)
patch=$(macro AD_VERSION_PATCH)
vstring=$(macro AD_VERSION_STRING)
[ "$vstring" = "$major.$minor.$patch" ] ||
    bad "AD_VERSION_STRING $vstring is not $major.$minor.$patch"
project_version=$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$build/CMakeCache.txt")
if [ -n "$project_version" ] && [ "$project_version" != "$vstring" ]; then
    bad "CMake project version $project_version but the header says $vstring"
fi

# Libraries: name, prefix, header directory, build subdirectory.
set -- "autodiff ad $root/autodiff/include/autodiff autodiff"
if [ -f "$build/nn/libnn.so" ] || [ -f "$build/nn/libnn.a" ]; then
    set -- "$@" "nn nn $root/nn/include/nn nn"
fi

# Function names a header declares with <PFX>_API: comments and
# preprocessor lines dropped, the identifier just before the first "(".
declared() { # prefix, header dir
    api=$(echo "$1" | tr '[:lower:]' '[:upper:]')_API
    cat "$2"/*.h | perl -0777 -ne '
        s{/\*.*?\*/}{ }gs; s{//[^\n]*}{}g; s{^[ \t]*#[^\n]*}{}mg;
        while (/\b'"$api"'\b[^;{(]*?\b([A-Za-z_]\w*)\s*\(/g) { print "$1\n" }' |
        grep "^${1}_" | sort -u
}

for lib in "$@"; do
    # shellcheck disable=SC2086
    set -- $lib
    name=$1 pfx=$2 hdir=$3 sub=$4
    so=$build/$sub/lib$name.so
    ar=$build/$sub/lib$name.a
    echo "== lib$name"

    # ---- exports ----
    if [ ! -f "$so" ]; then
        bad "$so not built"
    else
        nm -D --defined-only "$so" | awk '{print $NF}' |
            grep -Ev '^(_init|_fini|_edata|_end|__bss_start)$' | sort -u >"$tmp/$name.exported"
        grep -Ev "^${pfx}_[a-z0-9]" "$tmp/$name.exported" >"$tmp/$name.foreign" || true
        if [ -s "$tmp/$name.foreign" ]; then
            bad "lib$name.so exports symbols without the ${pfx}_ prefix (or internal ${pfx}__ ones):"
            sed 's/^/    /' "$tmp/$name.foreign" >&2
        else
            ok "lib$name.so exports only ${pfx}_ symbols ($(wc -l <"$tmp/$name.exported"))"
        fi
        declared "$pfx" "$hdir" >"$tmp/$name.declared"
        comm -23 "$tmp/$name.declared" "$tmp/$name.exported" >"$tmp/$name.missing"
        comm -13 "$tmp/$name.declared" "$tmp/$name.exported" >"$tmp/$name.extra"
        if [ -s "$tmp/$name.missing" ]; then
            bad "declared in the header but not exported by lib$name.so:"
            sed 's/^/    /' "$tmp/$name.missing" >&2
        fi
        if [ -s "$tmp/$name.extra" ]; then
            bad "exported by lib$name.so but not declared in the header:"
            sed 's/^/    /' "$tmp/$name.extra" >&2
        fi
        [ -s "$tmp/$name.missing" ] || [ -s "$tmp/$name.extra" ] ||
            ok "exports == the header's ${pfx}_ API declarations"

        # ---- SONAME and file name ----
        soname=$(readelf -d "$so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
        if [ "$soname" = "lib$name.so.$major" ]; then
            ok "SONAME $soname"
        else
            bad "lib$name SONAME is '$soname', want lib$name.so.$major"
        fi
        [ -f "$build/$sub/lib$name.so.$vstring" ] ||
            bad "no lib$name.so.$vstring (the real file behind the SONAME)"
        if [ "$name" = nn ]; then
            if readelf -d "$so" | grep -q "NEEDED.*\[libautodiff.so.$major\]"; then
                ok "libnn.so needs libautodiff.so.$major"
            else
                bad "libnn.so does not link the shared libautodiff.so.$major"
            fi
            if nm "$so" 2>/dev/null | grep -Eq ' [TtDdBbRr] ad_'; then
                bad "libnn.so contains its own copy of ad_ functions (linked the static engine?)"
            fi
        fi
    fi

    # ---- objects: no global mutable state, no heap or I/O behind the caller ----
    if [ ! -f "$ar" ]; then
        bad "$ar not built"
        continue
    fi
    mkdir -p "$tmp/$name.o" && (cd "$tmp/$name.o" && ar x "$ar")
    writable=$(for o in "$tmp/$name.o"/*.o; do
        size -A "$o" | awk -v f="$(basename "$o")" \
            '$1 ~ /^\.(data|bss|tdata|tbss)($|\.)/ && $1 !~ /^\.data\.rel\.ro/ && $2 > 0 {print f ": " $1 " " $2 " bytes"}'
    done)
    if [ -n "$writable" ]; then
        bad "lib$name has writable global data (global mutable state):"
        echo "$writable" | sed 's/^/    /' >&2
        for o in "$tmp/$name.o"/*.o; do
            nm "$o" | awk -v f="$(basename "$o")" '$2 ~ /^[dDbBvV]$/ {print "    " f ": " $3}' >&2
        done
    else
        ok "lib$name: no writable global data"
    fi
    heap_users=""
    for o in "$tmp/$name.o"/*.o; do
        undef=$(nm -u "$o" | awk '{print $NF}')
        f=$(basename "$o")
        if echo "$undef" | grep -Eqx 'malloc|calloc|realloc|free|aligned_alloc|posix_memalign|memalign|valloc|strdup|strndup'; then
            heap_users="$heap_users $f"
        fi
        loud=$(echo "$undef" | grep -Ex 'printf|vprintf|fprintf|vfprintf|dprintf|puts|putchar|perror|stdout|stderr|abort|exit|_exit|_Exit|quick_exit|__assert_fail|__assert|system' || true)
        [ -z "$loud" ] || bad "lib$name $f calls $(echo "$loud" | tr '\n' ' ')"
    done
    others=$(echo "$heap_users" | tr ' ' '\n' | grep -v '^mem\.c\.o$' | tr '\n' ' ' || true)
    if [ -z "$(echo "$others" | tr -d ' ')" ]; then
        ok "lib$name: the C allocator is called only by the default hook in mem.c"
    else
        bad "lib$name: objects other than mem.c.o call the C allocator directly: $others"
    fi
done

# ---- the version at run time ----
cc=${CC:-cc}
cat >"$tmp/version.c" <<'EOF'
#include <autodiff/autodiff.h>
#include <stdio.h>
#include <string.h>
int main(void)
{
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", AD_VERSION_MAJOR, AD_VERSION_MINOR, AD_VERSION_PATCH);
    if (strcmp(ad_version(), AD_VERSION_STRING) || strcmp(want, AD_VERSION_STRING)) {
        printf("header %s (%s), library %s\n", AD_VERSION_STRING, want, ad_version());
        return 1;
    }
    return 0;
}
EOF
if $cc -std=c11 -I"$root/autodiff/include" "$tmp/version.c" -o "$tmp/version" \
    -L"$build/autodiff" -Wl,-rpath,"$build/autodiff" -lautodiff && "$tmp/version"; then
    ok "ad_version() == AD_VERSION_STRING == $vstring"
else
    bad "ad_version() does not match the header"
fi

# ---- headers alone, as C11 and C++ ----
incs="-I$root/autodiff/include"
[ -d "$root/nn/include" ] && incs="$incs -I$root/nn/include"
headers=$(cd "$root/autodiff/include" && ls autodiff/*.h)
[ -d "$root/nn/include/nn" ] && headers="$headers $(cd "$root/nn/include" && ls nn/*.h)"
compilers=""
for c in gcc clang; do command -v $c >/dev/null 2>&1 && compilers="$compilers $c:c"; done
for c in g++ clang++; do command -v $c >/dev/null 2>&1 && compilers="$compilers $c:c++"; done
hdr_fail=0
for h in $headers; do
    printf '#include <%s>\n#include <%s>\n' "$h" "$h" >"$tmp/one.in" # twice: include guard
    for cl in $compilers; do
        c=${cl%%:*} lang=${cl#*:}
        if [ "$lang" = c ]; then stds="c11"; else stds="c++11 c++17"; fi
        for std in $stds; do
            for def in "" -DAD_STATIC_DEFINE; do
                # shellcheck disable=SC2086
                if ! $c -x "$lang" -std="$std" -Wall -Wextra -Wpedantic -Werror $def $incs \
                    -fsyntax-only "$tmp/one.in" 2>"$tmp/hdr.err"; then
                    bad "$h does not compile alone with $c -std=$std $def:"
                    sed 's/^/    /' "$tmp/hdr.err" | head -10 >&2
                    hdr_fail=1
                fi
            done
        done
    done
done
[ "$hdr_fail" -eq 1 ] || ok "headers compile alone:$(echo " $headers" | tr '\n' ' ') with$compilers"

cxx=${CXX:-}
[ -z "$cxx" ] && command -v c++ >/dev/null 2>&1 && cxx="c++"
if [ -n "$cxx" ]; then
    libs="$build/autodiff/libautodiff.a"
    [ -f "$build/nn/libnn.a" ] && libs="$build/nn/libnn.a $libs"
    # shellcheck disable=SC2086
    if $cxx -std=c++11 -Wall -Wextra -Wpedantic -Werror $incs -DAD_STATIC_DEFINE -DNN_STATIC_DEFINE \
        "$root/tests/test_cxx_header.cpp" $libs -lm -o "$tmp/cxx" && "$tmp/cxx" >/dev/null; then
        ok "tests/test_cxx_header.cpp builds as C++11 and runs"
    else
        bad "tests/test_cxx_header.cpp"
    fi
fi

# ---- static linking and AD_API ----
for flags in "" "-DAD_STATIC_DEFINE" "-fvisibility=hidden" "-DAD_STATIC_DEFINE -fvisibility=hidden"; do
    # shellcheck disable=SC2086
    if $cc -std=c11 -Wall -Wextra -Wpedantic -Werror $flags -I"$root/autodiff/include" \
        "$root/examples/embed/main.c" "$build/autodiff/libautodiff.a" -lm -o "$tmp/static" &&
        "$tmp/static" >/dev/null; then
        ok "static link with '${flags:-no flags}'"
    else
        bad "static link with '${flags:-no flags}'"
    fi
done
if readelf -d "$tmp/static" | grep -q libautodiff; then
    bad "the statically linked program still needs libautodiff.so"
fi
# A shared library of the caller's that contains libautodiff.a: with
# --exclude-libs (as docs/embedding.md says) it exports none of the ad_ API.
cat >"$tmp/wrap.c" <<'EOF'
#include <autodiff/autodiff.h>
__attribute__((visibility("default"))) const char *wrap_version(void) { return ad_version(); }
EOF
if $cc -std=c11 -fPIC -shared -fvisibility=hidden -DAD_STATIC_DEFINE -I"$root/autodiff/include" \
    "$tmp/wrap.c" "$build/autodiff/libautodiff.a" -lm -Wl,--exclude-libs,libautodiff.a \
    -o "$tmp/libwrap.so"; then
    leaked=$(nm -D --defined-only "$tmp/libwrap.so" | awk '{print $NF}' | grep -c '^ad_' || true)
    if [ "$leaked" -eq 0 ]; then
        ok "--exclude-libs keeps the ad_ API out of a wrapping .so"
    else
        bad "a wrapping .so built with --exclude-libs still exports $leaked ad_ symbols"
    fi
else
    bad "could not build a shared library around libautodiff.a"
fi

if [ "$fails" -ne 0 ]; then
    printf 'check-abi: %d check(s) failed\n' "$fails" >&2
    exit 1
fi
echo "check-abi: all checks passed"
