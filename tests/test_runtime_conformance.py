"""
One conformance suite for every L{IContainerRuntime}: the in-memory fake and the real Docker engine
must behave the same, so unit tests written against the fake mean something.

Engine failures are part of it: the Docker runtime gets a L{FailingClient} (the SDK's client, whose chosen
calls raise what the SDK raises when the engine times out, resets the connection or answers 500, before
or after doing the work), the fake the same failures by name (L{MemoryRuntime.fail_next}); both must
answer them as L{EngineFailure}s and leave no container behind from a create that failed.
"""

import time

import docker.errors
import docker.types
import pytest
import requests
import requests.exceptions
import urllib3.exceptions
from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from tests.privateswarm import PrivateSwarm
from tests.support import MOCK_IMAGE, can_connect, docker_client, docker_url, free_port, remove_containers, unique_name
from wakeproxy.runtime.docker import DockerRuntime, container_from_inspect, container_from_summary, runtime_failure
from wakeproxy.runtime.memory import FAULTS, MemoryRuntime
from wakeproxy.runtime.swarm import SwarmRuntime
from wakeproxy.waking.labels import direct_address
from wakeproxy.runtime.interface import (
    CREATING,
    CreateSpec,
    EngineFailure,
    EngineUnavailable,
    IContainerRuntime,
    NameInUse,
    NoSuchImage,
    NoSuchInstance,
    NotSupported,
    OwnerLabel,
    RuntimeFailure,
    WrongState,
)

#: The failure kinds both runtimes can be given (names of L{FAULTS}).
KINDS = tuple(sorted(FAULTS))
#: What the SDK's errors say that an API client must never see.
_INTERNALS = ("/var/run", "docker.sock", "localhost", "127.0.0.1", "Pool", "http+docker")


def sdk_error(kind: str) -> Exception:
    """What the Docker SDK (7.x, on requests and urllib3) raises when the engine fails in this way."""
    where = "UnixHTTPConnectionPool(host='localhost', port=None)"
    if kind == "timeout":
        return requests.exceptions.ReadTimeout(urllib3.exceptions.ReadTimeoutError(
            None, "/v1.41/containers/create", "{}: Read timed out. (read timeout=60)".format(where)))
    if kind == "reset":
        return requests.exceptions.ConnectionError(urllib3.exceptions.ProtocolError(
            "Connection aborted.", ConnectionResetError(104, "Connection reset by peer")))
    if kind == "refused":
        return requests.exceptions.ConnectionError("{}: Max retries exceeded with url: /v1.41/containers/json "
                                                   "(Caused by FileNotFoundError(2, 'No such file or directory: "
                                                   "/var/run/docker.sock'))".format(where))
    if kind == "protocol":
        return urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead(0 bytes read, 2 more expected)")
    if kind == "socket":
        return ConnectionResetError(104, "Connection reset by peer")
    if kind == "server-error":
        response = requests.Response()
        response.status_code = 500
        return docker.errors.APIError("500 Server Error for http+docker://localhost/v1.41/containers/create",
                                      response=response, explanation="injected server error")
    raise ValueError(kind)


class FailurePlan:
    """Which SDK calls fail, how, and whether before or after the engine did the work."""

    def __init__(self):
        self._plans = []

    def add(self, method: str, error: Exception, after: bool = False, times: int = 1) -> None:
        self._plans.append([method, error, after, times])

    def take(self, method: str, after: bool):
        for plan in self._plans:
            if plan[0] == method and plan[2] == after:
                plan[3] -= 1
                if plan[3] <= 0:
                    self._plans.remove(plan)
                return plan[1]
        return None


class FailingClient:
    """A C{docker.APIClient} whose calls fail as L{FailurePlan} says; everything else is the real client's."""

    def __init__(self, client, plan: FailurePlan):
        self._client = client
        self._plan = plan

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            error = self._plan.take(name, after=False)
            if error is not None:
                raise error
            result = attr(*args, **kwargs)
            error = self._plan.take(name, after=True)
            if error is not None:
                raise error
            return result

        return call


