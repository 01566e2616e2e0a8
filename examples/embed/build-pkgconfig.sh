#!/bin/sh
# build-pkgconfig.sh -- build the embedding demo with pkg-config and a plain
# compiler command, against the shared and the static library.
#
#   PKG_CONFIG_PATH=<prefix>/lib/pkgconfig examples/embed/build-pkgconfig.sh [outdir]
#
# Leaves <outdir>/embed_demo_shared and <outdir>/embed_demo_static (and,
# when nn.pc is installed, the nn demos embed_nn_demo_* and embed_nn_only_*)
# and runs them.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-.}
mkdir -p "$out"
CC=${CC:-cc}
CFLAGS=${CFLAGS:--std=c11 -O2 -Wall -Wextra -Wpedantic}

pkg-config --exists autodiff || {
    echo "build-pkgconfig.sh: pkg-config cannot find autodiff.pc; set PKG_CONFIG_PATH" >&2
    exit 1
}
libdir=$(pkg-config --variable=libdir autodiff)

# Shared: the rpath lets the program find libautodiff.so.1 outside the
# system library path (not needed after installing into /usr/local + ldconfig).
# shellcheck disable=SC2046,SC2086
$CC $CFLAGS "$here/main.c" -o "$out/embed_demo_shared" \
    $(pkg-config --cflags autodiff) -Wl,-rpath,"$libdir" $(pkg-config --libs autodiff)

# Static: the libraries of `pkg-config --static`, in its order, with our
# own archives named instead of -lautodiff/-lnn (which would pick the .so).
static_libs() { # module
    for w in $(pkg-config --static --libs-only-l "$1"); do
        case $w in
        -lautodiff | -lnn) printf '%s\n' "$libdir/lib${w#-l}.a" ;;
        *) printf '%s\n' "$w" ;;
        esac
    done
}
# shellcheck disable=SC2046,SC2086
$CC $CFLAGS -DAD_STATIC_DEFINE "$here/main.c" -o "$out/embed_demo_static" \
    $(pkg-config --cflags autodiff) $(static_libs autodiff)

"$out/embed_demo_shared"
"$out/embed_demo_static"

if [ -f "$here/nn_demo.c" ] && pkg-config --exists nn; then
    # shellcheck disable=SC2046,SC2086
    $CC $CFLAGS "$here/nn_demo.c" -o "$out/embed_nn_demo_shared" \
        $(pkg-config --cflags nn) -Wl,-rpath,"$libdir" $(pkg-config --libs nn)
    "$out/embed_nn_demo_shared"
fi

if [ -f "$here/nn_only.c" ] && pkg-config --exists nn; then
    # nn_ calls only. With --as-needed the program does not record
    # libautodiff.so.1 at all, and with --enable-new-dtags its rpath is a
    # DT_RUNPATH, which the loader does not search for libnn's own
    # dependencies: libnn's RUNPATH ($ORIGIN) must find libautodiff.
    as_needed=
    case $(uname -s) in
    Darwin | *MINGW* | *MSYS* | CYGWIN*) ;;
    *) as_needed="-Wl,--as-needed -Wl,--enable-new-dtags" ;;
    esac
    # shellcheck disable=SC2046,SC2086
    $CC $CFLAGS "$here/nn_only.c" -o "$out/embed_nn_only_shared" \
        $(pkg-config --cflags nn) $as_needed -Wl,-rpath,"$libdir" $(pkg-config --libs nn)
    # shellcheck disable=SC2046,SC2086
    $CC $CFLAGS -DAD_STATIC_DEFINE -DNN_STATIC_DEFINE "$here/nn_only.c" \
        -o "$out/embed_nn_only_static" $(pkg-config --cflags nn) $(static_libs nn)
    "$out/embed_nn_only_shared"
    "$out/embed_nn_only_static"
fi
