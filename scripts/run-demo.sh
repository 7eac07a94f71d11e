#!/usr/bin/env bash
# The demo: two stopped mock_app instances managed by wakeproxy, and wakeproxy in the foreground.
# Ctrl-C stops wakeproxy; the instances stay (stopped) for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."

PROXY_PORT=${PROXY_PORT:-8000}
API_PORT=${API_PORT:-8008}

for i in 1 2; do
    name="demo-$i"
    port=$((9000 + i))
    if ! docker container inspect "$name" >/dev/null 2>&1; then
        docker create --name "$name" --network host \
            --label wakeproxy.managed=true --label "wakeproxy.port=$port" \
            -e HOST=127.0.0.1 -e PORT=$port -e IDLE=1m -e "CONNSTR=db $i" \
            mock-app:latest >/dev/null
        echo "created $name (stopped; listens on 127.0.0.1:$port once woken; exits after 1m idle)"
    fi
done

cat <<EOT

wakeproxy is starting on http://127.0.0.1:$PROXY_PORT (deploy API on 127.0.0.1:$API_PORT). Try:

  curl -s -b instance=demo-1 http://127.0.0.1:$PROXY_PORT/          # wakes demo-1, then answers
  curl -s -b instance=demo-2 http://127.0.0.1:$PROXY_PORT/bytes/100 | wc -c
  curl -s -i http://127.0.0.1:$PROXY_PORT/                          # no instance: 404 problem+json
  curl -s http://127.0.0.1:$API_PORT/healthz

Ctrl-C stops wakeproxy.
EOT
exec .venv/bin/twistd -n --pidfile= wakeproxy \
    --listen "tcp:$PROXY_PORT" --api-listen "tcp:$API_PORT:interface=127.0.0.1"
