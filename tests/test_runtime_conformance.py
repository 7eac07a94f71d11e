"""
One conformance suite for every L{IContainerRuntime}: the in-memory fake and the real Docker engine
must behave the same, so unit tests written against the fake mean something.
"""

import time

import pytest
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from tests.support import DOCKER_URL, MOCK_IMAGE, docker_client, free_port, remove_containers, unique_name
from wakeproxy.dockerruntime import DockerRuntime, container_from_summary
from wakeproxy.memoryruntime import MemoryRuntime
from wakeproxy.runtime import (
    CreateSpec,
    IContainerRuntime,
    NameInUse,
    NoSuchImage,
    NoSuchInstance,
    OwnerLabel,
    RuntimeFailure,
)


class RuntimeConformanceMixin:
    """Tests every runtime passes. Subclasses provide the runtime and the engine's back doors."""

    def make_runtime(self):
        raise NotImplementedError

    def spec(self, name: str, **kw) -> CreateSpec:
        raise NotImplementedError

    def create_foreign(self, name: str) -> None:
        """A container without the owner label, created behind wakeproxy's back."""
        raise NotImplementedError

    def start_behind_our_back(self, name: str) -> None:
        raise NotImplementedError

    def setUp(self):
        self.runtime = self.make_runtime()

    def wait_for(self, predicate, timeout=1.0):
        """Spin the reactor until C{predicate()} holds, at most C{timeout} seconds (then fail)."""
        deadline = time.monotonic() + timeout

        def check():
            if predicate():
                return True
            if time.monotonic() > deadline:
                raise AssertionError("condition not met within {}s".format(timeout))
            return task.deferLater(reactor, 0.01, check)

        return defer.maybeDeferred(check)

    def test_interface(self):
        self.assertTrue(verifyObject(IContainerRuntime, self.runtime))

    @defer.inlineCallbacks
    def test_create_start_stop_remove(self):
        name = unique_name()
        created = yield self.runtime.create(self.spec(name, labels={"app": "x"}))
        self.assertEqual((created.name, created.state), (name, "created"))
        self.assertEqual(created.labels["app"], "x")
        self.assertTrue(self.runtime.owner.matches(created.labels))
        self.assertEqual(self.runtime.get(name).state, "created")
        self.assertIn(name, [c.name for c in self.runtime.list()])

        yield self.runtime.start(name)
        self.assertEqual(self.runtime.get(name).state, "running")
        yield self.runtime.start(name)  # starting a running container is harmless
        self.assertEqual(self.runtime.get(name).state, "running")

        yield self.runtime.stop(name, timeout=5)
        self.assertEqual(self.runtime.get(name).state, "exited")

        yield self.runtime.remove(name)
        self.assertIsNone(self.runtime.get(name))
        self.assertNotIn(name, [c.name for c in self.runtime.list()])

    @defer.inlineCallbacks
    def test_pause_unpause(self):
        name = unique_name()
        yield self.runtime.create(self.spec(name))
        yield self.runtime.start(name)
        yield self.runtime.pause(name)
        self.assertEqual(self.runtime.get(name).state, "paused")
        yield self.runtime.unpause(name)
        self.assertEqual(self.runtime.get(name).state, "running")
        yield self.runtime.remove(name, force=True)
        self.assertIsNone(self.runtime.get(name))

    @defer.inlineCallbacks
    def test_remove_running_needs_force(self):
        name = unique_name()
        yield self.runtime.create(self.spec(name))
        yield self.runtime.start(name)
        yield self.assertFailure(self.runtime.remove(name), RuntimeFailure)
        self.assertEqual(self.runtime.get(name).state, "running")
        yield self.runtime.remove(name, force=True)

    @defer.inlineCallbacks
    def test_name_in_use(self):
        name = unique_name()
        yield self.runtime.create(self.spec(name))
        yield self.assertFailure(self.runtime.create(self.spec(name)), NameInUse)

    @defer.inlineCallbacks
    def test_no_such_image(self):
        name = unique_name()
        yield self.assertFailure(self.runtime.create(self.spec(name, image="wakeproxy-nope:missing")), NoSuchImage)
        self.assertIsNone(self.runtime.get(name))

    @defer.inlineCallbacks
    def test_pull_of_a_missing_image_fails(self):
        # No registry is reachable here, so only the failure path runs on Docker: a registry on a closed
        # loopback port refuses at once (and no traffic leaves the machine).
        image = "127.0.0.1:9/wakeproxy-nope:missing"
        yield self.assertFailure(self.runtime.pull(image), NoSuchImage)
        yield self.assertFailure(self.runtime.create(self.spec(unique_name(), image=image)), NoSuchImage)

    @defer.inlineCallbacks
    def test_unknown_names(self):
        name = unique_name()
        for op in (self.runtime.start, self.runtime.pause, self.runtime.unpause, self.runtime.remove):
            yield self.assertFailure(op(name), NoSuchInstance)
        yield self.assertFailure(self.runtime.stop(name, 1), NoSuchInstance)

    @defer.inlineCallbacks
    def test_foreign_containers_do_not_exist(self):
        name = unique_name()
        self.create_foreign(name)
        yield self.wait_for(lambda: True)
        self.assertIsNone(self.runtime.get(name))
        self.assertNotIn(name, [c.name for c in self.runtime.list()])
        for op in (self.runtime.start, self.runtime.pause, self.runtime.unpause, self.runtime.remove):
            yield self.assertFailure(op(name), NoSuchInstance)
        yield self.assertFailure(self.runtime.stop(name, 1), NoSuchInstance)
        # ...but its name is still taken
        yield self.assertFailure(self.runtime.create(self.spec(name)), NameInUse)

    @defer.inlineCallbacks
    def test_watch_sees_changes_made_elsewhere(self):
        name = unique_name()
        seen = []
        unwatch = self.runtime.watch(lambda n, c: seen.append((n, c.state if c else None)))
        self.addCleanup(unwatch)
        yield self.runtime.create(self.spec(name))
        self.start_behind_our_back(name)
        yield self.wait_for(lambda: self.runtime.get(name) is not None and self.runtime.get(name).state == "running")
        self.assertIn((name, "running"), seen)
        yield self.runtime.remove(name, force=True)
        yield self.wait_for(lambda: (name, None) in seen)

    @defer.inlineCallbacks
    def test_unwatch(self):
        seen = []
        unwatch = self.runtime.watch(lambda n, c: seen.append(n))
        unwatch()
        name = unique_name()
        yield self.runtime.create(self.spec(name))
        self.assertEqual(seen, [])


