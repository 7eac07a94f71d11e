#!/usr/bin/env bash
# Podman for `make test-podman` (Debian packages): podman itself and catatonit (the init Podman runs for
# containers created with init=true; Debian's podman does not pull it in). Idempotent: installs only what
# is missing. Starts nothing: tests/test_podman.py runs its own private `podman system service`.
set -euo pipefail
missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman)
[ -x /usr/libexec/podman/catatonit ] || command -v catatonit >/dev/null 2>&1 || missing+=(catatonit)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
