#!/bin/sh
# shellcheck disable=SC2016 # sed scripts and sh -c bodies are quoted on purpose
# check-embed.sh -- install the libraries into a temporary prefix and build
# and run the consumers, as a fresh machine would.
#
#   scripts/check-embed.sh [workdir]
#
# 1. copies the source tree (files git knows, tracked or not ignored) into
#    <workdir>/src, so no build directory of the checkout leaks in;
# 2. runs, in that copy, exactly the command block of docs/embedding.md
#    ("Quick start"), with HOME=<workdir>/home so PREFIX is temporary;
# 3. checks the installed files, the RUNPATH $ORIGIN of libnn and the
#    order of `pkg-config --static --libs nn`;
# 4. builds examples/embed again: against the static libraries, from a
#    copy of the prefix at another path (relocation), and with
#    add_subdirectory() of the source tree; every route also builds
#    nn_only.c, a program that calls nn_ functions only, linked with
#    --as-needed and DT_RUNPATH, which starts only if libnn finds
#    libautodiff by itself;
# 5. builds and runs tests/test_cxx_header.cpp against the installed
#    libraries with a C++ compiler;
# 6. checks that the program in docs/embedding.md is examples/embed/main.c.
#
# <workdir> defaults to a new directory under ${TMPDIR:-/tmp}; it is removed
# on success unless KEEP=1. Needs: cmake, a C compiler, pkg-config,
# uthash.h; a C++ compiler for step 5 (skipped with a note without one).
# Nothing runs with LD_LIBRARY_PATH: it is unset, since it would hide a
# library that the loader cannot find through the binaries' own paths.
set -eu
unset LD_LIBRARY_PATH

root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-}
if [ -z "$work" ]; then
    work=$(mktemp -d "${TMPDIR:-/tmp}/ad-check-embed.XXXXXX")
else
    rm -rf "$work"
    mkdir -p "$work"
fi
work=$(cd "$work" && pwd)
fails=0
step() { printf '\n== %s\n' "$*"; }
bad() {
    printf 'check-embed: FAIL: %s\n' "$*" >&2
    fails=$((fails + 1))
}

# ---- 1. a clean copy of the sources ----
step "copy the source tree to $work/src"
mkdir -p "$work/src" "$work/home"
if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$root" && git ls-files -z --cached --others --exclude-standard |
        xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh |
        tar --null -T - -cf -) | tar -C "$work/src" -xf -
else
    (cd "$root" && tar --exclude='./build*' -cf - .) | tar -C "$work/src" -xf -
fi
src=$work/src

# ---- 2. the documented commands, verbatim ----
step "run the Quick start block of docs/embedding.md"
sed -n '/<!-- embed-commands/,/<!-- end embed-commands -->/p' "$src/docs/embedding.md" |
    sed -n '/^```sh$/,/^```$/p' | sed '1d;$d' >"$work/quickstart.sh"
if [ ! -s "$work/quickstart.sh" ]; then
    echo "check-embed: no embed-commands block in docs/embedding.md" >&2
    exit 1
fi
cat "$work/quickstart.sh"
(cd "$src" && HOME="$work/home" sh -eux "$work/quickstart.sh") >"$work/quickstart.log" 2>&1 || {
    tail -40 "$work/quickstart.log" >&2
    echo "check-embed: the documented commands failed (log: $work/quickstart.log)" >&2
    exit 1
}
grep -E '^(autodiff|dL/dW|expected error|nn|ok|FAILED)' "$work/quickstart.log" || true
[ "$(grep -c '^ok$' "$work/quickstart.log")" -ge 3 ] ||
    bad "expected 'ok' from the CMake, shared and static pkg-config demos"
if [ -f "$src/nn/CMakeLists.txt" ] && [ -f "$src/examples/embed/nn_only.c" ]; then
    # find_package (the CMake consumer), pkg-config shared and static.
    [ "$(grep -c '^nn only:' "$work/quickstart.log")" -ge 3 ] ||
        bad "expected the nn-only program to run from CMake and pkg-config (shared, static)"
    pcout=$src/build-consumer-pc
    for exe in "$src/build-consumer/embed_nn_only" "$pcout/embed_nn_only_shared"; do
        [ -f "$exe" ] || continue
        # The case of the defect: no NEEDED libautodiff, a RUNPATH only.
        if readelf -d "$exe" | grep -q 'NEEDED.*libautodiff'; then
            bad "$exe records libautodiff (not linked --as-needed?): the nn-only case is not tested"
        fi
    done