def found(inspect, name: str) -> bool:
    """Whether the engine's C{inspect(name)} finds it."""
    try:
        inspect(name)
    except docker.errors.NotFound:
        return False
    return True


def failing_operations(plan: FailurePlan):
    """A client factory for a runtime: its first client (the one operations use) fails as C{plan} says."""
    clients = []

    def client_factory(**options):
        client = docker.APIClient(**options)
        clients.append(client)
        # the event thread's own clients are left alone
        return FailingClient(client, plan) if len(clients) == 1 else client

    return client_factory


#: The runtime operations failures are injected into, and the SDK call each one makes.
SDK_METHODS = {"create": "create_container", "start": "start", "stop": "stop", "pause": "pause",
               "unpause": "unpause", "remove": "remove_container", "pull": "pull", "list": "containers"}
#: The same for the Swarm runtime (starting and stopping are service updates).
SWARM_SDK_METHODS = {"create": "create_service", "start": "update_service", "stop": "update_service",
                     "remove": "remove_service", "pull": "pull", "list": "services"}


class RuntimeConformanceMixin:
    """Tests every runtime passes. Subclasses provide the runtime and the engine's back doors."""

    #: False for a runtime that refuses pause and unpause (Swarm): they fail with NotSupported instead.
    supports_pause = True
    #: Seconds the engine may take to bring the cache to a change made outside the runtime (or a lost answer).
    converge_timeout = 3

    def make_runtime(self):
        raise NotImplementedError

    def spec(self, name: str, **kw) -> CreateSpec:
        raise NotImplementedError

    def create_foreign(self, name: str) -> None:
        """A container without the owner label, created behind wakeproxy's back."""
        raise NotImplementedError

    def start_behind_our_back(self, name: str) -> None:
        raise NotImplementedError

    def create_managed_by_hand(self, name: str) -> None:
        """A managed container left in state created by someone else (no create mark)."""
        raise NotImplementedError

    def inject(self, op: str, kind: str, after: bool = False, times: int = 1) -> None:
        """Make the next C{times} calls of C{op} fail as the engine does for C{kind} (see L{KINDS})."""
        raise NotImplementedError

    def engine_has(self, name: str) -> bool:
        """Whether the engine has a container of this name, whatever the runtime's cache says."""
        raise NotImplementedError

    def setUp(self):
        self.runtime = self.make_runtime()
        return self.runtime.ready()

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
        if not self.supports_pause:
            for op in (self.runtime.pause, self.runtime.unpause):
                error = yield self.assertFailure(op(name), NotSupported)
                self.assertEqual(error.status, 409)
                self.assertIn("cannot", str(error))
            self.assertEqual(self.runtime.get(name).state, "running")
            yield self.runtime.remove(name, force=True)
            return
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
        yield self.wait_for(lambda: self.runtime.get(name) is not None and self.runtime.get(name).state == "running",
                            timeout=self.converge_timeout)
        self.assertIn((name, "running"), seen)
        yield self.runtime.remove(name, force=True)
        yield self.wait_for(lambda: (name, None) in seen)

    # engine failures

    def assert_engine_failure(self, failure_value, timed_out=None):
        self.assertIsInstance(failure_value, EngineFailure)
        self.assertEqual((failure_value.status, failure_value.retry_after), (503, 5))
        for internal in _INTERNALS:
            self.assertNotIn(internal, str(failure_value))
        if timed_out is not None:
            self.assertEqual(failure_value.timed_out, timed_out)

    @defer.inlineCallbacks
    def test_every_engine_failure_is_a_503_runtime_failure(self):
        """Each kind of failure, on each operation, is an EngineFailure; the next call works again."""
        name = unique_name()
        yield self.runtime.create(self.spec(name, init=True))  # an init: the app stops at once on SIGTERM
        for kind in KINDS:
            # each operation fails once, on a container in the state it needs, then works
            ops = [("start", lambda: self.runtime.start(name)),
                   ("pause", lambda: self.runtime.pause(name)),
                   ("unpause", lambda: self.runtime.unpause(name)),
                   ("stop", lambda: self.runtime.stop(name, 5))]
            for op, call in [(op, call) for op, call in ops if self.supports_pause or "pause" not in op]:
                self.inject(op, kind)
                error = yield self.assertFailure(call(), RuntimeFailure)
                self.assert_engine_failure(error)
                self.assertEqual(isinstance(error, EngineUnavailable), kind != "server-error", (op, kind))
                yield call()
        self.inject("remove", "timeout")
        error = yield self.assertFailure(self.runtime.remove(name), EngineUnavailable)
        self.assert_engine_failure(error, timed_out=True)
        yield self.runtime.remove(name)
        self.assertFalse(self.engine_has(name))

    @defer.inlineCallbacks
    def test_lost_answer_to_a_start(self):
        """The engine started it but the answer was lost: a failure, and the cache catches up."""
        name = unique_name()
        yield self.runtime.create(self.spec(name))
        self.inject("start", "timeout", after=True)
        yield self.assertFailure(self.runtime.start(name), EngineUnavailable)
        yield self.wait_for(lambda: self.runtime.get(name).state == "running", timeout=self.converge_timeout)
        yield self.runtime.remove(name, force=True)

    @defer.inlineCallbacks
    def test_failed_creates_leave_nothing_behind(self):
        """Failures before and after the engine made the container: none is left, in the engine or the cache."""
        for kind in KINDS:
            for after in (False, True):
                name = unique_name()
                self.inject("create", kind, after=after)
                error = yield self.assertFailure(self.runtime.create(self.spec(name)), RuntimeFailure)
                self.assert_engine_failure(error)
                self.assertFalse(self.engine_has(name), (kind, after))
                yield self.wait_for(lambda: self.runtime.get(name) is None, timeout=self.converge_timeout)
        # the runtime still works
        name = unique_name()
        yield self.runtime.create(self.spec(name))
        self.assertTrue(self.engine_has(name))

    @defer.inlineCallbacks
    def test_rollback_retries_while_the_engine_is_slow(self):
        name = unique_name()
        self.inject("create", "timeout", after=True)
        self.inject("remove", "timeout", times=2)
        yield self.assertFailure(self.runtime.create(self.spec(name)), EngineUnavailable)
        yield self.wait_for(lambda: not self.engine_has(name), timeout=5)

    @defer.inlineCallbacks
    def test_leftover_of_a_create_is_swept(self):
        """The engine went away before the rollback: the container stays in created until a sweep."""
        name = unique_name()
        self.inject("create", "timeout", after=True)
        self.inject("remove", "refused")
        yield self.assertFailure(self.runtime.create(self.spec(name)), EngineUnavailable)
        self.assertTrue(self.engine_has(name))
        removed = yield self.runtime.sweep_leftovers()
        self.assertEqual(removed, [], "younger than the grace period: a create may still be under way")
        self.assertTrue(self.engine_has(name))
        removed = yield self.runtime.sweep_leftovers(grace=0)
        self.assertEqual(removed, [name])
        self.assertFalse(self.engine_has(name))
        yield self.wait_for(lambda: self.runtime.get(name) is None, timeout=self.converge_timeout)

    @defer.inlineCallbacks
    def test_sweep_spares_started_and_handmade_containers(self):
        started, handmade = unique_name(), unique_name()
        yield self.runtime.create(self.spec(started))
        yield self.runtime.start(started)
        self.create_managed_by_hand(handmade)
        yield self.wait_for(lambda: self.runtime.get(handmade) is not None, timeout=self.converge_timeout)
        self.assertEqual(self.runtime.get(handmade).state, "created")
        self.assertEqual(self.runtime.get(handmade).creating, "")
        self.assertNotEqual(self.runtime.get(started).creating, "")
        self.assertNotIn(CREATING, self.runtime.get(started).labels)
        removed = yield self.runtime.sweep_leftovers(grace=0)
        self.assertNotIn(started, removed)
        self.assertNotIn(handmade, removed)
        self.assertTrue(self.engine_has(started) and self.engine_has(handmade))
        yield self.runtime.remove(started, force=True)
        yield self.runtime.remove(handmade, force=True)

    @defer.inlineCallbacks
    def test_failed_sweep(self):
        self.inject("list", "reset")
        error = yield self.assertFailure(self.runtime.sweep_leftovers(grace=0), EngineUnavailable)
        self.assert_engine_failure(error, timed_out=False)

    @defer.inlineCallbacks
    def test_wrong_states_are_conflicts(self):
        name = unique_name()
        yield self.runtime.create(self.spec(name))
        yield self.assertFailure(self.runtime.unpause(name), WrongState)
        yield self.runtime.start(name)
        error = yield self.assertFailure(self.runtime.remove(name), WrongState)
        self.assertEqual(error.status, 409)
        yield self.runtime.remove(name, force=True)

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

    def create_managed_by_hand(self, name):
        self.runtime.add_managed(name, state="created")

    def inject(self, op, kind, after=False, times=1):
        self.runtime.fail_next(op, kind, after=after, times=times)

    def engine_has(self, name):
        return self.runtime.engine_has(name)

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

    def make_runtime(self, **kw):
        self.client = docker_client()
        self.names = getattr(self, "names", [])
        self.plan = FailurePlan()
        owner = OwnerLabel("wakeproxy.test", unique_name("owner"))
        runtime = DockerRuntime(reactor, docker_url(), owner, client_factory=failing_operations(self.plan), **kw)
        runtime.startService()
        self.addCleanup(self._cleanup, runtime)
        return runtime

    def _cleanup(self, runtime):
        remove_containers(self.client, *self.names)
        runtime.stopService()
        self.client.close()

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

    def create_managed_by_hand(self, name):
        self.names.append(name)
        self.client.create_container(MOCK_IMAGE, name=name, labels={self.runtime.owner.key: self.runtime.owner.value},
                                     host_config=self.client.create_host_config(network_mode="host"))

    def inject(self, op, kind, after=False, times=1):
        self.plan.add(SDK_METHODS[op], sdk_error(kind), after=after, times=times)

    def engine_has(self, name):
        try:
            self.client.inspect_container(name)
        except docker.errors.APIError as e:
            # (Podman answers 500 "no such container" for one being removed: the runtime's reading of it)
            if isinstance(runtime_failure(e), NoSuchInstance):
                return False
            raise
        return True

    @defer.inlineCallbacks
    def test_reconnect_sweeps_leftovers(self):
        """Every (re)connect of the event stream sweeps leftovers before its resync."""
        self.runtime = self.make_runtime(leftover_grace=0)
        yield self.runtime.ready()
        name = unique_name()
        self.inject("create", "timeout", after=True)
        self.inject("remove", "refused")
        yield self.assertFailure(self.runtime.create(self.spec(name)), EngineUnavailable)
        self.assertTrue(self.engine_has(name))
        connections = self.runtime.connections
        self.runtime._stream.close()  # as when dockerd restarts
        yield self.wait_for(lambda: self.runtime.connections > connections and not self.engine_has(name), timeout=10)
        self.assertIsNone(self.runtime.get(name))

    @defer.inlineCallbacks
    def test_health_from_events(self):
        """A HEALTHCHECK's status reaches the cache from the event stream, no polling."""
        name = unique_name()
        yield self.runtime.create(self.spec(name, healthcheck={
            "test": ["CMD", "python3", "-c", "pass"], "interval": 200_000_000, "timeout": 1_000_000_000,
            "retries": 1, "start_period": 0}))
        yield self.runtime.start(name)
        self.assertEqual(self.runtime.get(name).health, "starting")
        yield self.run_health_check(name)
        yield self.wait_for(lambda: self.runtime.get(name).health == "healthy", timeout=5)

    def run_health_check(self, name):
        """Nothing to do: the engine runs HEALTHCHECKs itself (not Podman without systemd: tests/test_podman.py)."""
        return defer.succeed(None)

    @defer.inlineCallbacks
    def test_exit_on_its_own_is_seen(self):
        name = unique_name()
        yield self.runtime.create(self.spec(name))
        yield self.runtime.start(name)
        self.client.kill(name)  # SIGKILL: a PID 1 may not have its SIGTERM handler yet
        yield self.wait_for(lambda: self.runtime.get(name).state == "exited", timeout=self.converge_timeout)


