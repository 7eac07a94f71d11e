"""
What the integration tests share: the Docker engine (required: a missing engine fails the test, it
never silently skips it), free loopback ports, unique names and cleanup of what a test created.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Optional

import docker

__all__ = ["MOCK_IMAGE", "Twistd", "docker_client", "free_port", "remove_containers", "unique_name"]

MOCK_IMAGE = os.environ.get("WAKEPROXY_TEST_IMAGE", "mock-app:latest")
DOCKER_URL = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def docker_client() -> docker.APIClient:
    """A low-level client; raise with a sentence telling how to get an engine when none answers."""
    client = docker.APIClient(base_url=DOCKER_URL, version="auto", timeout=60)
    try:
        client.ping()
    except Exception as e:
        raise RuntimeError("no Docker engine answers at {} ({}); run `make test`, which starts one".format(
            DOCKER_URL, e))
    return client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique_name(prefix: str = "wpt") -> str:
    return "{}-{}".format(prefix, uuid.uuid4().hex[:10])


def remove_containers(client: docker.APIClient, *names: str) -> None:
    for name in names:
        try:
            client.remove_container(name, force=True, v=True)
        except docker.errors.NotFound:
            pass


class Twistd:
    """
    C{twistd -n wakeproxy} as a child process, run from outside the source tree so that the installed
    package (and its plugin) is what runs. C{start} waits until both listeners accept connections.
    """

    def __init__(self, *args: str, env: Optional[dict] = None, listen: str = "tcp:{port}:interface=127.0.0.1"):
        self.proxy_port = free_port()
        self.api_port = free_port()
        self.args = [
            "--listen", listen.format(port=self.proxy_port),
            "--api-listen", "tcp:{}:interface=127.0.0.1".format(self.api_port),
        ] + list(args)
        self.env = dict(os.environ, **(env or {}))
        self.env.pop("PYTHONPATH", None)
        self.process: Optional[subprocess.Popen] = None
        self.logfile = tempfile.NamedTemporaryFile(prefix="wakeproxy-", suffix=".log", delete=False)

    @property
    def proxy_url(self) -> str:
        return "http://127.0.0.1:{}".format(self.proxy_port)

    @property
    def api_url(self) -> str:
        return "http://127.0.0.1:{}".format(self.api_port)

    def start(self, timeout: float = 15.0) -> "Twistd":
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        self.process = subprocess.Popen(
            [twistd, "-n", "--pidfile=", "wakeproxy"] + self.args,
            cwd=tempfile.gettempdir(), env=self.env, stdout=self.logfile, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        for port in (self.proxy_port, self.api_port):
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError("twistd exited with {}:\n{}".format(self.process.returncode, self.log()))
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("twistd did not listen on {} in {}s:\n{}".format(port, timeout, self.log()))
                    time.sleep(0.05)
        return self

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then wait; return the exit status (143 is the normal one: twistd re-raises SIGTERM)."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def log(self) -> str:
        with open(self.logfile.name, encoding="utf-8", errors="replace") as f:
            return f.read()
