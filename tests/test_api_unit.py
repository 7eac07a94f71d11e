"""
The deploy API over the wire, in memory: the real resource tree in a real Site, requests written into a
StringTransport (so each can come from its own client address), the in-memory runtime, the real waker and
readiness plan with a fake prober, and a Clock for tokens, rate limits and wake deadlines.
"""

import hashlib
import json
import os
import re
import shutil
import tempfile

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from tests.support import check_problem
from tests.test_deployspec import BAD_BODIES, SEED_BODY_ACCEPTED, TABLE_MAX_BODY, TABLE_NAME, assert_table_problem
from wakeproxy.api import deployspec, jsonbody
from wakeproxy.api.resources import api_resource, openapi_document
from wakeproxy.api.hashes import hash_password
from wakeproxy.runtime.memory import MemoryRuntime
from wakeproxy.waking.readiness import ReadinessPlan
from wakeproxy.runtime.interface import RuntimeFailure
from wakeproxy.tap import Options, create_policy
from wakeproxy.waking.idle import IdleStopper
from wakeproxy.waking.waker import Waker

FOO = ("foo", "bar")  # the old spawner's example user, with its unsalted sha256 hash
ALICE = ("alice", "wonderland")  # a salted scrypt entry
ROOT = ("root", "toor")  # an admin (third field 'admin')
FOOS = {"wakeproxy.port": "9000", "wakeproxy.owner": "foo"}  # the labels of an instance foo owns


class _Prober:
    """Stands in for the network: the app answers once C{up} is set."""

    def __init__(self):
        self.up = False

    def tcp_check(self, host, port):
        return succeed(self.up)

    def http_check(self, url):
        return succeed(self.up)


class _Response:
    def __init__(self, transport: StringTransport):
        self._transport = transport

    @property
    def done(self) -> bool:
        return b"\r\n\r\n" in self._transport.value()

    def _parts(self):
        raw = self._transport.value()
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(lines[0].split()[1]), headers, body

    @property
    def status(self) -> int:
        return self._parts()[0]

    @property
    def headers(self) -> dict:
        return self._parts()[1]

    @property
    def body(self) -> bytes:
        return self._parts()[2]

    def json(self):
        return json.loads(self.body)


class _API:
    """One deploy API (as makeService builds it) on a Clock, with a passwd file holding foo and alice."""

    def __init__(self, case, *args, runtime=None, passwd=True):
        self.case = case
        self.clock = Clock()
        self.runtime = runtime or MemoryRuntime()
        argv = list(args)
        if passwd:
            directory = tempfile.mkdtemp(prefix="wakeproxy-api-")
            case.addCleanup(shutil.rmtree, directory, True)
            self.passwd = os.path.join(directory, "passwd.txt")
            with open(self.passwd, "w") as f:
                f.write("# deploy API users\n{},{}\n{},{}\n{},{},admin\n".format(
                    FOO[0], hashlib.sha256(FOO[1].encode()).hexdigest(), ALICE[0], hash_password(ALICE[1]),
                    ROOT[0], hash_password(ROOT[1])))
            argv = ["--passwd", self.passwd] + argv
        options = Options()
        options.parseOptions(argv)
        settings = options.settings
        self.prober = _Prober()
        self.waker = Waker(self.clock, self.runtime, ReadinessPlan(self.clock, self.prober),
                           wake_timeout=settings.waking.wake_timeout)
        case.addCleanup(self.waker.stop)
        self.idle = IdleStopper(self.clock, self.runtime, self.waker, settings.waking.idle_timeout)
        self.site = Site(api_resource(settings.api, self.runtime, self.waker, self.clock, create_policy(settings),
                                      access=settings.access, trusted_proxies=settings.trusted_proxies,
                                      stop_timeout=settings.waking.stop_timeout, activity=self.idle.activity),
                         reactor=self.clock)
        self.token = None
        self.tokens = {}  # user name -> token, for tests that switch users

    def as_user(self, user) -> "_API":
        """Sign C{user} in (once) and send the following requests with their token."""
        if user[0] not in self.tokens:
            response = self.login(user)
            self.case.assertEqual(response.status, 200, response.body)
        self.token = self.tokens[user[0]]
        return self

    def request(self, method: str, path: str, body=b"", headers=None, peer="127.0.0.1", auth=True) -> _Response:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        headers = dict(headers or {})
        if auth and self.token and "token" not in headers and "Authorization" not in headers:
            headers["Authorization"] = "Bearer " + self.token
        address = IPv4Address("TCP", peer, 40000)
        protocol = self.site.buildProtocol(address)
        transport = StringTransport(peerAddress=address, hostAddress=IPv4Address("TCP", "127.0.0.1", 8008))
        protocol.makeConnection(transport)
        lines = ["{} {} HTTP/1.1".format(method, path), "Host: 127.0.0.1:8008", "Connection: close",
                 "Content-Length: {}".format(len(body))]
        lines += ["{}: {}".format(k, v) for k, v in headers.items()]
        protocol.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        response = _Response(transport)
        response.protocol = protocol
        return response

    def login(self, user=FOO, peer="127.0.0.1") -> _Response:
        response = self.request("POST", "/login", {"username": user[0], "password": user[1]}, peer=peer, auth=False)
        if response.status == 200:
            self.token = self.tokens[user[0]] = response.json()["token"]
        return response

    def deploy(self, name, path="/deploy", **fields):
        body = {"name": name, "image": "mock-app:latest", "network": "host",
                "labels": {"wakeproxy.port": "9000"}, "envs": {"PORT": "9000"}}
        body.update(fields)
        return self.request("POST", path, body)