@pytest.mark.docker
class SwarmRuntimeTests(RuntimeConformanceMixin, TestCase):
    """The Swarm runtime on a single-node swarm of a private engine (the machine's is never put in swarm mode)."""

    timeout = 180
    supports_pause = False
    converge_timeout = 30
    swarm = None

    @classmethod
    def setUpClass(cls):
        cls.swarm = PrivateSwarm().start()

    @classmethod
    def tearDownClass(cls):
        if cls.swarm is not None:
            cls.swarm.remove()

    def make_runtime(self, **kw):
        self.client = self.swarm.client
        self.names = getattr(self, "names", [])
        self.plan = FailurePlan()
        owner = OwnerLabel("wakeproxy.test", unique_name("owner"))
        runtime = SwarmRuntime(reactor, self.swarm.url, owner, client_factory=failing_operations(self.plan), **kw)
        runtime.startService()
        self.addCleanup(self._cleanup, runtime)
        return runtime

    def _cleanup(self, runtime):
        self.swarm.remove_services(*self.names)
        runtime.stopService()

    def spec(self, name, **kw):
        self.names.append(name)
        kw.setdefault("image", MOCK_IMAGE)
        port = free_port()
        labels = dict(kw.pop("labels", {}), **{"wakeproxy.port": str(port)})
        return CreateSpec(name=name, network="host", labels=labels,
                          env={"PORT": str(port), "HOST": "127.0.0.1", "IDLE": "0"}, **kw)

    def _service(self, name, labels):
        self.names.append(name)
        spec = docker.types.ContainerSpec(MOCK_IMAGE, env=["PORT={}".format(free_port()), "HOST=127.0.0.1"])
        self.client.create_service(docker.types.TaskTemplate(spec, networks=["host"]), name=name, labels=labels,
                                   mode=docker.types.ServiceMode("replicated", replicas=0))

    def create_foreign(self, name):
        self._service(name, {"other": "x"})

    def create_managed_by_hand(self, name):
        self._service(name, {self.runtime.owner.key: self.runtime.owner.value})

    def start_behind_our_back(self, name):
        service = self.client.inspect_service(name)
        self.client.update_service(service["ID"], service["Version"]["Index"], fetch_current_spec=True,
                                   mode=docker.types.ServiceMode("replicated", replicas=1))

    def inject(self, op, kind, after=False, times=1):
        self.plan.add(SWARM_SDK_METHODS[op], sdk_error(kind), after=after, times=times)

    def engine_has(self, name):
        return found(self.client.inspect_service, name)

    @defer.inlineCallbacks
    def test_awake_service_has_a_direct_address(self):
        """A running host-network service is reached at 127.0.0.1:<wakeproxy.port>, and answers there."""
        name = unique_name()
        spec = self.spec(name)
        yield self.runtime.create(spec)
        yield self.runtime.start(name)
        container = self.runtime.get(name)
        self.assertEqual(container.network_mode, "host")
        self.assertEqual(direct_address(container), ("127.0.0.1", int(spec.labels["wakeproxy.port"])))
        # its container runs: the app answers there once it listens
        yield self.wait_for(lambda: can_connect(int(spec.labels["wakeproxy.port"])), timeout=self.converge_timeout)
        status = yield deferToThread(lambda: requests.get("http://127.0.0.1:{}/status".format(
            spec.labels["wakeproxy.port"]), timeout=5).status_code)
        self.assertEqual(status, 200)
        yield self.runtime.stop(name, 5)
        self.assertEqual(self.runtime.get(name).state, "exited")
        self.assertEqual(self.client.inspect_service(name)["Spec"]["Mode"]["Replicated"]["Replicas"], 0)

    @defer.inlineCallbacks
    def test_reconnect_resyncs(self):
        """A service scaled while the event stream was down is seen after the reconnect's resync."""
        name = unique_name()
        yield self.runtime.create(self.spec(name))
        connections = self.runtime.connections
        self.runtime._stream.close()  # as when the engine restarts
        self.start_behind_our_back(name)
        yield self.wait_for(lambda: self.runtime.connections > connections, timeout=10)
        yield self.wait_for(lambda: self.runtime.get(name).state == "running", timeout=30)


