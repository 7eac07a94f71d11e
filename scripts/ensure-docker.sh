#!/usr/bin/env bash
# Make sure a Docker engine answers on the local socket: install docker.io and start dockerd if needed.
# Idempotent. Flags follow shared/ENVIRONMENT.md: no default bridge, no iptables (tests use host networking).
set -euo pipefail

if ! command -v dockerd >/dev/null 2>&1; then
    echo "installing docker.io ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi

if docker info >/dev/null 2>&1; then
    exit 0
fi

echo "starting dockerd ..."
nohup dockerd --host unix:///var/run/docker.sock \
    --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
    >/var/log/dockerd.log 2>&1 &

for _ in $(seq 1 150); do
    if docker info >/dev/null 2>&1; then
        echo "dockerd is up"
        exit 0
    fi
    sleep 0.2
done
echo "dockerd did not answer within 30 s; see /var/log/dockerd.log" >&2
tail -20 /var/log/dockerd.log >&2 || true
exit 1