def _capture_logs(case) -> list:
    events = []
    globalLogPublisher.addObserver(events.append)
    case.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def _text(events) -> str:
    return "\n".join(formatEvent(e) for e in events)


class _Case(SynchronousTestCase):
    def assertProblem(self, response, status, detail=None):
        self.assertTrue(response.done, "no answer yet")
        self.assertEqual(response.status, status, response.body)
        return check_problem(self, status, response.headers["content-type"], response.json(), detail)


class AuthTests(_Case):
    def test_health_and_openapi_need_no_token(self):
        api = _API(self)
        self.assertEqual(api.request("GET", "/healthz").status, 200)
        response = api.request("GET", "/openapi.json")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.json()["openapi"][:2], "3.")

    def test_deploy_needs_a_token(self):
        api = _API(self)
        for method, path in [("GET", "/deploy"), ("GET", "/deploy/"), ("POST", "/deploy"), ("GET", "/deploy/x"),
                             ("PUT", "/deploy/x"), ("DELETE", "/deploy/x"), ("POST", "/deploy/x/stop"),
                             ("PATCH", "/deploy")]:
            response = api.request(method, path, b"{}")
            self.assertProblem(response, 401, "POST /login")
            self.assertEqual(response.headers["www-authenticate"], 'Bearer realm="wakeproxy"')
        self.assertEqual(api.runtime.calls, {})

    def test_seed_user_and_salted_user_sign_in_token_works_in_both_headers(self):
        api = _API(self)
        for user in (FOO, ALICE):
            response = api.login(user)
            self.assertEqual(response.status, 200, response.body)
            doc = response.json()
            self.assertEqual(doc["token_type"], "Bearer")
            self.assertEqual(doc["expires_in"], 3600)
            self.assertGreaterEqual(len(doc["token"]), 43)
            self.assertEqual(api.request("GET", "/deploy", headers={"token": doc["token"]}, auth=False).status, 200)
            self.assertEqual(api.request("GET", "/deploy", headers={"Authorization": "Bearer " + doc["token"]},
                                         auth=False).status, 200)
            self.assertEqual(api.request("GET", "/deploy", headers={"authorization": "bearer " + doc["token"]},
                                         auth=False).status, 200)

    def test_bad_credentials(self):
        api = _API(self)
        for body in ({"username": "foo", "password": "wrong"}, {"username": "nobody", "password": "bar"},
                     {"username": "alice", "password": "bar"}, {"username": "foo", "password": "BAR"}):
            self.assertProblem(api.request("POST", "/login", body), 401, "login invalid")
        self.assertProblem(api.request("POST", "/login", b"{"), 400, "malformed JSON")
        doc = self.assertProblem(api.request("POST", "/login", {"username": "foo"}), 422, "password")
        self.assertEqual(doc["errors"][0]["field"], "password")
        self.assertProblem(api.request("POST", "/login", {"username": "foo", "password": 1}), 422, "string")
        self.assertProblem(api.request("GET", "/login"), 405)
        self.assertEqual(api.request("GET", "/login").headers["allow"], "POST")
        self.assertEqual(api.request("POST", "/login/", {"username": "foo", "password": "bar"}).status, 200)

    def test_bad_tokens(self):
        api = _API(self)
        api.login()
        for headers in ({"Authorization": "Bearer nope"}, {"token": "nope"}, {"Authorization": "Basic Zm9vOmJhcg=="},
                        {"Authorization": "Bearer"}, {"token": ""}, {"Authorization": api.token}):
            self.assertProblem(api.request("GET", "/deploy", headers=headers, auth=False), 401)

    def test_tokens_expire_from_creation(self):
        api = _API(self, "--token-ttl", "10m")
        api.login()
        api.clock.advance(599)
        self.assertEqual(api.request("GET", "/deploy").status, 200)
        api.clock.advance(1)
        self.assertProblem(api.request("GET", "/deploy"), 401, "expired")
        self.assertProblem(api.request("GET", "/deploy"), 401, "not valid")  # evicted on first sight

    def test_expired_tokens_are_evicted_without_being_presented(self):
        api = _API(self, "--token-ttl", "1m")
        for _ in range(3):
            api.login()
        tokens = api.site.resource.children[b"login"]._auth.tokens
        self.assertEqual(len(tokens), 3)
        api.clock.advance(120)
        api.login()
        self.assertEqual(len(tokens), 1)

    def test_failed_logins_back_off_per_user(self):
        """Finding 7: a growing delay per user, from any address, instead of a lock."""
        api = _API(self)
        for i in range(3):  # the free failures
            self.assertEqual(api.login(("foo", "guess{}".format(i)), peer="10.0.0.{}".format(i)).status, 401)
        waits = []
        for i in range(5):
            response = api.login(("foo", "guess"), peer="10.0.1.{}".format(i))
            self.assertProblem(response, 429, "too many failed sign-ins")
            waits.append(int(response.headers["retry-after"]))
            api.clock.advance(waits[-1])
            self.assertEqual(api.login(("foo", "guess"), peer="10.0.2.{}".format(i)).status, 401)
        self.assertEqual(waits, [1, 2, 4, 8, 16])
        self.assertProblem(api.login(FOO, peer="10.0.3.1"), 429)  # even the right password waits its turn
        self.assertEqual(api.login(ALICE, peer="10.0.3.1").status, 200)  # other users are not affected
        api.clock.advance(32)
        self.assertEqual(api.login(FOO, peer="10.0.3.1").status, 200)

    def test_strangers_do_not_delay_a_user_at_a_known_address(self):
        api = _API(self)
        self.assertEqual(api.login(FOO, peer="198.51.100.1").status, 200)
        for i in range(8):
            api.clock.advance(600)
            self.assertEqual(api.login(("foo", "guess"), peer="203.0.113.{}".format(i)).status, 401)
        self.assertProblem(api.login(FOO, peer="203.0.113.99"), 429)
        self.assertEqual(api.login(FOO, peer="198.51.100.1").status, 200)  # where foo signed in before

    def test_failed_logins_are_limited_per_address(self):
        api = _API(self)
        for i in range(20):
            self.assertEqual(api.login(("user{}".format(i), "x"), peer="192.0.2.7").status, 401)
        self.assertProblem(api.login(FOO, peer="192.0.2.7"), 429)
        self.assertEqual(api.login(FOO, peer="192.0.2.8").status, 200)

    def test_one_home_site_address_does_not_lock_out_everyone(self):
        """Finding 7: behind mock_home (a --trusted-proxy), the limit is the user's address, not mock_home's."""
        api = _API(self, "--trusted-proxy", "127.0.0.1/32")
        for i in range(20):
            response = api.request("POST", "/login", {"username": "user{}".format(i), "password": "x"}, auth=False,
                                   headers={"X-Forwarded-For": "203.0.113.66"})
            self.assertEqual(response.status, 401)
        attacker = api.request("POST", "/login", {"username": "foo", "password": "bar"}, auth=False,
                               headers={"X-Forwarded-For": "203.0.113.66"})
        self.assertProblem(attacker, 429)
        user = api.request("POST", "/login", {"username": "foo", "password": "bar"}, auth=False,
                           headers={"X-Forwarded-For": "203.0.113.7"})
        self.assertEqual(user.status, 200, user.body)

    def test_forwarded_for_from_an_untrusted_peer_is_ignored(self):
        api = _API(self, "--trusted-proxy", "127.0.0.1/32")
        for i in range(20):
            response = api.request("POST", "/login", {"username": "user{}".format(i), "password": "x"}, auth=False,
                                   peer="192.0.2.9", headers={"X-Forwarded-For": "203.0.113.{}".format(i)})
            self.assertEqual(response.status, 401)
        self.assertProblem(api.login(FOO, peer="192.0.2.9"), 429)

    def test_every_failure_costs_one_slow_hash(self):
        """Finding 7: a legacy (unsalted sha256) entry costs a scrypt too, so timing does not single it out."""
        from wakeproxy.api import hashes

        calls = []
        real = hashes.hashlib.scrypt
        self.patch(hashes.hashlib, "scrypt", lambda *a, **kw: calls.append(1) or real(*a, **kw))
        api = _API(self)
        for user, status in ((("foo", "wrong"), 401), (("alice", "wrong"), 401), (("nobody", "x"), 401), (FOO, 200),
                             (ALICE, 200)):
            del calls[:]
            self.assertEqual(api.login(user, peer="10.9.0.{}".format(len(user[0]))).status, status, user)
            self.assertEqual(len(calls), 1, user)

    def test_successful_logins_do_not_count(self):
        api = _API(self)
        for _ in range(30):
            self.assertEqual(api.login(FOO).status, 200)
        for i in range(2):
            api.login(("foo", "wrong"))
        self.assertEqual(api.login(FOO).status, 200)  # and it clears the user's failures
        for i in range(2):
            self.assertEqual(api.login(("foo", "wrong")).status, 401)
        self.assertEqual(api.login(FOO).status, 200)

    def test_passwd_file_is_reread_when_it_changes(self):
        api = _API(self)
        self.assertEqual(api.login(("carol", "pw")).status, 401)
        with open(api.passwd, "a") as f:
            f.write("carol,{}\n".format(hash_password("pw")))
        os.utime(api.passwd, ns=(1, 1))
        self.assertEqual(api.login(("carol", "pw")).status, 200)

    def test_without_passwd_nobody_signs_in(self):
        events = _capture_logs(self)
        api = _API(self, passwd=False)
        self.assertIn("no --passwd: nobody can use the deploy API; give --passwd FILE or --no-auth", _text(events))
        self.assertProblem(api.login(FOO), 401)
        self.assertProblem(api.request("GET", "/deploy"), 401)

    def test_no_auth_lets_anyone_in_and_says_so(self):
        events = _capture_logs(self)
        api = _API(self, "--no-auth", "--allow-host-network", passwd=False)
        self.assertIn("--no-auth", _text(events))
        self.assertIn("ANYONE", _text(events))
        self.assertEqual(api.deploy("demo").status, 201)
        self.assertEqual(api.request("GET", "/deploy").status, 200)

    def test_legacy_hash_is_flagged_at_start(self):
        events = _capture_logs(self)
        _API(self)
        text = _text(events)
        self.assertIn("user foo has an unsalted sha256 hash", text)
        self.assertNotIn("user alice has", text)

    def test_secrets_never_reach_the_log(self):
        events = _capture_logs(self)
        api = _API(self, "--allow-host-network")
        api.login(("foo", "not-the-password"))
        api.login(("alice", "wonderland-typo"))
        api.login(ALICE)
        api.deploy("demo", envs={"SECRET": "hunter2"})
        api.request("GET", "/deploy", headers={"token": "stolen-token-value"}, auth=False)
        text = _text(events) + repr(events)
        for secret in ("not-the-password", "wonderland", api.token, "stolen-token-value", "hunter2",
                       hashlib.sha256(b"bar").hexdigest()):
            self.assertNotIn(secret, text)


