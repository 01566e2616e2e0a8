#!/bin/sh
# build-pkgconfig.sh -- build the embedding demo with pkg-config and a plain
# compiler command, against the shared and the static library.
#
#   PKG_CONFIG_PATH=<prefix>/lib/pkgconfig examples/embed/build-pkgconfig.sh [outdir]
#
# Leaves <outdir>/embed_demo_shared and <outdir>/embed_demo_static (and the
# nn demo when nn.pc is installed) and runs them.
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

# Shared: the rpath lets the program find libautodiff.so.0 outside the
# system library path (not needed after installing into /usr/local + ldconfig).
# shellcheck disable=SC2046,SC2086
$CC $CFLAGS "$here/main.c" -o "$out/embed_demo_shared" \
    $(pkg-config --cflags autodiff) -Wl,-rpath,"$libdir" $(pkg-config --libs autodiff)

# Static: name the archive; --static adds the private dependencies (-lm).
# shellcheck disable=SC2046,SC2086
$CC $CFLAGS -DAD_STATIC_DEFINE "$here/main.c" -o "$out/embed_demo_static" \
    $(pkg-config --cflags autodiff) "$libdir/libautodiff.a" \
    $(pkg-config --static --libs-only-l autodiff | sed 's/-lautodiff//')

"$out/embed_demo_shared"
"$out/embed_demo_static"

if [ -f "$here/nn_demo.c" ] && pkg-config --exists nn; then
    # shellcheck disable=SC2046,SC2086
    $CC $CFLAGS "$here/nn_demo.c" -o "$out/embed_nn_demo_shared" \
        $(pkg-config --cflags nn) -Wl,-rpath,"$libdir" $(pkg-config --libs nn)
    "$out/embed_nn_demo_shared"
fi
