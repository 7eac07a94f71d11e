#!/usr/bin/env bash
# List the managed instances (name and state), as the old spawner's list-minions.sh did.
set -euo pipefail
. "$(dirname "$0")/common.sh"
login
curl -sS -L --fail-with-body "$API/deploy/" -H "token: $TOKEN" | python3 -c '
import json, sys
for i in json.load(sys.stdin)["instances"]:
    print(i["ContainerName"], i["status"])'
