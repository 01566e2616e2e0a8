#!/bin/sh
# check_functions.sh AUTODIFF_H ADGRAD -- every op autodiff.h declares
# (AD_API ad_node ad_NAME(ad_tape *t, ...), leaves, ad_apply* and ad_named aside)
# is callable by its name in adgrad: a line in tools/adgrad/functions.c.
set -u
header=$1 adgrad=$2
ops=$(sed -n 's/^AD_API ad_node ad_\([a-z0-9_]*\)(ad_tape \*t.*/\1/p' "$header" |
    grep -v -x -e constant -e variable -e scalar -e scalar_var -e param -e apply -e apply_named -e named)
[ -n "$ops" ] || { echo "check_functions: no ops found in $header" >&2; exit 1; }
have=$("$adgrad" --list-functions | sed -n 's/^\([a-z0-9_]*\)(.*/\1/p')
missing=
for op in $ops; do
    printf '%s\n' "$have" | grep -q -x "$op" || missing="$missing $op"
done
if [ -n "$missing" ]; then
    echo "autodiff.h declares ops that adgrad cannot call by name:$missing"
    echo "add one line per op to the table in tools/adgrad/functions.c (see the comment at its top)"
    exit 1
fi
echo "ok: adgrad calls all $(printf '%s\n' "$ops" | wc -l) ops of autodiff.h by name"
