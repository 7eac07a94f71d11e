"""
C{twistd wakeproxy --runtime swarm} end to end, on a single-node swarm of a private engine (the machine's
engine is never put in swarm mode): a service asleep at 0 replicas woken through the proxy, stopped
again by the idle stopper, and created, stopped, woken and deleted through the deploy API. One swarm
per class; each test has its own owner label and removes its services.

The wake times of a service and of a plain container on the same engine are printed (figures for the
report, not asserted: the machine is shared).
"""

import statistics
import time

import docker
import docker.errors
import docker.types
import pytest
import requests
from twisted.trial.unittest import SynchronousTestCase

from tests.privateswarm import PrivateSwarm
from tests.support import MOCK_IMAGE, check_problem, free_port, start_wakeproxy, unique_name

pytestmark = pytest.mark.docker


class _SwarmCase(SynchronousTestCase):
    swarm = None

    @classmethod
    def setUpClass(cls):
        cls.swarm = PrivateSwarm().start()
        print("\n[swarm] private engine, image and swarm init in {:.1f}s".format(cls.swarm.setup_seconds))

    @classmethod
    def tearDownClass(cls):
        if cls.swarm is not None:
            cls.swarm.remove()

    def setUp(self):
        self.client = self.swarm.client
        self.owner_value = unique_name("owner")
        self.owner = "wakeproxy.test={}".format(self.owner_value)
        self.services, self.containers = [], []
        self.addCleanup(self._remove)

    def _remove(self):
        self.swarm.remove_services(*self.services)
        for name in self.containers:
            try:
                self.client.remove_container(name, force=True)
            except docker.errors.NotFound:
                pass

    def wakeproxy(self, runtime, *args):
        return start_wakeproxy(self, "--runtime", runtime, "--docker-url", self.swarm.url, "--owner-label", self.owner,
                               "--stop-timeout", "3s", *args, timeout=30)

    def _env_labels(self, name, labels):
        port = free_port()
        all_labels = {"wakeproxy.port": str(port), "wakeproxy.test": self.owner_value}
        all_labels.update(labels or {})
        env = {"PORT": str(port), "HOST": "127.0.0.1", "IDLE": "0", "INSTANCE": name}
        return all_labels, env

    def service(self, labels=None):
        """A managed service asleep at 0 replicas (made by hand, as an operator would)."""
        name = unique_name()
        all_labels, env = self._env_labels(name, labels)
        spec = docker.types.ContainerSpec(MOCK_IMAGE, env=["{}={}".format(k, v) for k, v in env.items()], init=True)
        self.services.append(name)
        self.client.create_service(docker.types.TaskTemplate(spec, networks=["host"]), name=name, labels=all_labels,
                                   mode=docker.types.ServiceMode("replicated", replicas=0))
        return name

    def container(self, labels=None):
        """A managed plain container, created and not started, on the same engine."""
        name = unique_name()
        all_labels, env = self._env_labels(name, labels)
        self.containers.append(name)
        self.client.create_container(MOCK_IMAGE, name=name, labels=all_labels, environment=env,
                                     host_config=self.client.create_host_config(network_mode="host", init=True))
        return name

    def replicas(self, name):
        return self.client.inspect_service(name)["Spec"]["Mode"]["Replicated"]["Replicas"]

    def running_tasks(self, name):
        return [t for t in self.client.tasks(filters={"service": name}) if t["Status"]["State"] == "running"]

    def get(self, server, name, path="/"):
        return requests.get(server.proxy_url + path, headers={"Cookie": "instance={}".format(name)}, timeout=60)

    def wait_until(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while not predicate():
            self.assertLess(time.monotonic(), deadline, "{} within {}s".format(what, timeout))
            time.sleep(0.1)


class SwarmWakeTests(_SwarmCase):
    def test_asleep_service_is_woken_through_the_proxy_and_idle_stopped(self):
        name = self.service(labels={"wakeproxy.idle-timeout": "2s"})
        server = self.wakeproxy("swarm")
        began = time.monotonic()
        r = self.get(server, name)
        took = time.monotonic() - began
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.json()["instance"], name)
        self.assertEqual(r.headers.get("x-wakeproxy-woke"), "1")
        self.assertEqual(self.replicas(name), 1)
        print("\n[swarm] asleep service woken through the proxy in {:.2f}s ({})".format(
            took, r.headers.get("server-timing")))
        warm = self.get(server, name)
        self.assertEqual(warm.status_code, 200)
        self.assertNotIn("x-wakeproxy-woke", warm.headers)

        # idle: the idle stopper scales it to 0, and the next request wakes it again
        quiet = time.monotonic()
        self.wait_until(lambda: self.replicas(name) == 0 and not self.running_tasks(name), 60, "scaled to 0")
        self.assertGreater(time.monotonic() - quiet, 1.0)  # not before its idle timeout
        self.assertIn("is idle: stop", server.log())
        again = self.get(server, name)
        self.assertEqual((again.status_code, again.headers.get("x-wakeproxy-woke")), (200, "1"))
        self.assertEqual(self.replicas(name), 1)

    def test_replicas_label(self):
        """An awake instance runs the replicas its wakeproxy.replicas label asks for (here: a wrong one means 1)."""
        name = self.service(labels={"wakeproxy.replicas": "none"})
        server = self.wakeproxy("swarm")
        self.assertEqual(self.get(server, name).status_code, 200)
        self.assertEqual(self.replicas(name), 1)

    def test_pause_is_refused_with_a_problem(self):
        """A service cannot be paused: the idle stopper's 'pause' method fails and says why; it stays up."""
        name = self.service(labels={"wakeproxy.idle-timeout": "1s", "wakeproxy.stop-method": "pause"})
        server = self.wakeproxy("swarm")
        self.assertEqual(self.get(server, name).status_code, 200)
        self.wait_until(lambda: "cannot pause" in server.log(), 30, "the refused pause logged")
        self.assertEqual(self.replicas(name), 1)

    def test_wake_times_service_and_container(self):
        """Figures: a wake through the proxy, a Swarm service against a container on the same engine."""
        rounds = 3
        times = {}
        for runtime, make in (("swarm", self.service), ("docker", self.container)):
            name = make()
            server = self.wakeproxy(runtime, "--no-auth")
            took = []
            for _ in range(rounds):
                began = time.monotonic()
                r = self.get(server, name)
                took.append(time.monotonic() - began)
                self.assertEqual((r.status_code, r.headers.get("x-wakeproxy-woke")), (200, "1"), r.text)
                stop = requests.post(server.api_url + "/deploy/{}/stop".format(name), timeout=60)
                self.assertEqual((stop.status_code, stop.json()["state"]), (200, "exited"), stop.text)
            times[runtime] = took
        for runtime, took in times.items():
            print("\n[swarm] wake through the proxy, {}: median {:.2f}s of {} ({})".format(
                runtime, statistics.median(took), rounds, ", ".join("{:.2f}".format(t) for t in took)))


