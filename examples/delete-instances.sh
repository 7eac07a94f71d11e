#!/usr/bin/env bash
# Stop and remove PREFIX-1 .. PREFIX-N, as the old spawner's delete-minons.sh did.
set -euo pipefail
. "$(dirname "$0")/common.sh"
login
for i in $(seq 1 "$N"); do
    curl -sS -L --fail-with-body -X DELETE "$API/deploy/$PREFIX-$i" -H "token: $TOKEN" | json_field result >/dev/null
    echo "deleted $PREFIX-$i"
done
