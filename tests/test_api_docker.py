"""
The deploy API end to end: C{twistd wakeproxy} as a process with a passwd file, real containers on the
real engine, real HTTP with requests. One wakeproxy per class; each class owns a unique owner label, so
what it lists and leaves behind is its own. No test may leave a traceback in wakeproxy's log.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import docker
import pytest
import requests
from twisted.trial.unittest import SynchronousTestCase

from tests.dockerapp import Instances
from tests.support import MOCK_IMAGE, Twistd, deploy_body, check_problem, docker_client, free_port, remove_containers, unique_name
from tests.test_deployspec import BAD_BODIES, SEED_BODY, SEED_BODY_ACCEPTED, TABLE_MAX_BODY, TABLE_NAME, assert_table_problem
from wakeproxy.api.hashes import hash_password

pytestmark = pytest.mark.docker

FOO = ("foo", "bar")  # the old spawner's example user (unsalted sha256 in the file, as the seed wrote it)
ALICE = ("alice", "wonderland")
VICTIM = ("victim", "correct horse")  # rate-limit tests fail its logins, so nobody else is locked out
#: what curl -d sends when told nothing else (the old scripts did not set a content type)
CURL_FORM = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "curl/7.88.1", "Accept": "*/*"}


def _passwd_file(directory: str) -> str:
    path = os.path.join(directory, "passwd.txt")
    with open(path, "w") as f:
        f.write("{},{}\n".format(FOO[0], hashlib.sha256(FOO[1].encode()).hexdigest()))
        f.write("{},{}\n".format(ALICE[0], hash_password(ALICE[1])))
        f.write("{},{}\n".format(VICTIM[0], hash_password(VICTIM[1])))
    return path


class _Server:
    """A wakeproxy with its own owner label and passwd file, plus an engine client for checks and cleanup."""

    def __init__(self, *args, passwd=True):
        self.owner_value = unique_name("owner")
        self.owner = "wakeproxy.test={}".format(self.owner_value)
        self.directory = tempfile.mkdtemp(prefix="wakeproxy-api-")
        argv = ["--owner-label", self.owner, "--stop-timeout", "3s"] + list(args)
        if passwd:
            argv += ["--passwd", _passwd_file(self.directory)]
        self.twistd = Twistd(*argv).start()
        self.url = self.twistd.api_url
        self.client = docker_client()
        self.session = requests.Session()
        self.token = None
        deadline = time.monotonic() + 30  # the engine is shared: another test may be restarting dockerd
        while requests.get(self.url + "/healthz", timeout=5).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("wakeproxy never saw the Docker engine:\n" + self.twistd.log())
            time.sleep(0.05)

    def login(self, user=FOO):
        r = self.session.post(self.url + "/login", json={"username": user[0], "password": user[1]}, timeout=10)
        if r.status_code == 200:
            self.token = r.json()["token"]
        return r

    def call(self, method, path, token=True, **kw):
        headers = dict(kw.pop("headers", {}))
        if token and self.token:
            headers.setdefault("Authorization", "Bearer " + self.token)
        return self.session.request(method, self.url + path, headers=headers, timeout=kw.pop("timeout", 30), **kw)

    def owned(self):
        """Every container carrying this server's owner label, whatever its state."""
        return self.client.containers(all=True, filters={"label": [self.owner]})

    def stop(self):
        """Stop wakeproxy, remove what it owns, and return its log (which must hold no traceback)."""
        try:
            self.twistd.stop()
        finally:
            remove_containers(self.client, *[c["Id"] for c in self.owned()])
            self.client.close()
            self.session.close()
            shutil.rmtree(self.directory, ignore_errors=True)
        return self.twistd.log()


class _APICase(SynchronousTestCase):
    server_args: tuple = ()

    @classmethod
    def setUpClass(cls):
        cls.server = _Server(*cls.server_args)

    @classmethod
    def tearDownClass(cls):
        log = cls.server.stop()
        if "Traceback" in log or "Unhandled" in log:
            raise AssertionError("wakeproxy logged an error:\n" + log[-5000:])

    def setUp(self):
        self.names = []
        self.addCleanup(lambda: remove_containers(self.server.client, *self.names))

    def name(self):
        name = unique_name()
        self.names.append(name)
        return name

    def body(self, name, port=None, **changes):
        return deploy_body(name, port, **changes)

    def assertProblem(self, response, status, detail=None):
        self.assertEqual(response.status_code, status, response.text)
        return check_problem(self, status, response.headers["content-type"], response.json(), detail)

    def assertGone(self, name):
        with self.assertRaises(docker.errors.NotFound):
            self.server.client.inspect_container(name)