class SwarmDeployTests(_SwarmCase):
    def body(self, name, port):
        return {"name": name, "network": "host", "image": MOCK_IMAGE, "labels": {"wakeproxy.port": str(port)},
                "envs": {"PORT": str(port), "HOST": "127.0.0.1", "IDLE": "0", "INSTANCE": name}}

    def call(self, server, method, path, **kw):
        return requests.request(method, server.api_url + path, timeout=60, **kw)

    def test_deploy_api_creates_stops_wakes_and_deletes_a_service(self):
        server = self.wakeproxy("swarm", "--no-auth", "--allow-host-network")
        name, port = unique_name(), free_port()
        self.services.append(name)
        r = self.call(server, "POST", "/deploy", json=self.body(name, port))
        self.assertEqual(r.status_code, 201, r.text)
        created = r.json()
        service = self.client.inspect_service(name)
        self.assertEqual((created["id"], created["state"]), (service["ID"], "running"))
        self.assertEqual(service["Spec"]["Labels"]["wakeproxy.test"], self.owner_value)
        container_spec = service["Spec"]["TaskTemplate"]["ContainerSpec"]
        self.assertIs(container_spec.get("Init"), True)
        self.assertEqual(container_spec.get("StopGracePeriod"), 3 * 10 ** 9)  # --stop-timeout 3s
        self.assertEqual(self.replicas(name), 1)
        # running (its container started); ready when asked to wait, through the proxy too
        r = self.call(server, "PUT", "/deploy/{}?wait=ready".format(name))
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(requests.get("http://127.0.0.1:{}/".format(port), timeout=5).json()["instance"], name)
        self.assertEqual(self.get(server, name).status_code, 200)

        r = self.call(server, "POST", "/deploy/{}/stop".format(name))
        self.assertEqual((r.status_code, r.json()["state"]), (200, "exited"), r.text)
        self.assertEqual(self.replicas(name), 0)
        self.assertEqual(self.running_tasks(name), [])

        r = self.call(server, "PUT", "/deploy/{}?wait=ready".format(name))
        self.assertEqual((r.status_code, r.headers.get("x-wakeproxy-woke")), (200, "1"), r.text)
        self.assertEqual(self.replicas(name), 1)

        r = self.call(server, "DELETE", "/deploy/" + name)
        self.assertEqual((r.status_code, r.json()), (200, {"result": "ok", "name": name}), r.text)
        with self.assertRaises(docker.errors.NotFound):
            self.client.inspect_service(name)
        r = self.call(server, "GET", "/deploy/" + name)
        self.assertEqual(r.status_code, 404)
        check_problem(self, 404, r.headers["content-type"], r.json())

    def test_missing_image_and_taken_name_are_problems(self):
        server = self.wakeproxy("swarm", "--no-auth", "--allow-host-network")
        name = unique_name()
        self.services.append(name)
        r = self.call(server, "POST", "/deploy", json=dict(self.body(name, free_port()), image="wakeproxy-nope:missing"))
        self.assertEqual(r.status_code, 424, r.text)
        check_problem(self, 424, r.headers["content-type"], r.json())
        with self.assertRaises(docker.errors.NotFound):
            self.client.inspect_service(name)
        taken = self.service()  # managed, made by hand
        r = self.call(server, "POST", "/deploy", json=self.body(taken, free_port()))
        self.assertEqual(r.status_code, 409, r.text)
        check_problem(self, 409, r.headers["content-type"], r.json())
