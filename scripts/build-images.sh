#!/usr/bin/env bash
# Build the local base image (debootstrap, no registry needed) and the project's images on top of it.
# Idempotent: the base is built once and cached; docker build reuses its layer cache.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=${BASE_IMAGE:-wakeproxy-base:bookworm}

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    if ! command -v debootstrap >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
    ROOTFS=$(mktemp -d /var/tmp/wakeproxy-rootfs.XXXXXX)
    trap 'rm -rf "$ROOTFS"' EXIT
    echo "debootstrap bookworm into $ROOTFS (about a minute) ..."
    debootstrap --variant=minbase --include=python3,ca-certificates bookworm "$ROOTFS" "$MIRROR" >/var/log/wakeproxy-debootstrap.log 2>&1 \
        || { tail -20 /var/log/wakeproxy-debootstrap.log >&2; exit 1; }
    tar -C "$ROOTFS" -c . | docker import - "$BASE_IMAGE" >/dev/null
    echo "built $BASE_IMAGE"
fi

docker build -q --build-arg BASE="$BASE_IMAGE" -f mock_app/Dockerfile -t mock-app:latest . 2>&1 >/dev/null | bash scripts/quiet-noise.sh >&2
docker build -q --build-arg BASE="$BASE_IMAGE" -f mock_home/Dockerfile -t mock-home:latest . 2>&1 >/dev/null | bash scripts/quiet-noise.sh >&2

# wakeproxy: its packages are installed here, on the host, into the build context (the image's Python is
# the same minor version), so the image build needs no network.
PIP=${PIP:-.venv/bin/pip}
stamp=build/image-site/.source-stamp
source_stamp=$(find setup.py wakeproxy twisted/plugins -name "*.py" -o -name "*.json" -o -name setup.py | sort | xargs cat | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$source_stamp" ]; then
    rm -rf build/image-site
    "$PIP" install -q --no-compile --target build/image-site . 2>&1 | bash scripts/quiet-noise.sh
    rm -rf build/lib build/bdist* 2>/dev/null || true
    echo "$source_stamp" > "$stamp"
fi
docker build -q --build-arg BASE="$BASE_IMAGE" -t wakeproxy:latest . 2>&1 >/dev/null | bash scripts/quiet-noise.sh >&2
echo "images ready: $BASE_IMAGE mock-app:latest mock-home:latest wakeproxy:latest"
