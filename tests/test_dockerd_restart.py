"""The runtime's event stream survives a C{dockerd} restart: it reconnects, resyncs, and keeps following."""

import os
import signal
import subprocess
import time

import pytest
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from tests.support import DOCKER_URL, MOCK_IMAGE, docker_client, free_port, remove_containers, unique_name
from wakeproxy.dockerruntime import DockerRuntime
from wakeproxy.runtime import CreateSpec, OwnerLabel

ENSURE_DOCKER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts",
                             "ensure-docker.sh")


def _restart_dockerd() -> None:
    pid = int(subprocess.check_output(["pidof", "dockerd"]).split()[0])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while os.path.exists("/proc/{}".format(pid)):
        if time.monotonic() > deadline:
            raise AssertionError("dockerd did not stop in 30 s")
        time.sleep(0.1)
    subprocess.check_call(["bash", ENSURE_DOCKER])


@pytest.mark.docker
class DockerdRestartTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_stream_survives_restart(self):
        client = docker_client()
        name = unique_name()
        self.addCleanup(lambda: remove_containers(docker_client(), name))
        runtime = DockerRuntime(reactor, DOCKER_URL, OwnerLabel("wakeproxy.test", unique_name("owner")))
        runtime.startService()
        self.addCleanup(runtime.stopService)
        yield runtime.ready()
        yield runtime.create(CreateSpec(name=name, image=MOCK_IMAGE, network="host",
                                        env={"PORT": str(free_port()), "HOST": "127.0.0.1", "IDLE": "0"}))
        self.assertEqual(runtime.connections, 1)

        yield task.deferLater(reactor, 0, lambda: None)
        from twisted.internet.threads import deferToThread
        yield deferToThread(_restart_dockerd)

        deadline = time.monotonic() + 20
        while runtime.connections < 2:
            self.assertLess(time.monotonic(), deadline, "the event stream did not reconnect")
            yield task.deferLater(reactor, 0.05, lambda: None)
        # Still following: a start made with the CLI after the restart reaches the cache.
        client = docker_client()
        client.start(name)
        deadline = time.monotonic() + 1
        while runtime.get(name).state != "running":
            self.assertLess(time.monotonic(), deadline, "a start after the restart was not seen within 1 s")
            yield task.deferLater(reactor, 0.01, lambda: None)
        client.close()
