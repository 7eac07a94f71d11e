# -*- test-case-name: tests.test_podman -*-
"""
The Docker runtime against Podman's Docker-compatible API (issue 13): the runtime conformance suite and
the proxy's wake, idle-stop, forwarding and relay wake tests, run unchanged against a private rootful
C{podman system service} (tests/privatepodman.py) that this module starts and removes. The tests and the
wakeproxy processes they start reach it through C{DOCKER_HOST}, as a user would point wakeproxy at Podman.

Opt in: C{make test-podman} (installs Debian's podman and runs C{pytest -m podman tests/test_podman.py});
pytest.ini leaves the C{podman} marker out of a plain run. Skipped, with the reason, when podman is not
installed. What Podman does differently and how the runtime copes: README, "Podman".
"""

import os

import docker
import pytest
from twisted.internet import threads
from twisted.trial.unittest import SynchronousTestCase

from tests import test_idle_docker, test_proxy_docker, test_relay_docker
from tests import test_runtime_conformance as conformance
from tests.privatepodman import PrivatePodman, podman_missing
from tests.support import MOCK_IMAGE, docker_client, free_port, remove_containers, unique_name
from wakeproxy.runtime.docker import runtime_failure
from wakeproxy.runtime.interface import WrongState

pytestmark = [pytest.mark.podman, pytest.mark.docker, pytest.mark.skipif(bool(podman_missing()),
                                                                           reason=podman_missing() or "-")]

#: the running service, while this module's tests run
_engine = {}


@pytest.fixture(scope="module", autouse=True)
def podman_engine():
    """A private Podman service with the test image, as C{DOCKER_HOST} for the module's tests."""
    engine = PrivatePodman()
    try:
        engine.start(timeout=60)
        engine.load_image(MOCK_IMAGE)
    except Exception:
        engine.remove()
        raise
    before = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = engine.url
    _engine["podman"] = engine
    try:
        yield engine
    finally:
        _engine.clear()
        if before is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = before
        engine.remove()


class EngineIsPodmanTests(SynchronousTestCase):
    """The tests below really talk to Podman (not to the machine's Docker engine)."""

    def test_the_engine_is_podman(self):
        client = docker_client()
        self.addCleanup(client.close)
        self.assertEqual(os.environ["DOCKER_HOST"], _engine["podman"].url)
        names = [c.get("Name") for c in client.version().get("Components") or []]
        self.assertIn("Podman Engine", names)

    def test_host_network_summaries_lack_what_the_runtime_inspects_for(self):
        """
        Why the runtime inspects on resync under Podman: its list entries carry no HostConfig (so no
        network mode) and no health in Status. If a Podman release adds them, this fails: drop the inspect.
        """
        client = docker_client()
        self.addCleanup(client.close)
        name = unique_name()
        self.addCleanup(remove_containers, client, name)
        client.create_container(MOCK_IMAGE, name=name, environment={"PORT": str(free_port()), "HOST": "127.0.0.1"},
                                host_config=client.create_host_config(network_mode="host"))
        summary, = client.containers(all=True, filters={"name": name})
        self.assertIsNone(summary.get("HostConfig"))
        self.assertEqual(client.inspect_container(name)["HostConfig"]["NetworkMode"], "host")

    def test_a_taken_name_is_a_500_and_the_runtime_reads_it_as_409(self):
        client = docker_client()
        self.addCleanup(client.close)
        name = unique_name()
        self.addCleanup(remove_containers, client, name)
        client.create_container(MOCK_IMAGE, name=name)
        with self.assertRaises(docker.errors.APIError) as raised:
            client.create_container(MOCK_IMAGE, name=name)
        self.assertEqual(raised.exception.status_code, 500)
        self.assertIsInstance(runtime_failure(raised.exception), WrongState)


class PodmanRuntimeTests(conformance.DockerRuntimeTests):
    """The runtime conformance suite (DockerRuntimeTests), every case."""

    def run_health_check(self, name):
        """
        Podman schedules HEALTHCHECKs with systemd timers, and there is no systemd here: nothing runs the
        check. Run it once as the timer would; its status must still reach the cache from the event stream
        only (Podman's health_status event is bare and may carry the status before: the runtime inspects).
        """
        return threads.deferToThread(_engine["podman"].run_healthcheck, name)


class PodmanWakeTests(test_proxy_docker.WakeTests):
    """Hold, wake (a herd of 200 → one start), replay, wake failures, through Podman."""



class PodmanUnknownTests(test_proxy_docker.UnknownTests):
    """Unmanaged and missing instances stay unknown under Podman too."""


class PodmanIdleStopTests(test_idle_docker.IdleStopTests):
    """The other half of scale-to-zero: idle stops, pause, a request during a stop."""



class PodmanWebSocketWakeTests(test_relay_docker.WebSocketWakeTests):
    """A WebSocket handshake that wakes a stopped instance; tunnel backpressure."""


class PodmanIdleTunnelTests(test_relay_docker.IdleTunnelTests):
    """Idle tunnels and the close 1001 sent when an instance is stopped."""


class PodmanUploadTests(test_relay_docker.UploadTests):
    """Uploads (Expect: 100-continue, chunked) that wake a stopped instance."""



class PodmanForwardingTests(test_proxy_docker.ForwardingTests):
    """Forwarding to instances that were already running when wakeproxy started (their address from the resync)."""
