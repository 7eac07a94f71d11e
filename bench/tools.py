"""What the harness needs on the machine, installed when missing (as the Makefile's scripts do)."""

from __future__ import annotations

import os
import shutil
import subprocess

import docker
import docker.errors

from .containers import IMAGE
from .procs import REPO

__all__ = ["ensure_docker", "ensure_image", "ensure_tools"]

_TOOLS = (("nginx", "nginx-light"), ("wrk", "wrk"))


def _have(binary: str) -> bool:
    return shutil.which(binary) is not None or os.path.exists("/usr/sbin/" + binary)


def ensure_tools() -> None:
    """apt-get install nginx-light and wrk when they are missing."""
    missing = [package for binary, package in _TOOLS if not _have(binary)]
    if not missing:
        return
    print("installing {} ...".format(" ".join(missing)), flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env, stdout=subprocess.DEVNULL)


def ensure_docker() -> docker.DockerClient:
    """A client of the local engine; runs scripts/ensure-docker.sh first when the engine does not answer."""
    try:
        client = docker.from_env(timeout=120)
        client.ping()
        return client
    except Exception:
        subprocess.run(["bash", str(REPO / "scripts" / "ensure-docker.sh")], check=True, cwd=REPO)
        client = docker.from_env(timeout=120)
        client.ping()
        return client


def ensure_image(client: docker.DockerClient) -> None:
    """Build C{mock-app:latest} with scripts/build-images.sh when it is missing."""
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        subprocess.run(["bash", str(REPO / "scripts" / "build-images.sh")], check=True, cwd=REPO)