class DeployDockerTests(_APICase):
    server_args = ("--allow-host-network",)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        assert cls.server.login(ALICE).status_code == 200

    def test_lifecycle(self):
        name = self.name()
        port = free_port()
        r = self.server.call("POST", "/deploy", json=self.body(name, port))
        self.assertEqual(r.status_code, 201, r.text)
        created = r.json()
        self.assertEqual(r.headers["location"], "/deploy/" + name)
        inspect = self.server.client.inspect_container(name)
        self.assertEqual(created["id"], inspect["Id"])
        self.assertEqual(created["ContainerID"], inspect["Id"])
        self.assertEqual(created["state"], "running")
        self.assertEqual(inspect["Config"]["Labels"]["wakeproxy.test"], self.server.owner_value)
        # nothing privileged about it, and Docker's init as PID 1 (an app that ignores SIGTERM still stops)
        host = inspect["HostConfig"]
        self.assertIs(host["Init"], True)
        self.assertFalse(host["Privileged"])
        self.assertFalse(host.get("Binds"))
        self.assertFalse(host.get("CapAdd"))
        self.assertFalse(host.get("Mounts"))

        # ready when asked to wait: the app answers right away, through the proxy too
        r = self.server.call("PUT", "/deploy/{}?wait=ready".format(name))
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(requests.get("http://127.0.0.1:{}/".format(port), timeout=5).json()["instance"], name)
        proxied = requests.get(self.server.twistd.proxy_url + "/", headers={"Cookie": "instance=" + name}, timeout=10)
        self.assertEqual(proxied.status_code, 200)

        listed = self.server.call("GET", "/deploy").json()["instances"]
        self.assertEqual([i["name"] for i in listed], [name])
        one = listed[0]
        for key in ("name", "id", "image", "labels", "state", "health", "ContainerID", "ContainerName",
                    "ContainerLabels", "ContainerImage", "status"):
            self.assertIn(key, one)
        self.assertEqual((one["ContainerName"], one["ContainerImage"], one["status"]), (name, MOCK_IMAGE, "running"))
        self.assertEqual(self.server.call("GET", "/deploy/" + name).json()["id"], inspect["Id"])

        r = self.server.call("POST", "/deploy/{}/stop".format(name))
        self.assertEqual((r.status_code, r.json()["state"]), (200, "exited"))
        self.assertEqual(self.server.client.inspect_container(name)["State"]["Status"], "exited")

        # a stopped instance wakes with PUT ?wait=ready, through the proxy's waker
        r = self.server.call("PUT", "/deploy/{}?wait=ready".format(name))
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.headers["x-wakeproxy-woke"], "1")
        self.assertIn("total;dur=", r.headers["server-timing"])
        self.assertEqual(requests.get("http://127.0.0.1:{}/".format(port), timeout=5).status_code, 200)

        r = self.server.call("DELETE", "/deploy/" + name)
        self.assertEqual((r.status_code, r.json()), (200, {"result": "ok", "name": name}))
        self.assertGone(name)
        self.assertProblem(self.server.call("GET", "/deploy/" + name), 404)

    def test_start_without_wait_and_forced_delete(self):
        name = self.name()
        self.assertEqual(self.server.call("POST", "/deploy/", json=self.body(name)).status_code, 201)
        self.assertEqual(self.server.call("POST", "/deploy/{}/stop".format(name)).status_code, 200)
        r = self.server.call("PUT", "/deploy/" + name)
        self.assertEqual((r.status_code, r.json()["state"]), (200, "running"))
        began = time.monotonic()
        self.assertEqual(self.server.call("DELETE", "/deploy/{}?force".format(name)).status_code, 200)
        self.assertLess(time.monotonic() - began, 2.5)
        self.assertGone(name)

    def test_paused_instance_is_unpaused_by_start_and_removed_by_delete(self):
        name = self.name()
        self.assertEqual(self.server.call("POST", "/deploy", json=self.body(name)).status_code, 201)
        self.server.client.pause(name)
        deadline = time.monotonic() + 3
        while self.server.call("GET", "/deploy/" + name).json()["state"] != "paused":
            self.assertLess(time.monotonic(), deadline, "the pause never reached wakeproxy")
            time.sleep(0.02)
        r = self.server.call("PUT", "/deploy/" + name)
        self.assertEqual((r.status_code, r.json()["state"]), (200, "running"))
        self.server.client.pause(name)
        time.sleep(0.1)
        self.assertEqual(self.server.call("DELETE", "/deploy/" + name).status_code, 200)
        self.assertGone(name)

    def test_name_taken_by_any_container_is_409(self):
        instances = Instances()
        self.addCleanup(instances.cleanup)
        foreign = instances.create(managed=False)
        self.assertProblem(self.server.call("POST", "/deploy", json=self.body(foreign)), 409, "already taken")
        name = self.name()
        self.assertEqual(self.server.call("POST", "/deploy", json=self.body(name)).status_code, 201)
        self.assertProblem(self.server.call("POST", "/deploy", json=self.body(name)), 409)

    def test_unmanaged_instances_do_not_exist(self):
        instances = Instances()  # managed by the test run's owner label, not by this server's
        self.addCleanup(instances.cleanup)
        other = instances.create()
        foreign = instances.create(managed=False)
        for name in (other, foreign, "wpt-nope-" + unique_name()):
            for method, path in (("GET", ""), ("PUT", ""), ("PUT", "?wait=ready"), ("DELETE", ""),
                                 ("DELETE", "?force"), ("POST", "/stop")):
                self.assertProblem(self.server.call(method, "/deploy/" + name + path), 404)
        self.assertEqual(instances.state(other), "created")
        self.assertEqual(instances.state(foreign), "created")
        self.assertNotIn(other, [i["name"] for i in self.server.call("GET", "/deploy").json()["instances"]])

    def test_missing_image_is_424(self):
        name = self.name()
        doc = self.assertProblem(self.server.call("POST", "/deploy", json=self.body(name, image="wakeproxy-nope:1")),
                                 424, "build or pull it first")
        self.assertIn("wakeproxy-nope:1", doc["detail"])
        self.assertGone(name)

    def test_missing_network_leaves_nothing_behind(self):
        name = self.name()
        body = self.body(name, network="wakeproxy-no-such-net")
        doc = self.assertProblem(self.server.call("POST", "/deploy", json=body), 424, "wakeproxy-no-such-net")
        self.assertIn("removed again", doc["detail"])
        self.assertGone(name)
        self.assertEqual(self.server.owned(), [])

    def test_errors_are_problems(self):
        name = self.name()
        self.assertEqual(self.server.call("POST", "/deploy", json=self.body(name)).status_code, 201)
        cases = [
            (self.server.call("GET", "/deploy", token=False), 401),
            (self.server.call("GET", "/deploy", token=False, headers={"Authorization": "Bearer forged"}), 401),
            (self.server.call("POST", "/deploy", data=b'{"name": '), 400),
            (self.server.call("POST", "/deploy", json={"name": name}), 422),
            (self.server.call("POST", "/deploy", json=dict(self.body(self.name()), privileged=True)), 422),
            (self.server.call("POST", "/deploy", json=self.body(self.name(), labels={"wakeproxy.test": "x"})), 422),
            (self.server.call("POST", "/deploy", json=self.body(self.name(), labels={
                "traefik.http.routers.{}.rule".format(name): "Host(`x`)"})), 422),
            (self.server.call("POST", "/deploy", data=b" " * (1024 * 1024 + 1)), 413),
            (self.server.call("PATCH", "/deploy/" + name), 405),
            (self.server.call("GET", "/deploy/{}/stop".format(name)), 405),
            (self.server.call("PUT", "/deploy/{}?wait=later".format(name)), 422),
            (self.server.call("GET", "/nope"), 404),
        ]
        for response, status in cases:
            self.assertProblem(response, status)
        self.assertEqual(self.server.call("PATCH", "/deploy/" + name).headers["allow"], "GET, HEAD, PUT, DELETE")
        self.assertEqual([c["Names"][0].lstrip("/") for c in self.server.owned()], [name])

    def test_seed_scripts(self):
        """The old spawner's create-minions.sh, list-minions.sh and delete-minons.sh, as curl -L runs them."""
        session = requests.Session()
        self.addCleanup(session.close)
        url = self.server.url
        # TOKEN=$(curl -s -X POST localhost:8008/login -d '{"username":"foo","password":"bar"}' | jq -r .token)
        r = session.post(url + "/login", data=b'{"username":"foo","password":"bar"}', headers=CURL_FORM)
        self.assertEqual(r.status_code, 200, r.text)
        seed = dict(CURL_FORM, token=r.json()["token"])
        names = []
        for i in (1, 2):
            name = self.name()
            names.append(name)
            port = free_port()
            body = json.loads(json.dumps(SEED_BODY_ACCEPTED).replace("minion-1", name))
            body["network"] = "host"  # the seed's traefiknet does not exist here (see the next test)
            body["labels"]["wakeproxy.port"] = str(port)
            body["envs"].update({"PORT": str(port), "HOST": "127.0.0.1"})
            # curl -L -X POST localhost:8008/deploy -H "token: $TOKEN" -d "$BODY"
            r = session.post(url + "/deploy", data=json.dumps(body), headers=seed, allow_redirects=True)
            self.assertEqual(r.status_code, 201, r.text)
            self.assertEqual(r.history, [])  # answered directly, no 307 to /deploy/
            self.assertEqual(len(r.json()["id"]), 64)
        # curl -L localhost:8008/deploy/ -H "token: $TOKEN"
        r = session.get(url + "/deploy/", headers=seed, allow_redirects=True)
        self.assertEqual(r.history, [])
        listed = {i["ContainerName"]: i for i in r.json()["instances"]}
        self.assertTrue(set(names) <= set(listed))
        for name in names:
            self.assertEqual(listed[name]["status"], "running")
            self.assertEqual(listed[name]["ContainerImage"], MOCK_IMAGE)
            self.assertEqual(listed[name]["ContainerLabels"]["traefik.http.routers.{}.tls".format(name)], "true")
        # curl -X DELETE localhost:8008/deploy/minion-N -H "token: $TOKEN"
        for name in names:
            r = session.delete(url + "/deploy/" + name, headers=seed)
            self.assertEqual(r.json()["result"], "ok")
            self.assertGone(name)

    def test_seed_body_as_is_fails_cleanly(self):
        """The seed leaked a 'created' container when the network was missing (its bug #4); not here."""
        name = self.name()
        body = json.loads(json.dumps(SEED_BODY_ACCEPTED).replace("minion-1", name))
        doc = self.assertProblem(self.server.call("POST", "/deploy", json=body), 424, "traefiknet")
        self.assertIn("removed again", doc["detail"])
        self.assertGone(name)
        # as the seed sent it (a URL health check, a router rule): refused before anything is created
        body = json.loads(json.dumps(SEED_BODY).replace("minion-1", name))
        doc = self.assertProblem(self.server.call("POST", "/deploy", json=body), 422)
        self.assertEqual({e["field"] for e in doc["errors"]},
                         {"labels.health-check", "labels.traefik.http.routers.{}.rule".format(name)})
        self.assertGone(name)

    def test_failed_logins_back_off(self):
        """Finding 7: after 3 free failures, each one doubles the wait, for that user only."""
        for i in range(3):
            self.assertProblem(self.server.session.post(self.server.url + "/login", json={
                "username": VICTIM[0], "password": "guess{}".format(i)}), 401, "login invalid")
        r = self.server.session.post(self.server.url + "/login", json={"username": VICTIM[0], "password": VICTIM[1]})
        self.assertProblem(r, 429)
        self.assertEqual(r.headers["retry-after"], "1")
        time.sleep(1.05)
        self.assertProblem(self.server.session.post(self.server.url + "/login", json={
            "username": VICTIM[0], "password": "guess"}), 401)
        r = self.server.session.post(self.server.url + "/login", json={"username": VICTIM[0], "password": VICTIM[1]})
        self.assertEqual(r.headers["retry-after"], "2")
        self.assertEqual(self.server.session.post(self.server.url + "/login", json={
            "username": ALICE[0], "password": ALICE[1]}).status_code, 200)