class DeployTests(_Case):
    def setUp(self):
        self.api = _API(self, "--allow-host-network")
        self.api.login()
        self.runtime = self.api.runtime

    def test_create_starts_and_answers_201_with_the_instance(self):
        response = self.api.deploy("m1", labels={"wakeproxy.port": "9000", "app": "x"})
        self.assertEqual(response.status, 201, response.body)
        self.assertEqual(response.headers["location"], "/deploy/m1")
        doc = response.json()
        container = self.runtime.get("m1")
        labels = {"wakeproxy.port": "9000", "app": "x", "wakeproxy.managed": "true", "wakeproxy.owner": "foo"}
        self.assertEqual(doc, {
            "name": "m1", "id": container.id, "image": "mock-app:latest", "labels": labels,
            "state": "running", "health": "none", "owner": "foo",
            "ContainerID": container.id, "ContainerName": "m1", "ContainerLabels": labels,
            "ContainerImage": "mock-app:latest", "status": "running",
            "activity": dict(self.api.waker.describe("m1"), idle_deadline=15 * 60.0)})
        self.assertEqual((self.runtime.calls["create"], self.runtime.calls["start"]), (1, 1))

    def test_collection_with_and_without_slash_never_redirects(self):
        self.assertEqual(self.api.deploy("m1", path="/deploy/").status, 201)
        self.assertEqual(self.api.deploy("m2", path="/deploy").status, 201)
        for path in ("/deploy", "/deploy/"):
            response = self.api.request("GET", path)
            self.assertEqual(response.status, 200)
            self.assertEqual([i["ContainerName"] for i in response.json()["instances"]], ["m1", "m2"])
        self.assertEqual(self.api.request("GET", "/deploy/m1/").json()["name"], "m1")

    def test_documents_show_activity_and_idle_deadline(self):
        """The waker's activity and the idle stopper's deadline (label, else --idle-timeout), as makeService wires them."""
        self.runtime.add_managed("m1", labels=FOOS, state="running")
        self.runtime.add_managed("m2", labels=dict(FOOS, **{"wakeproxy.idle-timeout": "1m"}), state="running")
        self.api.clock.advance(100)
        for name in ("m1", "m2"):
            self.api.waker.exchange_began(name)
            self.api.waker.exchange_ended(name)
        busy = self.api.request("GET", "/deploy/m1").json()["activity"]
        self.assertEqual((busy["inflight"], busy["last_activity"], busy["idle_deadline"]), (0, 100, 100 + 15 * 60))
        self.assertEqual(self.api.request("GET", "/deploy/m2").json()["activity"]["idle_deadline"], 160)
        self.api.waker.exchange_began("m1")
        busy = self.api.request("GET", "/deploy").json()["instances"][0]["activity"]
        self.assertEqual((busy["inflight"], busy["idle_deadline"]), (1, None))

    def test_list_shows_only_managed_instances(self):
        self.runtime.add_foreign("other")
        self.runtime.add_managed("m0", labels=FOOS)
        doc = self.api.request("GET", "/deploy").json()
        self.assertEqual([(i["name"], i["status"], i["state"]) for i in doc["instances"]], [("m0", "exited", "exited")])
        response = self.api.request("HEAD", "/deploy")
        self.assertEqual((response.status, response.body), (200, b""))
        self.runtime.add_managed("m9", labels={"wakeproxy.port": "9000"})  # the operator's: admins only
        self.assertEqual([i["name"] for i in self.api.request("GET", "/deploy").json()["instances"]], ["m0"])
        self.api.as_user(ROOT)
        self.assertEqual([i["name"] for i in self.api.request("GET", "/deploy").json()["instances"]], ["m0", "m9"])

    def test_unknown_unmanaged_and_invalid_names_are_404(self):
        self.runtime.add_foreign("other")
        for name in ("nope", "other", "a%2Fb", "..%2F", "%00", "%ff", "-x"):
            for method, path in [("GET", ""), ("PUT", ""), ("DELETE", ""), ("POST", "/stop")]:
                self.assertProblem(self.api.request(method, "/deploy/" + name + path), 404)
        self.assertEqual(self.runtime.get("other"), None)
        self.assertNotIn("start", self.runtime.calls)

    def test_start_stop_delete(self):
        self.api.deploy("m1")
        response = self.api.request("POST", "/deploy/m1/stop")
        self.assertEqual((response.status, response.json()["state"]), (200, "exited"))
        response = self.api.request("PUT", "/deploy/m1")
        self.assertEqual((response.status, response.json()["state"]), (200, "running"))
        self.assertEqual(response.json()["id"], self.runtime.get("m1").id)
        response = self.api.request("DELETE", "/deploy/m1")
        self.assertEqual((response.status, response.json()), (200, {"result": "ok", "name": "m1"}))
        self.assertIsNone(self.runtime.get("m1"))
        self.assertEqual(self.runtime.calls["stop"], 2)  # delete stops first

    def test_delete_force_skips_the_graceful_stop(self):
        self.api.deploy("m1")
        for flag in ("?force", "?force=true", "?force=1"):
            self.api.deploy("m1")
            stops = self.runtime.calls.get("stop", 0)
            self.assertEqual(self.api.request("DELETE", "/deploy/m1" + flag).status, 200)
            self.assertEqual(self.runtime.calls.get("stop", 0), stops)
        self.api.deploy("m1")
        self.assertProblem(self.api.request("DELETE", "/deploy/m1?force=maybe"), 422, "force")
        self.assertIsNotNone(self.runtime.get("m1"))

    def test_start_unpauses_a_paused_instance(self):
        self.api.deploy("m1")
        self.runtime.pause("m1")
        self.assertEqual(self.api.request("PUT", "/deploy/m1").json()["state"], "running")

    def test_start_and_wait_until_ready(self):
        self.runtime.add_managed("m1", labels=FOOS)
        response = self.api.request("PUT", "/deploy/m1?wait=ready")
        self.assertFalse(response.done)
        self.assertEqual(self.runtime.get("m1").state, "running")
        self.api.clock.advance(0.05)
        self.assertFalse(response.done)
        self.api.prober.up = True
        self.api.clock.advance(0.05)
        self.assertEqual(response.status, 200, response.body)
        self.assertEqual(response.headers["x-wakeproxy-woke"], "1")
        self.assertIn("total;dur=", response.headers["server-timing"])
        # ready now: answered at once, no wake
        again = self.api.request("PUT", "/deploy/m1?wait=ready")
        self.assertEqual(again.status, 200)
        self.assertNotIn("x-wakeproxy-woke", again.headers)

    def test_wait_deadline_is_a_504_with_phase_and_retry_after(self):
        self.runtime.add_managed("m1", labels=FOOS)
        response = self.api.request("PUT", "/deploy/m1?wait=ready")
        self.api.clock.advance(60)
        doc = self.assertProblem(response, 504, "did not become ready")
        self.assertEqual(doc["phase"], "health")
        self.assertTrue(response.headers["retry-after"])

    def test_wait_for_a_crashing_instance_is_a_502(self):
        self.runtime.add_managed("m1", labels=FOOS)
        self.runtime.crash_on_start["m1"] = 3
        self.assertProblem(self.api.request("PUT", "/deploy/m1?wait=ready"), 502, "exited with code 3")

    def test_wait_must_be_ready(self):
        self.runtime.add_managed("m1", labels=FOOS)
        self.assertProblem(self.api.request("PUT", "/deploy/m1?wait=soon"), 422, "wait")
        self.assertNotIn("start", self.runtime.calls)

    def test_client_leaving_while_waiting_is_dropped(self):
        self.runtime.add_managed("m1", labels=FOOS)
        response = self.api.request("PUT", "/deploy/m1?wait=ready")
        self.assertEqual(self.api.waker.held, 1)
        response.protocol.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(self.api.waker.held, 0)
        self.api.prober.up = True
        self.api.clock.advance(61)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_name_taken_is_409(self):
        self.runtime.add_foreign("taken")
        self.assertProblem(self.api.deploy("taken"), 409, "already taken")
        self.api.deploy("m1")
        self.assertProblem(self.api.deploy("m1"), 409)

    def test_missing_image_is_424_and_leaves_nothing(self):
        doc = self.assertProblem(self.api.deploy("m1", image="nope:1"), 424, "build or pull it first")
        self.assertIn("nope:1", doc["detail"])
        self.assertIsNone(self.runtime.get("m1"))
        self.assertNotIn("pull", self.runtime.calls)

    def test_pull_missing(self):
        api = _API(self, "--allow-host-network", "--pull", "missing")
        api.login()
        api.runtime.pullable.add("fresh:1")
        self.assertEqual(api.deploy("m1", image="fresh:1").status, 201)
        self.assertProblem(api.deploy("m2", image="nope:1"), 424, "could not pull nope:1")
        self.assertIsNone(api.runtime.get("m2"))
        self.assertEqual(api.runtime.calls["pull"], 2)

    def test_a_failed_start_removes_the_container_again(self):
        self.runtime.hold_next_start("m1")
        response = self.api.deploy("m1", network="nonet")
        self.assertFalse(response.done)
        self.assertEqual(self.runtime.get("m1").state, "created")
        self.runtime.held_starts["m1"].errback(RuntimeFailure("network nonet not found"))
        doc = self.assertProblem(response, 424, "network nonet not found")
        self.assertIn("removed again", doc["detail"])
        self.assertIsNone(self.runtime.get("m1"))
        self.assertEqual(self.api.deploy("m1").status, 201)  # and the name is free again

    def test_labels_may_not_claim_another_instances_routes(self):
        self.api.deploy("minion-1")
        for labels in ({"traefik.http.routers.minion-1.rule": "Host(`x`)"},
                       {"traefik.http.services.minion-1.loadbalancer.server.port": "80"},
                       {"wakeproxy.router": "minion-1"}, {"wakeproxy.managed": "true"}):
            doc = self.assertProblem(self.api.deploy("minion-10", labels=labels), 422)
            self.assertEqual(doc["errors"][0]["field"], "labels." + next(iter(labels)))
        self.assertIsNone(self.runtime.get("minion-10"))

    def test_seed_body_and_flow(self):
        """create-minions.sh, list-minions.sh, delete-minons.sh as the seed's users run them (curl -L)."""
        api = _API(self)  # no --allow-host-network: the seed's body names its own network
        token = api.request("POST", "/login", b'{"username":"foo","password":"bar"}', auth=False).json()["token"]
        seed = {"token": token}
        response = api.request("POST", "/deploy", SEED_BODY_ACCEPTED, headers=seed, auth=False)
        self.assertEqual(response.status, 201, response.body)
        self.assertEqual(response.json()["id"], api.runtime.get("minion-1").id)
        listed = api.request("GET", "/deploy/", headers=seed, auth=False).json()["instances"]
        self.assertEqual([(i["ContainerName"], i["ContainerImage"], i["status"]) for i in listed],
                         [("minion-1", "mock-app:latest", "running")])
        self.assertEqual(listed[0]["ContainerLabels"]["traefik.http.routers.minion-1.tls"], "true")
        response = api.request("DELETE", "/deploy/minion-1", headers=seed, auth=False)
        self.assertEqual(response.json()["result"], "ok")
        self.assertEqual(api.request("GET", "/deploy/", headers=seed, auth=False).json(), {"instances": []})

    def test_seed_capitalised_keys_are_refused_by_name(self):
        doc = self.assertProblem(self.api.request("POST", "/deploy", {"NAME": "m1", "Image": "mock-app:latest"}), 422)
        self.assertEqual({e["field"] for e in doc["errors"]}, {"NAME", "Image", "name", "image"})

    def test_wrong_methods_are_405_with_allow(self):
        self.api.deploy("m1")
        cases = [("/deploy", "PUT", "GET, HEAD, POST"), ("/deploy/", "DELETE", "GET, HEAD, POST"),
                 ("/deploy/m1", "POST", "GET, HEAD, PUT, DELETE"), ("/deploy/m1", "PATCH", "GET, HEAD, PUT, DELETE"),
                 ("/deploy/m1/stop", "GET", "POST"), ("/login", "PUT", "POST"), ("/healthz", "POST", "GET, HEAD"),
                 ("/openapi.json", "DELETE", "GET, HEAD")]
        for path, method, allow in cases:
            response = self.api.request(method, path)
            self.assertProblem(response, 405)
            self.assertEqual(response.headers["allow"], allow, (path, method))

    def test_unknown_paths_are_404_problems(self):
        self.api.deploy("m1")
        for path in ("/", "/nope", "/deploy/m1/start", "/deploy/m1/stop/x", "/deployx"):
            self.assertProblem(self.api.request("GET", path), 404, "no such API endpoint")

    def test_bodies_over_the_limit_are_413(self):
        api = _API(self, "--max-api-body", "100")
        self.assertProblem(api.request("POST", "/login", b" " * 101), 413, "--max-api-body")
        self.assertEqual(api.login().status, 200)
        self.assertProblem(api.request("POST", "/deploy", b"{" + b" " * 200 + b"}"), 413)

    def test_engine_not_ready_is_503(self):
        class Slow(MemoryRuntime):
            def ready(self):
                return Deferred()

        api = _API(self, runtime=Slow())
        api.login()
        response = api.request("GET", "/deploy")
        self.assertProblem(response, 503)
        self.assertEqual(response.headers["retry-after"], "1")

    def test_engine_failure_is_502_never_500(self):
        self.api.deploy("m1")

        def broken(name, timeout):
            from twisted.internet.defer import fail
            return fail(RuntimeFailure("the engine is out to lunch"))

        self.runtime.stop = broken
        self.assertProblem(self.api.request("POST", "/deploy/m1/stop"), 502, "out to lunch")
        self.assertProblem(self.api.request("DELETE", "/deploy/m1"), 502, "out to lunch")


