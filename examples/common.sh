# Shared by the example scripts: where wakeproxy is, who signs in, and how to get a token.
# Override any of these in the environment, e.g. `API=http://127.0.0.1:8008 N=3 ./create-instances.sh`.
API=${API:-http://127.0.0.1:8008}          # the deploy API (--api-listen)
PROXY=${PROXY:-http://127.0.0.1:8000}      # the proxy listener (--listen)
WP_USER=${WP_USER:-foo}
WP_PASSWORD=${WP_PASSWORD:-bar}
N=${N:-2}                                  # how many instances
PREFIX=${PREFIX:-minion}                   # instance names: minion-1 .. minion-N
NETWORK=${NETWORK:-host}                   # host: direct mode on 127.0.0.1 ports; else a Traefik network
BASE_PORT=${BASE_PORT:-9100}               # host mode: minion-i listens on BASE_PORT+i

json_field() {  # json_field FIELD < document
    python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

login() {
    local answer
    answer=$(curl -sS -X POST "$API/login" -H 'Content-Type: application/json' \
        -d "{\"username\": \"$WP_USER\", \"password\": \"$WP_PASSWORD\"}")
    TOKEN=$(printf '%s' "$answer" | json_field token) || { echo "login failed: $answer" >&2; exit 1; }
}
