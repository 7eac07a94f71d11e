"""
The runtime's event stream survives a C{dockerd} restart: it reconnects, resyncs, and keeps following.
The engine restarted is a private one the test starts and removes (tests/privatedocker.py), never the
machine's.
"""

import time

import pytest
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from tests.privatedocker import PrivateDockerd
from tests.support import MOCK_IMAGE, free_port, unique_name
from wakeproxy.runtime.docker import DockerRuntime
from wakeproxy.runtime.interface import CreateSpec, OwnerLabel


@pytest.mark.docker
class DockerdRestartTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_stream_survives_restart(self):
        from twisted.internet.threads import deferToThread

        engine = PrivateDockerd()
        self.addCleanup(engine.remove)
        yield deferToThread(engine.start)
        yield deferToThread(engine.load_image, MOCK_IMAGE)
        name = unique_name()
        runtime = DockerRuntime(reactor, engine.url, OwnerLabel("wakeproxy.test", unique_name("owner")))
        runtime.startService()
        self.addCleanup(runtime.stopService)
        yield runtime.ready()
        yield runtime.create(CreateSpec(name=name, image=MOCK_IMAGE, network="host",
                                        env={"PORT": str(free_port()), "HOST": "127.0.0.1", "IDLE": "0"}))
        self.assertEqual(runtime.connections, 1)

        yield task.deferLater(reactor, 0, lambda: None)
        yield deferToThread(engine.restart)

        deadline = time.monotonic() + 20
        while runtime.connections < 2:
            self.assertLess(time.monotonic(), deadline, "the event stream did not reconnect")
            yield task.deferLater(reactor, 0.05, lambda: None)
        # Still following: a start made with the CLI after the restart reaches the cache.
        import docker

        client = docker.APIClient(base_url=engine.url, version="auto", timeout=30)
        client.start(name)
        deadline = time.monotonic() + 1
        while runtime.get(name).state != "running":
            self.assertLess(time.monotonic(), deadline, "a start after the restart was not seen within 1 s")
            yield task.deferLater(reactor, 0.01, lambda: None)
        client.close()