class MemoryRuntimeTests(RuntimeConformanceMixin, TestCase):
    def make_runtime(self):
        return MemoryRuntime()

    def spec(self, name, **kw):
        kw.setdefault("image", "mock-app:latest")
        return CreateSpec(name=name, **kw)

    def create_foreign(self, name):
        self.runtime.add_foreign(name)

    def start_behind_our_back(self, name):
        self.runtime.start_behind_our_back(name)

    @defer.inlineCallbacks
    def test_pull_makes_a_pullable_image_local(self):
        self.runtime.pullable.add("other:1")
        yield self.runtime.pull("other:1")
        name = unique_name()
        created = yield self.runtime.create(self.spec(name, image="other:1"))
        self.assertEqual(created.image, "other:1")


@pytest.mark.docker
class DockerRuntimeTests(RuntimeConformanceMixin, TestCase):
    timeout = 60

    def make_runtime(self):
        self.client = docker_client()
        self.names = []
        owner = OwnerLabel("wakeproxy.test", unique_name("owner"))
        runtime = DockerRuntime(reactor, DOCKER_URL, owner)
        runtime.startService()
        self.addCleanup(self._cleanup, runtime)
        return runtime

    def _cleanup(self, runtime):
        remove_containers(self.client, *self.names)
        runtime.stopService()
        self.client.close()

    def setUp(self):
        RuntimeConformanceMixin.setUp(self)
        return self.runtime.ready()

    def spec(self, name, **kw):
        self.names.append(name)
        kw.setdefault("image", MOCK_IMAGE)
        port = free_port()
        return CreateSpec(name=name, network="host", env={"PORT": str(port), "HOST": "127.0.0.1", "IDLE": "0"}, **kw)

    def create_foreign(self, name):
        self.names.append(name)
        self.client.create_container(MOCK_IMAGE, name=name, labels={"other": "x"},
                                     host_config=self.client.create_host_config(network_mode="host"))

    def start_behind_our_back(self, name):
        self.client.start(name)

    @defer.inlineCallbacks
    def test_health_from_events(self):
        """A HEALTHCHECK's status reaches the cache from the event stream, no polling."""
        name = unique_name()
        yield self.runtime.create(self.spec(name, healthcheck={
            "test": ["CMD", "python3", "-c", "pass"], "interval": 200_000_000, "timeout": 1_000_000_000,
            "retries": 1, "start_period": 0}))
        yield self.runtime.start(name)
        self.assertEqual(self.runtime.get(name).health, "starting")
        yield self.wait_for(lambda: self.runtime.get(name).health == "healthy", timeout=5)

    @defer.inlineCallbacks
    def test_exit_on_its_own_is_seen(self):
        name = unique_name()
        yield self.runtime.create(self.spec(name))
        yield self.runtime.start(name)
        self.client.kill(name)  # SIGKILL: a PID 1 may not have its SIGTERM handler yet
        yield self.wait_for(lambda: self.runtime.get(name).state == "exited", timeout=3)