fi
prefix=$work/home/.local

# ---- 3. the installed files ----
step "installed files under $prefix"
(cd "$prefix" && find . -type f -o -type l | sort)
pcdir=$(dirname "$(find "$prefix" -name autodiff.pc | head -1)")
libdir=$(dirname "$pcdir")
major=$(sed -n 's/^#define AD_VERSION_MAJOR \([0-9]*\).*/\1/p' "$src/autodiff/include/autodiff/autodiff.h")
version=$(sed -n 's/^#define AD_VERSION_STRING "\(.*\)".*/\1/p' "$src/autodiff/include/autodiff/autodiff.h")
libs="autodiff"
[ -d "$src/nn" ] && libs="autodiff nn"
for f in include/autodiff/autodiff.h lib*/cmake/autodiff/autodiffConfig.cmake \
    lib*/cmake/autodiff/autodiffConfigVersion.cmake lib*/cmake/autodiff/autodiffTargets.cmake; do
    # shellcheck disable=SC2086
    ls "$prefix"/$f >/dev/null 2>&1 || bad "missing $f"
done
for l in $libs; do
    for f in "lib$l.a" "lib$l.so" "lib$l.so.$major" "lib$l.so.$version" "pkgconfig/$l.pc"; do
        [ -e "$libdir/$f" ] || bad "missing $libdir/$f"
    done
    soname=$(readelf -d "$libdir/lib$l.so.$version" 2>/dev/null | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
    [ "$soname" = "lib$l.so.$major" ] || bad "lib$l SONAME is '$soname', want lib$l.so.$major"
done
if [ -d "$src/nn" ]; then
    [ -f "$prefix/include/nn/nn.h" ] || bad "missing include/nn/nn.h"
    # libnn finds libautodiff (installed next to it) by itself.
    nn_so=$libdir/libnn.so.$version
    readelf -d "$nn_so" | grep -q "NEEDED.*\[libautodiff.so.$major\]" ||
        bad "libnn does not record libautodiff.so.$major"
    # shellcheck disable=SC2016 # a literal $ORIGIN
    readelf -d "$nn_so" | grep -E '\((RUNPATH|RPATH)\)' | grep -q '\[\$ORIGIN[]:]' ||
        bad "the installed libnn has no RUNPATH \$ORIGIN: a program calling only nn_ cannot start"
    # pkg-config --static: autodiff after nn, -lm after autodiff.
    nn_static_libs=$(PKG_CONFIG_PATH=$pcdir pkg-config --static --libs nn)
    echo "pkg-config --static --libs nn: $nn_static_libs"
    printf '%s\n' "$nn_static_libs" | grep -Eq -- '-lnn( .*)? -lautodiff( .*)? -lm( |$)' ||
        bad "pkg-config --static --libs nn does not list -lnn, -lautodiff, -lm in that order"
fi
PKG_CONFIG_PATH=$pcdir pkg-config --modversion autodiff | grep -qx "$version" ||
    bad "pkg-config --modversion autodiff is not $version"

# ---- 4. more consumers of the same project ----
run_consumer() { # name, cmake arguments...
    name=$1
    shift
    step "examples/embed: $name"
    if cmake -S "$src/examples/embed" -B "$work/$name" "$@" >"$work/$name.log" 2>&1 &&
        cmake --build "$work/$name" >>"$work/$name.log" 2>&1 &&
        (cd "$work/$name" && ctest --output-on-failure) >>"$work/$name.log" 2>&1; then
        grep -E 'tests passed|Passed' "$work/$name.log" | tail -4
    else
        tail -30 "$work/$name.log" >&2
        bad "consumer $name (log: $work/$name.log)"
    fi
    if grep -q 'examples/embed/.*warning:' "$work/$name.log"; then
        grep 'examples/embed/.*warning:' "$work/$name.log" >&2
        bad "consumer $name: warnings in examples/embed"
    fi
    if [ -f "$src/nn/CMakeLists.txt" ] && [ -f "$src/examples/embed/nn_only.c" ] &&
        [ ! -f "$work/$name/embed_nn_only" ]; then
        bad "consumer $name did not build embed_nn_only"
    fi
}

run_consumer static -DCMAKE_PREFIX_PATH="$prefix" -DEMBED_STATIC=ON
for exe in "$work/static/embed_demo" "$work/static/embed_nn_only"; do
    if [ -f "$exe" ] && readelf -d "$exe" | grep -Eq 'lib(autodiff|nn)\.so'; then
        bad "the static consumer $(basename "$exe") still needs a shared library of ours"
    fi
done

cp -a "$prefix" "$work/moved-prefix"
run_consumer relocated -DCMAKE_PREFIX_PATH="$work/moved-prefix"
if [ -f "$work/relocated/embed_demo" ]; then
    # It must have been linked against the copy, not the original prefix.
    readelf -d "$work/relocated/embed_demo" | grep -q "moved-prefix" ||
        bad "the relocated consumer does not use the moved prefix"
fi
if [ -f "$work/relocated/embed_nn_only" ]; then
    # With the original prefix gone, libnn must still find libautodiff in
    # the copy: nothing may point back at the install prefix.
    mv "$prefix" "$prefix.hidden"
    if out=$("$work/relocated/embed_nn_only" 2>&1); then
        echo "$out" | tail -1
    else
        echo "$out" >&2
        bad "the nn-only program does not start from the moved prefix alone"
    fi
    mv "$prefix.hidden" "$prefix"
fi

run_consumer subdirectory -DAUTODIFF_SOURCE_DIR="$src"
if [ -d "$work/subdirectory/autodiff" ]; then
    # A subproject builds no tests, examples or benchmarks.
    if find "$work/subdirectory/autodiff" -name 'test_*' -type f -perm -u+x | grep -q .; then
        bad "add_subdirectory built the test suite"
    fi
    grep -q 'AD_INSTALL:BOOL=OFF' "$work/subdirectory/CMakeCache.txt" ||
        bad "AD_INSTALL is not OFF in a subproject"
fi

# ---- 5. C++ ----
step "tests/test_cxx_header.cpp against the installed libraries"
cxx=${CXX:-}
[ -z "$cxx" ] && command -v c++ >/dev/null 2>&1 && cxx="c++"
if [ -n "$cxx" ]; then
    pcs=autodiff
    PKG_CONFIG_PATH=$pcdir pkg-config --exists nn 2>/dev/null && pcs="autodiff nn"
    # shellcheck disable=SC2046,SC2086
    if $cxx -std=c++11 -Wall -Wextra -Wpedantic -Werror "$src/tests/test_cxx_header.cpp" \
        -o "$work/cxx_header" $(PKG_CONFIG_PATH=$pcdir pkg-config --cflags --libs $pcs) \
        -Wl,-rpath,"$libdir" && "$work/cxx_header"; then
        :
    else
        bad "C++ consumer"
    fi
else
    echo "no C++ compiler: skipped"
fi

# ---- 6. the documented program is the example ----
step "docs/embedding.md program == examples/embed/main.c"
sed -n '/<!-- embed-program/,/<!-- end embed-program -->/p' "$src/docs/embedding.md" |
    sed -n '/^```c$/,/^```$/p' | sed '1d;$d' >"$work/doc-main.c"
if diff -u "$src/examples/embed/main.c" "$work/doc-main.c"; then
    echo "identical"
else
    bad "docs/embedding.md and examples/embed/main.c differ"
fi

if [ "$fails" -ne 0 ]; then
    printf '\ncheck-embed: %d check(s) failed; work dir kept: %s\n' "$fails" "$work" >&2
    exit 1
fi
printf '\ncheck-embed: all checks passed\n'
if [ "${KEEP:-0}" != 1 ]; then
    rm -rf "$work"
fi