class BadInputDockerTests(_APICase):
    server_args = ("--allow-image", "mock-app:*", "--max-api-body", str(TABLE_MAX_BODY))

    def test_every_bad_body_is_a_4xx_problem_and_leaves_nothing(self):
        self.assertEqual(self.server.login().status_code, 200)
        for case in BAD_BODIES:
            r = self.server.call("POST", "/deploy", data=case[1])
            self.assertEqual(r.headers.get("content-type"), "application/problem+json", case[0])
            assert_table_problem(case, r.status_code, r.json())
        self.assertEqual(self.server.owned(), [])
        self.assertGone(TABLE_NAME)


class StartupDockerTests(SynchronousTestCase):
    """Options that change how the API starts: one short-lived wakeproxy per test."""

    def server(self, *args, passwd=True):
        server = _Server(*args, passwd=passwd)
        self.addCleanup(self._stop, server)
        return server

    def _stop(self, server):
        log = server.stop()
        self.assertNotIn("Traceback", log, log[-3000:])

    def test_without_passwd_nobody_gets_in(self):
        server = self.server(passwd=False)
        self.assertEqual(server.login().status_code, 401)
        self.assertEqual(server.call("GET", "/deploy").status_code, 401)
        self.assertIn("no --passwd: nobody can use the deploy API; give --passwd FILE or --no-auth",
                      server.twistd.log())

    def test_no_auth_says_so_loudly(self):
        server = self.server("--no-auth", passwd=False)
        self.assertEqual(server.call("GET", "/deploy").json(), {"instances": []})
        log = server.twistd.log()
        self.assertIn("--no-auth", log)
        self.assertIn("ANYONE", log)

    def test_tokens_expire(self):
        server = self.server("--token-ttl", "1s")
        self.assertEqual(server.login().status_code, 200)
        self.assertEqual(server.call("GET", "/deploy").status_code, 200)
        time.sleep(1.1)
        r = server.call("GET", "/deploy")
        self.assertEqual(r.status_code, 401)
        self.assertIn("expired", r.json()["detail"])
        log = server.twistd.log()
        self.assertIn("user foo has an unsalted sha256 hash", log)
        for secret in (FOO[1], ALICE[1], server.token, hashlib.sha256(b"bar").hexdigest()):
            self.assertNotIn(secret, log)


