#!/usr/bin/env bash
# Create (and start) PREFIX-1 .. PREFIX-N through the deploy API, as the old spawner's create-minions.sh did.
set -euo pipefail
. "$(dirname "$0")/common.sh"
login
for i in $(seq 1 "$N"); do
    name="$PREFIX-$i"
    if [ "$NETWORK" = host ]; then
        port=$((BASE_PORT + i))
        labels="{\"wakeproxy.port\": \"$port\", \"wakeproxy.health-check\": \"/status\"}"
        envs="{\"PORT\": \"$port\", \"HOST\": \"127.0.0.1\", \"INSTANCE\": \"$name\", \"CONNSTR\": \"db $i\", \"IDLE\": \"0\"}"
    else
        # Traefik: wakeproxy (--router-labels) writes the anchored cookie rule, so minion-1 never catches
        # minion-10's users; the API refuses a rule from callers unless --allow-router-rules.
        labels="{\"wakeproxy.port\": \"9000\", \"traefik.enable\": \"true\",
                 \"traefik.http.routers.$name.entrypoints\": \"web\",
                 \"traefik.http.services.$name.loadbalancer.server.port\": \"9000\"}"
        envs="{\"PORT\": \"9000\", \"HOST\": \"0.0.0.0\", \"INSTANCE\": \"$name\", \"CONNSTR\": \"db $i\", \"IDLE\": \"0\"}"
    fi
    curl -sS -L --fail-with-body -X POST "$API/deploy/" -H "token: $TOKEN" -H 'Content-Type: application/json' \
        -d "{\"name\": \"$name\", \"network\": \"$NETWORK\", \"image\": \"mock-app:latest\",
             \"labels\": $labels, \"envs\": $envs}" | json_field id >/dev/null
    echo "created $name"
done
