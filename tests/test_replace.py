# -*- test-case-name: tests.test_replace -*-
"""
A container the engine can no longer start after an engine restart (a stale containerd task pins its id,
moby/moby#44399): the Docker runtime's start puts a copy in its place and starts that, once.

First the copy (L{copy_of}, table-driven, no engine); then the runtime's start against the real engine
with the engine's answer injected into the SDK client (L{FailingClient}); the real fault, made by
restarting a private dockerd while starts are in flight, is in tests/test_faults_engine_docker.py.
"""

import docker.errors
import pytest
import requests
from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support import MOCK_IMAGE, docker_client, docker_url, free_port, remove_containers, unique_name
from tests.test_runtime_conformance import FailurePlan, failing_operations, sdk_error
from wakeproxy.runtime.docker import DockerRuntime
from wakeproxy.runtime.engineerrors import pinned_by_stale_task
from wakeproxy.runtime.interface import CREATING, CreateSpec, EngineFailure, OwnerLabel, RuntimeFailure
from wakeproxy.runtime.replace import copy_of

ID = "4b250fd9b22dfbdc348daddc0df75ae828327fa04efe6efac779c1fcf9620d3e"


def engine_500(message: str) -> docker.errors.APIError:
    """What the SDK raises for the engine's 500 with this message."""
    response = requests.Response()
    response.status_code = 500
    return docker.errors.APIError("500 Server Error for http+docker://localhost/v1.41/containers/x/start",
                                  response=response, explanation=message)


def inspected(**over):
    data = {"Id": ID, "Image": "sha256:" + "1" * 64, "Name": "/m1",
            "Config": {"Hostname": ID[:12], "Image": "mock-app:latest", "Env": ["PORT=9000"],
                       "Labels": {"wakeproxy.managed": "true", CREATING: "tok"}},
            "HostConfig": {"NetworkMode": "host", "Binds": None},
            "NetworkSettings": {"Networks": {"host": {"Aliases": None}}}, "Mounts": []}
    data.update(over)
    return data


class StaleTaskTests(SynchronousTestCase):
    """Tests for L{pinned_by_stale_task}: the two answers Docker 20.10 gives, and nothing else."""

    def test_table(self):
        cases = [
            (engine_500("task {}: already exists".format(ID)), True),
            (engine_500("id already in use"), True),
            (engine_500("task {}: already exists\n".format(ID)), True),
            (engine_500("failed to start shim: mkdir /run/containerd/io.containerd.runtime.v2.task/moby/{}: file "
                        "exists: unknown".format(ID)), True),
            (engine_500("failed to start shim: mkdir /run/x: file exists: unknown"), False),
            (engine_500("failed to update store for object type *libnetwork.endpoint: open : no such file"), False),
            (engine_500("Cannot restart container m1: task {}: already exists".format(ID)), False),
            (engine_500("transport is closing: unavailable"), False),
            (sdk_error("server-error"), False),
            (sdk_error("reset"), False),
            (ValueError("task {}: already exists".format(ID)), False),
        ]
        for error, expected in cases:
            self.assertEqual(pinned_by_stale_task(error), expected, error)

    def test_other_statuses(self):
        error = engine_500("id already in use")
        error.response.status_code = 409
        self.assertFalse(pinned_by_stale_task(error))


class CopyTests(SynchronousTestCase):
    """Tests for L{copy_of}."""

    def test_host_network(self):
        copy = copy_of(inspected(Config={"Hostname": "vm", "Image": "mock-app:latest",
                                         "Labels": {"k": "v", CREATING: "tok"}}), "mock-app:latest")
        self.assertEqual(copy.config["Image"], "mock-app:latest")
        self.assertEqual(copy.config["Labels"], {"k": "v"})  # no create mark: never swept as a leftover
        self.assertEqual(copy.config["Hostname"], "vm")  # a hostname of its own stays
        self.assertEqual(copy.config["HostConfig"], {"NetworkMode": "host", "Binds": None})
        self.assertNotIn("NetworkingConfig", copy.config)
        self.assertEqual(copy.networks, ())

    def test_default_hostname_and_moved_image(self):
        copy = copy_of(inspected(), "sha256:" + "1" * 64)
        self.assertNotIn("Hostname", copy.config)  # the old id's: the copy gets its own
        self.assertEqual(copy.config["Image"], "sha256:" + "1" * 64)
        self.assertEqual(copy.config["Env"], ["PORT=9000"])

    def test_anonymous_volumes_become_binds(self):
        mounts = [{"Type": "volume", "Name": "abc", "Destination": "/data", "RW": True},
                  {"Type": "volume", "Name": "ro", "Destination": "/ro", "RW": False},
                  {"Type": "volume", "Name": "named", "Destination": "/named", "RW": True},
                  {"Type": "volume", "Name": "mounted", "Destination": "/m", "RW": True},
                  {"Type": "bind", "Source": "/etc", "Destination": "/host-etc", "RW": False},
                  {"Type": "tmpfs", "Destination": "/tmp"}]
        host = {"NetworkMode": "host", "Binds": ["named:/named", "/etc:/host-etc:ro"],
                "Mounts": [{"Type": "volume", "Source": "mounted", "Target": "/m"}]}
        copy = copy_of(inspected(HostConfig=host, Mounts=mounts), "x")
        self.assertEqual(copy.config["HostConfig"]["Binds"],
                         ["named:/named", "/etc:/host-etc:ro", "abc:/data", "ro:/ro:ro"])
        self.assertEqual(copy.config["HostConfig"]["Mounts"], host["Mounts"])

    def test_networks(self):
        networks = {"front": {"Aliases": ["web", ID[:12]], "IPAMConfig": {"IPv4Address": "10.1.0.5"}, "Links": None},
                    "back": {"Aliases": [ID[:12]], "IPAMConfig": None, "Links": ["db:database"]}}
        copy = copy_of(inspected(HostConfig={"NetworkMode": "front"}, NetworkSettings={"Networks": networks}), "x")
        self.assertEqual(copy.config["NetworkingConfig"], {"EndpointsConfig": {"front": {
            "IPAMConfig": {"IPv4Address": "10.1.0.5"}, "Links": None, "Aliases": ["web"]}}})
        self.assertEqual(copy.networks, (("back", {"IPAMConfig": None, "Links": ["db:database"], "Aliases": None}),))

    def test_default_bridge_and_container_mode(self):
        bridge = copy_of(inspected(HostConfig={"NetworkMode": "default"},
                                   NetworkSettings={"Networks": {"bridge": {"Aliases": None}}}), "x")
        self.assertEqual(list(bridge.config["NetworkingConfig"]["EndpointsConfig"]), ["bridge"])
        joined = copy_of(inspected(HostConfig={"NetworkMode": "container:" + "2" * 64},
                                   NetworkSettings={"Networks": {}}), "x")
        self.assertNotIn("NetworkingConfig", joined.config)


