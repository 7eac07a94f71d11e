"""
A single-node Docker Swarm for tests, on a private engine (L{PrivateDockerd}): the machine's engine is
never put in swarm mode. C{start} starts the engine, copies the mock app's image into it and runs
C{swarm init} on loopback; C{remove} leaves the swarm and removes the engine and all it wrote.
"""

import time

import docker

from tests.privatedocker import PrivateDockerd
from tests.support import MOCK_IMAGE, free_port

__all__ = ["PrivateSwarm"]


class PrivateSwarm:
    def __init__(self):
        self.engine = PrivateDockerd()
        self.url = self.engine.url
        self.client = None
        #: seconds the engine, the image copy and the swarm init took (for the report).
        self.setup_seconds = 0.0

    def start(self) -> "PrivateSwarm":
        began = time.monotonic()
        try:
            self.engine.start()
            self.engine.load_image(MOCK_IMAGE)
            self.client = docker.APIClient(base_url=self.url, version="auto", timeout=60)
            self.client.init_swarm(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:{}".format(free_port()))
        except BaseException:
            self.remove()
            raise
        self.setup_seconds = time.monotonic() - began
        return self

    def remove_services(self, *names: str) -> None:
        for name in names:
            try:
                self.client.remove_service(name)
            except docker.errors.NotFound:
                pass

    def remove(self) -> None:
        """Leave the swarm (its services go with it), then remove the engine."""
        if self.client is not None:
            try:
                self.client.leave_swarm(force=True)
            except Exception:
                pass
            self.client.close()
            self.client = None
        self.engine.remove()
