#!/usr/bin/env bash
# Ask every instance for its page through the proxy (a stopped one is woken), then a wrong and no cookie.
set -euo pipefail
. "$(dirname "$0")/common.sh"
for i in $(seq 1 "$N"); do
    name="$PREFIX-$i"
    got=$(curl -sS --fail-with-body -b "instance=$name" "$PROXY/" | json_field instance)
    [ "$got" = "$name" ] || { echo "asked for $name, got $got" >&2; exit 1; }
    echo "$name answered"
done
code=$(curl -sS -o /dev/null -w '%{http_code}' -b "instance=$PREFIX-nosuch" "$PROXY/")
[ "$code" = 404 ] || { echo "unknown instance gave $code, not 404" >&2; exit 1; }
code=$(curl -sS -o /dev/null -w '%{http_code}' -H 'Accept: text/html' "$PROXY/")
[ "$code" = 302 ] || { echo "a browser without cookie got $code, not 302 to the home page" >&2; exit 1; }
echo "unknown and missing instances answered as expected"