class SummaryParsingTests(TestCase):
    """The resync parses the list call's summaries without an inspect per container."""

    def test_table(self):
        base = {"Id": "a" * 64, "Names": ["/m1"], "Image": "mock-app:latest", "Labels": {"k": "v"},
                "HostConfig": {"NetworkMode": "host"}, "NetworkSettings": {"Networks": {"host": {"IPAddress": ""}}}}
        cases = [
            ({"State": "running", "Status": "Up 3 seconds (healthy)"}, ("running", "healthy", 0)),
            ({"State": "running", "Status": "Up 1 second (health: starting)"}, ("running", "starting", 0)),
            ({"State": "running", "Status": "Up 2 minutes (unhealthy)"}, ("running", "unhealthy", 0)),
            ({"State": "running", "Status": "Up 2 minutes"}, ("running", "none", 0)),
            ({"State": "exited", "Status": "Exited (3) 2 seconds ago"}, ("exited", "none", 3)),
            ({"State": "exited", "Status": "Exited (137) 2 hours ago"}, ("exited", "none", 137)),
            ({"State": "paused", "Status": "Up 5 seconds (Paused)"}, ("paused", "none", 0)),
            ({"State": "created", "Status": "Created"}, ("created", "none", 0)),
        ]
        for extra, expected in cases:
            c = container_from_summary(dict(base, **extra))
            self.assertEqual((c.state, c.health, c.exit_code), expected, extra)
            self.assertEqual((c.name, c.network_mode, c.labels), ("m1", "host", {"k": "v"}))


class DockerRuntimeReadyTests(TestCase):
    """Waiters for the first sync may give up; the sync then fires the others and nothing raises."""

    def test_cancelled_waiter_is_dropped(self):
        runtime = DockerRuntime(reactor, DOCKER_URL, OwnerLabel("wakeproxy.test", "unused"))
        gave_up, waiting = runtime.ready(), runtime.ready()
        gave_up.cancel()
        self.failureResultOf(gave_up, defer.CancelledError)
        runtime._replace_all([])  # what the event thread hands the reactor after the first list
        self.assertIsNone(self.successResultOf(waiting))
        self.assertIsNone(self.successResultOf(runtime.ready()))