class SummaryParsingTests(TestCase):
    """The resync parses the list call's summaries without an inspect per container."""

    def test_created_time_and_mark(self):
        """Summaries and inspects agree on the creation time (whole seconds) and keep the mark out of the labels."""
        labels = {"k": "v", CREATING: "t0k3n"}
        summary = container_from_summary({"Id": "a" * 64, "Names": ["/m1"], "State": "created", "Status": "Created",
                                          "Created": 1764438562, "Labels": labels})
        inspect = container_from_inspect({"Id": "a" * 64, "Name": "/m1", "Created": "2025-11-29T17:49:22.152751313Z",
                                          "State": {"Status": "created"}, "Config": {"Labels": labels}})
        for c in (summary, inspect):
            self.assertEqual((c.created, c.creating, dict(c.labels)), (1764438562, "t0k3n", {"k": "v"}))
        bad = container_from_inspect({"Id": "b", "Name": "/x", "Created": "yesterday", "State": {}, "Config": {}})
        self.assertEqual((bad.created, bad.creating), (0, ""))

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


class PodmanSnapshotTests(TestCase):
    """What Podman's Docker-compatible API answers differently, read as Docker's (tests/test_podman.py: for real)."""

    def test_stopped_is_exited(self):
        """Podman's own state between a container's death and its cleanup."""
        data = {"Id": "a" * 64, "Name": "/m1", "State": {"Status": "stopped", "ExitCode": 137}, "Config": {}}
        self.assertEqual((container_from_inspect(data).state, container_from_inspect(data).exit_code), ("exited", 137))

    def test_summaries_without_host_config_are_inspected(self):
        """Podman's list entries have no HostConfig (network mode) nor health: the resync inspects those."""
        inspected = []

        class Client:
            def inspect_container(self, ref):
                inspected.append(ref)
                if ref == "gone":
                    raise docker.errors.NotFound("no such container")
                return {"Id": ref, "Name": "/p1", "State": {"Status": "running", "Health": {"Status": "starting"}},
                        "Config": {"Image": "localhost/mock-app:latest"}, "HostConfig": {"NetworkMode": "host"}}

        runtime = DockerRuntime(reactor, "unix:///nonexistent", OwnerLabel("wakeproxy.test", "x"))
        docker_summary = {"Id": "d" * 64, "Names": ["/d1"], "State": "running", "Status": "Up 2 minutes (healthy)",
                          "HostConfig": {"NetworkMode": "host"}}
        podman_summary = {"Id": "p" * 64, "Names": ["/p1"], "State": "running", "Status": "Up 2 minutes"}
        from_docker = runtime._snapshot(Client(), docker_summary)
        from_podman = runtime._snapshot(Client(), podman_summary)
        self.assertEqual(inspected, ["p" * 64])
        self.assertEqual((from_docker.network_mode, from_docker.health), ("host", "healthy"))
        self.assertEqual((from_podman.network_mode, from_podman.health), ("host", "starting"))
        self.assertIsNone(runtime._snapshot(Client(), dict(podman_summary, Id="gone")))


class DockerRuntimeReadyTests(TestCase):
    """Waiters for the first sync may give up; the sync then fires the others and nothing raises."""

    def test_cancelled_waiter_is_dropped(self):
        runtime = DockerRuntime(reactor, docker_url(), OwnerLabel("wakeproxy.test", "unused"))
        gave_up, waiting = runtime.ready(), runtime.ready()
        gave_up.cancel()
        self.failureResultOf(gave_up, defer.CancelledError)
        runtime._replace_all([])  # what the event thread hands the reactor after the first list
        self.assertIsNone(self.successResultOf(waiting))
        self.assertIsNone(self.successResultOf(runtime.ready()))
