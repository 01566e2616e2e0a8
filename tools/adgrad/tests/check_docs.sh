#!/bin/sh
# check_docs.sh ADGRAD MANPAGE DOC -- every long option --help lists is
# described in the man page and in docs/adgrad.md.
set -u
adgrad=$1 man=$2 doc=$3
opts=$("$adgrad" --help | grep -o -e '--[a-z][a-z-]*' | sort -u)
[ -n "$opts" ] || { echo "check_docs: --help lists no options" >&2; exit 1; }
bad=0
for o in $opts; do
    # the man page writes \-\-option
    roff=$(printf '%s' "$o" | sed 's/-/\\\\-/g')
    grep -q -e "$roff" "$man" || { echo "adgrad.1 does not describe $o"; bad=1; }
    grep -q -e "$o" "$doc" || { echo "docs/adgrad.md does not mention $o"; bad=1; }
done
[ $bad = 0 ] && echo "ok: $(echo "$opts" | wc -l) options in adgrad.1 and docs/adgrad.md"
exit $bad
