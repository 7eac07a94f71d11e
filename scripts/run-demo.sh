#!/usr/bin/env bash
# The demo: two stopped mock_app instances, mock_home (the site's home) and wakeproxy in the foreground.
# Ctrl-C stops wakeproxy and mock_home; the instances stay (stopped) for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."

PROXY_PORT=${PROXY_PORT:-8000}
API_PORT=${API_PORT:-8008}
HOME_PORT=${HOME_PORT:-8080}
DEMO_DIR=build/demo
mkdir -p "$DEMO_DIR"

# A demo user, foo / bar (the old spawner's example), in a salted passwd file made here, never committed.
if [ ! -s "$DEMO_DIR/passwd.txt" ]; then
    echo bar | .venv/bin/python -m wakeproxy.passwd add foo --file "$DEMO_DIR/passwd.txt" --stdin >/dev/null
fi

for i in 1 2; do
    name="demo-$i"
    port=$((9000 + i))
    if ! docker container inspect "$name" >/dev/null 2>&1; then
        docker create --name "$name" --network host \
            --label wakeproxy.managed=true --label "wakeproxy.port=$port" --label wakeproxy.idle-timeout=2m \
            -e HOST=127.0.0.1 -e PORT=$port -e IDLE=0 -e "CONNSTR=db $i" -e "INSTANCE=$name" \
            mock-app:latest >/dev/null
        echo "created $name (stopped; listens on 127.0.0.1:$port once woken; stopped after 2m idle)"
    fi
done

docker rm -f wakeproxy-demo-home >/dev/null 2>&1 || true
docker run -d --rm --name wakeproxy-demo-home --network host \
    -e PORT=$HOME_PORT -e HOST=127.0.0.1 -e "API_URL=http://127.0.0.1:$API_PORT" -e INSTANCE_NETWORK=host \
    mock-home:latest >/dev/null
trap 'docker rm -f wakeproxy-demo-home >/dev/null 2>&1 || true' EXIT

cat <<EOT

wakeproxy is starting on http://127.0.0.1:$PROXY_PORT (deploy API on 127.0.0.1:$API_PORT). Try:

  curl -s -b instance=demo-1 http://127.0.0.1:$PROXY_PORT/           # wakes demo-1, then answers
  curl -s -b instance=demo-2 http://127.0.0.1:$PROXY_PORT/bytes/100 | wc -c
  curl -s -i http://127.0.0.1:$PROXY_PORT/                           # no instance: 404 problem+json
  open http://127.0.0.1:$PROXY_PORT/home in a browser: sign in as foo / bar, create and open your instance
  TOKEN=\$(curl -s -X POST http://127.0.0.1:$API_PORT/login -d '{"username":"foo","password":"bar"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  curl -s -H "Authorization: Bearer \$TOKEN" http://127.0.0.1:$API_PORT/deploy
  curl -s http://127.0.0.1:$API_PORT/metrics

Ctrl-C stops wakeproxy.
EOT
.venv/bin/twistd -n --pidfile= wakeproxy \
    --listen "tcp:$PROXY_PORT" --api-listen "tcp:$API_PORT:interface=127.0.0.1" \
    --passwd "$DEMO_DIR/passwd.txt" --allow-host-network --allow-image 'mock-app:*' \
    --home-upstream "http://127.0.0.1:$HOME_PORT" --loading-page
