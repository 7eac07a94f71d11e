#!/usr/bin/env bash
# The demo: two stopped mock_app instances owned by the demo user, mock_home (the site's home) and wakeproxy
# in the foreground, on 127.0.0.1 (HOST=0.0.0.0 make run to listen on every address).
# Access is signed: a request needs an access token for its instance (mock_home sets it when you open one).
# Ctrl-C stops wakeproxy (gracefully), mock_home and the demo's instances; `make clean-demo` removes them.
set -euo pipefail
cd "$(dirname "$0")/.."

HOST=${HOST:-127.0.0.1}
PROXY_PORT=${PROXY_PORT:-8000}
API_PORT=${API_PORT:-8008}
HOME_PORT=${HOME_PORT:-8080}
DEMO_DIR=build/demo
mkdir -p "$DEMO_DIR"

# A demo user, foo / bar (the old spawner's example), in a salted passwd file made here, never committed.
if [ ! -s "$DEMO_DIR/passwd.txt" ]; then
    echo bar | .venv/bin/python -m wakeproxy.api.passwd add foo --file "$DEMO_DIR/passwd.txt" --stdin >/dev/null
fi
# The key that signs access tokens (made once here, never committed).
if [ ! -s "$DEMO_DIR/access.key" ]; then
    (umask 077; head -c 48 /dev/urandom | base64 | tr -d '\n' > "$DEMO_DIR/access.key"; echo >> "$DEMO_DIR/access.key")
fi

for i in 1 2; do
    name="demo-$i"
    port=$((9000 + i))
    if ! docker container inspect "$name" >/dev/null 2>&1; then
        docker create --name "$name" --network host \
            --label wakeproxy.managed=true --label wakeproxy.owner=foo --label "wakeproxy.port=$port" \
            --label wakeproxy.idle-timeout=2m --label wakeproxy.demo=1 \
            -e HOST=127.0.0.1 -e PORT=$port -e IDLE=0 -e "CONNSTR=db $i" -e "INSTANCE=$name" \
            mock-app:latest >/dev/null
        echo "created $name (owned by foo; stopped; listens on 127.0.0.1:$port once woken; stopped after 2m idle)"
    fi
done

docker rm -f wakeproxy-demo-home >/dev/null 2>&1 || true
docker run -d --rm --name wakeproxy-demo-home --network host \
    -e PORT=$HOME_PORT -e HOST=127.0.0.1 -e "API_URL=http://127.0.0.1:$API_PORT" -e INSTANCE_NETWORK=host \
    mock-home:latest >/dev/null

finish() {
    trap - EXIT INT TERM
    echo
    echo "stopping mock_home and the demo's instances (make clean-demo removes them)"
    docker rm -f wakeproxy-demo-home >/dev/null 2>&1 || true
    docker ps -q --filter label=wakeproxy.demo=1 | xargs -r docker stop -t 5 >/dev/null 2>&1 || true
    exit 0  # the demo ended as asked (Ctrl-C): not an error for make
}
trap finish EXIT
trap 'exit 0' INT TERM

API=http://127.0.0.1:$API_PORT
cat <<EOT

wakeproxy is starting on http://$HOST:$PROXY_PORT (deploy API on 127.0.0.1:$API_PORT). Try:

  open http://127.0.0.1:$PROXY_PORT/home in a browser: sign in as foo / bar, create or open your instance
  TOKEN=\$(curl -s -X POST $API/login -d '{"username":"foo","password":"bar"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  ACCESS=\$(curl -s -X POST $API/deploy/demo-1/access -H "Authorization: Bearer \$TOKEN" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  curl -s -b "instance=demo-1; wakeproxy_access=\$ACCESS" http://127.0.0.1:$PROXY_PORT/   # wakes demo-1, then answers
  curl -s -i -b instance=demo-1 http://127.0.0.1:$PROXY_PORT/                           # no token: 401 problem+json
  curl -s -H "Authorization: Bearer \$TOKEN" $API/deploy
  curl -s $API/metrics

Ctrl-C stops wakeproxy, mock_home and the demo's instances.
EOT
WAKEPROXY=(.venv/bin/twistd -n --pidfile= wakeproxy
    --listen "tcp:$PROXY_PORT:interface=$HOST" --api-listen "tcp:$API_PORT:interface=127.0.0.1"
    --passwd "$DEMO_DIR/passwd.txt" --allow-host-network --allow-image 'mock-app:*'
    --access-key "$DEMO_DIR/access.key" --trusted-proxy 127.0.0.1/32
    --home-upstream "http://127.0.0.1:$HOME_PORT" --loading-page)
# Not exec: the EXIT trap must run after wakeproxy stops. On a terminal, wakeproxy runs as its own job in
# the foreground, so Ctrl-C reaches it alone (it drains and exits) and neither this script nor make see the
# signal (make prints no "Interrupt" error); elsewhere it simply runs in this process group.
if [ -t 0 ] && [ -t 1 ]; then
    set -m
    "${WAKEPROXY[@]}" &
    fg %1 >/dev/null || true
else
    "${WAKEPROXY[@]}" || true
fi