@pytest.mark.docker
class ReplacePinnedTests(TestCase):
    """The runtime's start of a pinned container, on the real engine, with the engine's answer injected."""

    timeout = 60

    def setUp(self):
        self.client = docker_client()
        self.plan = FailurePlan()
        self.name = unique_name()
        self.owner = OwnerLabel("wakeproxy.test", unique_name("owner"))
        self.runtime = DockerRuntime(reactor, docker_url(), self.owner, client_factory=failing_operations(self.plan),
                                     sweep_interval=None)
        self.runtime.startService()
        self.addCleanup(self._cleanup)
        return self.runtime.ready()

    def _cleanup(self):
        names = [self.name] + [c["Names"][0].lstrip("/") for c in self.client.containers(
            all=True, filters={"label": [str(self.owner)]})]
        remove_containers(self.client, *names)
        self.runtime.stopService()
        self.client.close()

    @defer.inlineCallbacks
    def create(self):
        port = free_port()
        yield self.runtime.create(CreateSpec(
            name=self.name, image=MOCK_IMAGE, network="host", labels={"keep": "me"}, init=True,
            env={"PORT": str(port), "HOST": "127.0.0.1", "IDLE": "0"}))
        return self.client.inspect_container(self.name)

    def pin(self, times=1):
        """The next C{times} starts fail as a start of a pinned container does."""
        self.plan.add("start", engine_500("task {}: already exists".format(ID)), times=times)

    @defer.inlineCallbacks
    def test_start_replaces_and_starts(self):
        before = yield self.create()
        self.pin()
        yield self.runtime.start(self.name)
        after = self.client.inspect_container(self.name)
        self.assertNotEqual(after["Id"], before["Id"])
        self.assertTrue(after["State"]["Running"])
        self.assertEqual(after["Config"]["Labels"]["keep"], "me")
        self.assertNotIn(CREATING, after["Config"]["Labels"])
        self.assertEqual(after["Config"]["Env"], before["Config"]["Env"])
        self.assertEqual(after["Config"]["Image"], before["Config"]["Image"])
        self.assertEqual(after["HostConfig"]["NetworkMode"], "host")
        self.assertTrue(after["HostConfig"]["Init"])
        with self.assertRaises(docker.errors.NotFound):
            self.client.inspect_container(before["Id"])
        self.assertEqual(self.runtime.get(self.name).id, after["Id"])
        self.assertEqual([c.name for c in self.runtime.list()], [self.name])

    @defer.inlineCallbacks
    def test_the_copy_is_started_once(self):
        """The copy fails to start too: an engine failure (503); the copy keeps the name; the next start works."""
        before = yield self.create()
        self.pin(times=2)
        yield self.assertFailure(self.runtime.start(self.name), EngineFailure)
        copy = self.client.inspect_container(self.name)
        self.assertNotEqual(copy["Id"], before["Id"])
        self.assertEqual(copy["State"]["Status"], "created")
        yield self.runtime.start(self.name)
        self.assertEqual(self.client.inspect_container(self.name)["Id"], copy["Id"])

    @defer.inlineCallbacks
    def test_failed_copy_gives_the_name_back(self):
        before = yield self.create()
        self.pin()
        self.plan.add("create_container_from_config", sdk_error("server-error"))
        yield self.assertFailure(self.runtime.start(self.name), EngineFailure)
        self.assertEqual(self.client.inspect_container(self.name)["Id"], before["Id"])
        self.assertEqual(self.runtime.get(self.name).id, before["Id"])
        self.assertEqual(len(self.client.containers(all=True, filters={"label": [str(self.owner)]})), 1)

    @defer.inlineCallbacks
    def test_half_made_copy_is_removed(self):
        """The copy was created but joining a network failed: the copy goes, the original gets its name back."""
        before = yield self.create()
        self.pin()
        self.plan.add("create_container_from_config", sdk_error("reset"), after=True)
        yield self.assertFailure(self.runtime.start(self.name), RuntimeFailure)
        self.assertEqual(self.client.inspect_container(self.name)["Id"], before["Id"])
        self.assertEqual(len(self.client.containers(all=True, filters={"label": [str(self.owner)]})), 1)

    @defer.inlineCallbacks
    def test_other_engine_failures_are_not_replaced(self):
        before = yield self.create()
        self.plan.add("start", engine_500("failed to update store for object type *libnetwork.endpoint"))
        yield self.assertFailure(self.runtime.start(self.name), EngineFailure)
        self.assertEqual(self.client.inspect_container(self.name)["Id"], before["Id"])
