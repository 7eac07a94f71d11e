"""What the harness needs on the machine, installed when missing (as the Makefile's scripts do)."""

from __future__ import annotations

import datetime
import importlib.util
import os
import shutil
import subprocess
import sys
from typing import Optional

import docker
import docker.errors

from .containers import IMAGE
from .procs import REPO

__all__ = ["ensure_docker", "ensure_image", "ensure_tools"]

_TOOLS = (("nginx", "nginx-light"), ("wrk", "wrk"))


def _have(binary: str) -> bool:
    return shutil.which(binary) is not None or os.path.exists("/usr/sbin/" + binary)


def ensure_tools() -> None:
    """apt-get install nginx-light and wrk, pip install websockets (the WebSocket client), when missing."""
    if importlib.util.find_spec("websockets") is None:
        print("installing websockets ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "websockets"], check=True)
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


#: what C{mock-app:latest} is built from: a newer file means the image lacks a change (say, an endpoint)
_IMAGE_SOURCES = ("mock_app/app.py", "mock_app/Dockerfile", "demo_http/demo_http.py")


def _image_stale(client: docker.DockerClient) -> Optional[str]:
    """Why C{mock-app:latest} must be (re)built, or None when it is there and newer than its sources."""
    try:
        created = client.images.get(IMAGE).attrs["Created"]
    except docker.errors.ImageNotFound:
        return "missing"
    try:
        built = datetime.datetime.fromisoformat(created[:19]).replace(tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        return None
    newer = [name for name in _IMAGE_SOURCES if (REPO / name).exists() and (REPO / name).stat().st_mtime > built + 1]
    return "older than " + ", ".join(newer) if newer else None


def ensure_image(client: docker.DockerClient) -> None:
    """(Re)build C{mock-app:latest} with scripts/build-images.sh when it is missing or older than its sources."""
    why = _image_stale(client)
    if why:
        print("building {} ({}) ...".format(IMAGE, why), flush=True)
        subprocess.run(["bash", str(REPO / "scripts" / "build-images.sh")], check=True, cwd=REPO)