class BadInputTests(_Case):
    def test_every_bad_body_is_a_4xx_problem_and_creates_nothing(self):
        api = _API(self, "--allow-image", "mock-app:*", "--max-api-body", str(TABLE_MAX_BODY))
        api.login()
        for case in BAD_BODIES:
            response = api.request("POST", "/deploy", case[1])
            self.assertEqual(response.headers.get("content-type"), "application/problem+json", case[0])
            assert_table_problem(case, response.status, response.json())
        self.assertNotIn("create", api.runtime.calls)
        self.assertEqual(api.runtime.list(), [])
        self.assertIsNone(api.runtime.get(TABLE_NAME))


class OpenAPITests(SynchronousTestCase):
    def setUp(self):
        self.doc = json.loads(openapi_document())

    def test_every_route_is_described(self):
        import wakeproxy.api.resources as api
        paths = self.doc["paths"]
        described = {(p, m.upper()) for p, ops in paths.items() for m in ops if m != "parameters"}
        served = {("/deploy", m.decode()) for m in api._COLLECTION if m != b"HEAD"}
        served |= {("/deploy/{name}", m.decode()) for m in api._INSTANCE if m != b"HEAD"}
        served |= {("/deploy/{name}/" + action.decode(), m.decode()) for action, routes in api._ACTIONS.items()
                   for m in routes}
        served |= {("/login", "POST"), ("/healthz", "GET"), ("/openapi.json", "GET"), ("/metrics", "GET")}
        self.assertEqual(described, served)

    def test_body_schema_matches_the_validation_code(self):
        schema = self.doc["components"]["schemas"]["Deploy"]
        properties = schema["properties"]
        self.assertEqual(set(properties), set(deployspec.DEPLOY_KEYS))
        self.assertFalse(schema["additionalProperties"])
        self.assertEqual(properties["image"]["pattern"], "^" + deployspec._IMAGE_RE.pattern + "$")
        self.assertEqual(properties["network"]["pattern"], "^" + deployspec._NETWORK_RE.pattern + "$")
        self.assertEqual(properties["name"]["pattern"], deployspec.DEFAULT_NAME_PATTERN)
        self.assertEqual(properties["labels"]["propertyNames"]["pattern"], "^" + deployspec._LABEL_KEY_RE.pattern + "$")
        self.assertEqual(properties["envs"]["propertyNames"]["pattern"], "^" + deployspec._ENV_NAME_RE.pattern + "$")
        for key in ("labels", "envs"):
            self.assertEqual(properties[key]["maxProperties"], jsonbody.MAX_ENTRIES)
        self.assertEqual(Options()["name-pattern"], deployspec.DEFAULT_NAME_PATTERN)

    def test_instance_schema_lists_the_document_keys(self):
        from wakeproxy.api.instances import instance_document
        from wakeproxy.runtime.interface import Container

        keys = set(instance_document(Container(id="x", name="n", image="i", state="created")))
        self.assertEqual(set(self.doc["components"]["schemas"]["Instance"]["required"]), keys)

    def test_examples_are_valid_bodies(self):
        example = self.doc["components"]["schemas"]["Deploy"]["example"]
        deployspec.check_deploy(example, deployspec.CreatePolicy())
        self.assertTrue(re.match(deployspec.DEFAULT_NAME_PATTERN, example["name"]))