class SchemathesisDockerTests(_APICase):
    """Property-based: schemathesis drives the live API from its own OpenAPI document."""

    server_args = ("--allow-image", "mock-app:*")

    def test_no_server_error_and_no_schema_violation(self):
        self.assertEqual(self.server.login(ALICE).status_code, 200)
        config = os.path.join(self.server.directory, "schemathesis.toml")
        with open(config, "w") as f:
            # A body valid by the schema may still be refused: the create policy (another instance's
            # routes), the engine (no such image, a taken name) or a missing network (424 after rollback).
            # Its random sign-ins fail (401) and are then rate-limited (429).
            f.write('[checks.positive_data_acceptance]\n'
                    'expected-statuses = ["2xx", "401", "404", "409", "422", "424", "429"]\n')
        st = os.path.join(os.path.dirname(sys.executable), "st")
        result = subprocess.run(
            # One worker: concurrent scenarios on the same generated name would race each other's stops
            # and wakes (a wake failing because another scenario stopped the container is a real 502).
            [st, "--config-file", config, "run", self.server.url + "/openapi.json", "--checks", "all",
             "-H", "Authorization: Bearer " + self.server.token, "--max-examples", "25", "--workers", "1",
             "--seed", "1", "--generation-database", "none", "--no-color", "--request-timeout", "30",
             "--max-time", "45"],
            capture_output=True, text=True, timeout=240, cwd=self.server.directory)
        self.assertEqual(result.returncode, 0, result.stdout[-8000:] + result.stderr[-2000:])
        # whatever it created was started (or removed again): nothing stuck in "created"
        self.assertEqual([c["Names"] for c in self.server.owned() if c["State"] == "created"], [])
