"""
Tenants in the deploy API (issue 11), in memory: owners and admins (finding 2), names that do not leak,
access tokens for the proxy, /metrics behind a token, engine errors answered 503 with the start rolled
back on the clock (finding 8), and the options that configure all this.
"""

import json
import os
import shutil
import tempfile

from twisted.internet.defer import Deferred, fail
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.test_api_unit import ALICE, FOO, ROOT, _API, _capture_logs, _Case, _text
from wakeproxy.http.access import AccessKeys
from wakeproxy.runtime.interface import EngineFailure, EngineUnavailable, RuntimeFailure, WrongState
from wakeproxy.tap import Options

KEY = "k" * 40


def _key_file(case, *keys) -> str:
    directory = tempfile.mkdtemp(prefix="wakeproxy-keys-")
    case.addCleanup(shutil.rmtree, directory, True)
    path = os.path.join(directory, "access.keys")
    with open(path, "w") as f:
        f.write("# access keys\n" + "\n".join(keys or (KEY,)) + "\n")
    return path


class OwnerTests(_Case):
    """Finding 2: any API user could stop or delete any other user's instance."""

    def setUp(self):
        self.api = _API(self, "--allow-host-network")
        self.runtime = self.api.runtime
        self.api.as_user(FOO)
        self.assertEqual(self.api.deploy("m1").status, 201)
        self.api.as_user(ALICE)
        self.assertEqual(self.api.deploy("a1").status, 201)

    def test_an_instance_records_who_created_it(self):
        self.assertEqual(self.runtime.get("m1").labels["wakeproxy.owner"], "foo")
        self.assertEqual(self.api.request("GET", "/deploy/a1").json()["owner"], "alice")
        response = self.api.deploy("a2", labels={"wakeproxy.port": "9000", "wakeproxy.owner": "foo"})
        if response.status == 201:  # the create policy may refuse the key; it may never be believed
            self.assertEqual(self.runtime.get("a2").labels["wakeproxy.owner"], "alice")
        else:
            self.assertProblem(response, 422)

    def test_users_see_and_manage_only_their_own(self):
        self.assertEqual([i["name"] for i in self.api.request("GET", "/deploy").json()["instances"]], ["a1"])
        calls = dict(self.runtime.calls)
        for method, suffix in (("GET", ""), ("HEAD", ""), ("PUT", ""), ("PUT", "?wait=ready"), ("DELETE", ""),
                               ("DELETE", "?force"), ("POST", "/stop"), ("POST", "/access")):
            theirs = self.api.request(method, "/deploy/m1" + suffix)
            missing = self.api.request(method, "/deploy/m0" + suffix)
            self.assertEqual(theirs.status, 404, (method, suffix))
            if method != "HEAD":
                self.assertEqual(theirs.json(), json.loads(missing.body.replace(b'"m0', b'"m1')), (method, suffix))
        self.assertEqual(self.runtime.calls, calls)
        self.assertEqual(self.runtime.get("m1").state, "running")
        self.assertEqual(self.api.request("POST", "/deploy/a1/stop").status, 200)

    def test_the_operators_instances_are_for_admins_only(self):
        self.runtime.add_managed("ops", labels={"wakeproxy.port": "9000"})
        for user in (FOO, ALICE):
            self.api.as_user(user)
            self.assertProblem(self.api.request("PUT", "/deploy/ops"), 404)
            self.assertNotIn("ops", [i["name"] for i in self.api.request("GET", "/deploy").json()["instances"]])
        self.api.as_user(ROOT)
        listed = {i["name"]: i["owner"] for i in self.api.request("GET", "/deploy").json()["instances"]}
        self.assertEqual(listed, {"a1": "alice", "m1": "foo", "ops": None})
        self.assertEqual(self.api.request("PUT", "/deploy/ops").json()["state"], "running")
        self.assertEqual(self.api.request("POST", "/deploy/m1/stop").status, 200)
        self.assertEqual(self.api.request("DELETE", "/deploy/a1?force").status, 200)
        self.assertIsNone(self.runtime.get("a1"))
        self.assertEqual(self.api.deploy("r1").status, 201)
        self.assertEqual(self.runtime.get("r1").labels["wakeproxy.owner"], "root")

    def test_the_role_is_read_on_every_request(self):
        self.api.as_user(ROOT)
        self.assertEqual(len(self.api.request("GET", "/deploy").json()["instances"]), 2)
        with open(self.api.passwd) as f:
            lines = f.read().replace(",admin", "")
        with open(self.api.passwd, "w") as f:
            f.write(lines)
        os.utime(self.api.passwd, ns=(7, 7))
        self.assertEqual(self.api.request("GET", "/deploy").json()["instances"], [])
        with open(self.api.passwd, "w") as f:
            f.write("\n".join(line for line in lines.splitlines() if not line.startswith("root,")) + "\n")
        os.utime(self.api.passwd, ns=(8, 8))
        self.assertProblem(self.api.request("GET", "/deploy"), 401, "no longer in the passwd file")

    def test_a_name_taken_by_someone_else_is_409_and_changes_nothing(self):
        self.api.as_user(ALICE)
        self.assertProblem(self.api.deploy("m1"), 409, "already taken")
        self.assertEqual(self.runtime.get("m1").labels["wakeproxy.owner"], "foo")

    def test_dependencies_only_on_ones_own_instances(self):
        """The create policy learns who creates and what exists (finding 5 through the API)."""
        self.api.as_user(ALICE)
        doc = self.assertProblem(self.api.deploy("a2", labels={"wakeproxy.port": "9000",
                                                               "wakeproxy.depends-on": "m1"}), 422)
        self.assertEqual(doc["errors"][0]["field"], "labels.wakeproxy.depends-on")
        self.assertNotIn("foo", doc["detail"])
        self.assertEqual(self.api.deploy("a2", labels={"wakeproxy.port": "9000", "wakeproxy.depends-on": "a1"}).status,
                         201)

    def test_no_auth_is_an_admin_called_anonymous(self):
        api = _API(self, "--no-auth", "--allow-host-network", passwd=False)
        api.runtime.add_managed("ops", labels={"wakeproxy.port": "9000"})
        self.assertEqual(api.deploy("n1").status, 201)
        self.assertEqual(api.runtime.get("n1").labels["wakeproxy.owner"], "anonymous")
        self.assertEqual([i["name"] for i in api.request("GET", "/deploy").json()["instances"]], ["n1", "ops"])


class AccessTokenTests(_Case):
    def api(self, *args):
        api = _API(self, "--allow-host-network", *args)
        api.clock.advance(1_700_000_000)
        api.as_user(FOO)
        self.assertEqual(api.deploy("m1").status, 201)
        return api

    def test_the_owner_gets_a_token_and_a_ready_cookie(self):
        events = _capture_logs(self)
        api = self.api("--access-key", _key_file(self))
        response = api.request("POST", "/deploy/m1/access")
        self.assertEqual(response.status, 200, response.body)
        self.assertEqual(response.headers["cache-control"], "no-store")
        doc = response.json()
        self.assertEqual(set(doc), {"token", "cookie", "expires", "instance"})
        self.assertEqual(doc["expires"], 1_700_000_000 + 12 * 3600)
        self.assertEqual(doc["instance"], "m1")
        keys = AccessKeys([KEY.encode()])
        self.assertEqual(keys.check(doc["token"], "m1", 1_700_000_001), "foo")
        self.assertEqual(doc["cookie"], "wakeproxy_access={}; Path=/; Max-Age=43200; HttpOnly; SameSite=Lax".format(
            doc["token"]))
        self.assertNotIn(doc["token"], _text(events) + repr(events))
        self.assertIn("foo got an access token for m1", _text(events))

    def test_options_name_the_cookie_and_its_lifetime(self):
        api = self.api("--access-key", _key_file(self), "--access-cookie", "tenant", "--access-ttl", "1h",
                       "--access-cookie-secure")
        doc = api.request("POST", "/deploy/m1/access").json()
        self.assertEqual(doc["expires"], 1_700_000_000 + 3600)
        self.assertTrue(doc["cookie"].startswith("tenant={};".format(doc["token"])))
        self.assertTrue(doc["cookie"].endswith("; Max-Age=3600; HttpOnly; SameSite=Lax; Secure"))

    def test_secure_when_asked_over_https_through_a_trusted_proxy(self):
        api = self.api("--access-key", _key_file(self), "--trusted-proxy", "127.0.0.1/32")
        https = {"X-Forwarded-Proto": "https"}
        self.assertIn("; Secure", api.request("POST", "/deploy/m1/access", headers=https).json()["cookie"])
        self.assertNotIn("Secure", api.request("POST", "/deploy/m1/access").json()["cookie"])
        untrusted = api.request("POST", "/deploy/m1/access", headers=https, peer="192.0.2.1")
        self.assertNotIn("Secure", untrusted.json()["cookie"])

    def test_only_for_the_owner_or_an_admin(self):
        api = self.api("--access-key", _key_file(self))
        api.runtime.add_managed("ops", labels={"wakeproxy.port": "9000"})
        api.as_user(ALICE)
        self.assertProblem(api.request("POST", "/deploy/m1/access"), 404, 'no managed instance named "m1"')
        self.assertProblem(api.request("POST", "/deploy/ops/access"), 404)
        api.as_user(ROOT)
        keys = AccessKeys([KEY.encode()])
        token = api.request("POST", "/deploy/m1/access").json()["token"]
        self.assertEqual(keys.check(token, "m1", 1_700_000_001), "foo")  # the owner's name, not the admin's
        token = api.request("POST", "/deploy/ops/access").json()["token"]
        self.assertEqual(keys.check(token, "ops", 1_700_000_001), "")

    def test_without_an_access_key_it_is_409(self):
        api = self.api()
        self.assertProblem(api.request("POST", "/deploy/m1/access"), 409, "access tokens are off")
        response = api.request("GET", "/deploy/m1/access")
        self.assertProblem(response, 405)
        self.assertEqual(response.headers["allow"], "POST")
        self.assertProblem(api.request("POST", "/deploy/m1/access", auth=False), 401)


class MetricsAuthTests(_Case):
    def basic(self, user, password):
        import base64

        return {"Authorization": "Basic " + base64.b64encode("{}:{}".format(user, password).encode()).decode()}

    def test_open_without_the_option(self):
        response = _API(self).request("GET", "/metrics")
        self.assertEqual(response.status, 200)

    def test_a_token_or_a_passwd_user_with_the_option(self):
        api = _API(self, "--metrics-auth")
        response = api.request("GET", "/metrics")
        self.assertProblem(response, 401)
        self.assertIn("Basic", response.headers["www-authenticate"])
        self.assertProblem(api.request("GET", "/metrics", headers={"Authorization": "Bearer forged"}), 401)
        api.login(ALICE)
        response = api.request("GET", "/metrics")
        self.assertEqual(response.status, 200)
        self.assertTrue(response.headers["content-type"].startswith("text/plain"))
        self.assertEqual(api.request("GET", "/metrics", headers=self.basic(*FOO), auth=False).status, 200)
        self.assertEqual(api.request("HEAD", "/metrics", headers=self.basic(*FOO), auth=False).body, b"")
        self.assertProblem(api.request("GET", "/metrics", headers=self.basic("foo", "x"), auth=False), 401)
        self.assertProblem(api.request("GET", "/metrics", headers={"Authorization": "Basic !!"}, auth=False), 401)
        self.assertProblem(api.request("GET", "/metrics", headers={"Authorization": "Basic Zm9v"}, auth=False), 401)

    def test_basic_failures_are_limited_like_sign_ins(self):
        api = _API(self, "--metrics-auth")
        for _ in range(3):
            self.assertProblem(api.request("GET", "/metrics", headers=self.basic("foo", "x"), auth=False), 401)
        self.assertProblem(api.request("GET", "/metrics", headers=self.basic(*FOO), auth=False), 429)

    def test_no_auth_opens_it(self):
        api = _API(self, "--metrics-auth", "--no-auth", passwd=False)
        self.assertEqual(api.request("GET", "/metrics").status, 200)


class EngineErrorTests(_Case):
    """Finding 8: engine errors the SDK did not wrap gave a 500 and left the container in 'created'."""

    def setUp(self):
        self.api = _API(self, "--allow-host-network")
        self.api.as_user(FOO)
        self.runtime = self.api.runtime
        self.events = _capture_logs(self)

    def failing(self, operation, *errors):
        """Make the runtime's next calls of C{operation} fail with C{errors}, one each, then work again."""
        real = getattr(self.runtime, operation)
        queue = list(errors)
        calls = []

        def call(*args, **kwargs):
            calls.append(args)
            if queue:
                self.runtime.calls[operation] = self.runtime.calls.get(operation, 0) + 1
                return fail(queue.pop(0))
            return real(*args, **kwargs)

        self.patch(self.runtime, operation, call)
        return calls

    def test_a_start_the_engine_does_not_answer_is_503_and_rolled_back(self):
        self.failing("start", EngineUnavailable("the Docker engine did not answer in time (ReadTimeout)", True))
        response = self.api.deploy("m1")
        doc = self.assertProblem(response, 503, "did not answer in time")
        self.assertIn("removed again", doc["detail"])
        self.assertEqual(response.headers["retry-after"], "5")
        self.assertIsNone(self.runtime.get("m1"))

    def test_the_removal_is_retried_on_the_clock_and_the_name_stays_busy(self):
        self.failing("start", EngineUnavailable("the Docker engine did not answer in time", True))
        removals = self.failing("remove", EngineUnavailable("the Docker engine did not answer in time", True),
                                EngineFailure("the Docker engine failed: 500"))
        doc = self.assertProblem(self.api.deploy("m1"), 503, "wakeproxy keeps trying")
        self.assertNotIn("removed again", doc["detail"])
        self.assertEqual(len(removals), 1)
        busy = self.api.deploy("m1")
        self.assertProblem(busy, 409, "right now")
        self.assertTrue(busy.headers["retry-after"])
        self.api.clock.advance(1)
        self.assertEqual(len(removals), 2)
        self.assertIsNotNone(self.runtime.get("m1"))
        self.api.clock.advance(2)
        self.assertEqual(len(removals), 3)
        self.assertIsNone(self.runtime.get("m1"))
        self.assertIn("removed m1 after 3 attempts", _text(self.events))
        self.assertEqual(self.api.deploy("m1").status, 201)  # free again

    def test_the_removal_stops_when_the_engine_is_gone(self):
        self.failing("start", EngineUnavailable("the connection to the Docker engine failed"))
        removals = self.failing("remove", *[EngineUnavailable("the connection to the Docker engine failed")] * 9)
        self.assertProblem(self.api.deploy("m1"), 503)
        self.api.clock.advance(600)
        self.assertEqual(len(removals), 1)
        self.assertIn("the sweep of leftovers removes it", _text(self.events))
        self.assertEqual(self.api.clock.getDelayedCalls(), [])

    def test_the_removal_gives_up_after_its_delays(self):
        self.failing("start", RuntimeFailure("network nonet not found"))
        removals = self.failing("remove", *[EngineUnavailable("timed out", True)] * 20)
        self.assertProblem(self.api.deploy("m1"), 424, "network nonet not found")
        self.api.clock.pump([1000] * 12)
        self.assertEqual(len(removals), 9)
        self.assertIn("gave up removing m1 after 9 attempts", _text(self.events))
        self.api.login(FOO)  # the token expired meanwhile
        self.assertProblem(self.api.deploy("m1"), 409, "already taken")  # until the sweep takes it

    def test_a_create_the_engine_does_not_answer_is_503(self):
        self.failing("create", EngineUnavailable("the connection to the Docker engine failed (ConnectionError)"))
        response = self.api.deploy("m1")
        doc = self.assertProblem(response, 503, "ConnectionError")
        self.assertIn("nothing was left behind", doc["detail"])
        self.assertEqual(response.headers["retry-after"], "5")
        self.assertEqual(self.api.deploy("m1").status, 201)

    def test_transport_errors_no_runtime_wrapped_are_503_never_500(self):
        import requests

        self.failing("create", requests.exceptions.ConnectionError("('Connection aborted.', "
                                                                   "ConnectionResetError(104, 'reset by peer'))"))
        doc = self.assertProblem(self.api.deploy("m1"), 503, "could not be reached")
        self.assertNotIn("104", doc["detail"])
        self.api.deploy("m1")
        self.failing("stop", requests.exceptions.ReadTimeout("UnixHTTPConnectionPool(host='localhost'): timed out"))
        doc = self.assertProblem(self.api.request("POST", "/deploy/m1/stop"), 503, "could not be reached")
        self.assertNotIn("localhost", doc["detail"])
        self.flushLoggedErrors()

    def test_operations_answer_the_runtimes_status(self):
        self.api.deploy("m1")
        self.failing("stop", EngineFailure("the Docker engine failed: 500 Server Error"),
                     WrongState("container m1 is restarting"), RuntimeFailure("something odd"))
        response = self.api.request("POST", "/deploy/m1/stop")
        self.assertProblem(response, 503, "500 Server Error")
        self.assertEqual(response.headers["retry-after"], "5")
        self.assertProblem(self.api.request("POST", "/deploy/m1/stop"), 409, "restarting")
        self.assertProblem(self.api.request("POST", "/deploy/m1/stop"), 502, "something odd")
        self.failing("remove", EngineUnavailable("timed out", True))
        self.assertProblem(self.api.request("DELETE", "/deploy/m1?force"), 503)
        self.assertEqual(self.api.request("DELETE", "/deploy/m1?force").status, 200)

    def test_a_bug_is_still_a_500_after_the_rollback(self):
        self.failing("start", ZeroDivisionError("a bug"))
        self.assertProblem(self.api.deploy("m1"), 500)
        self.assertIsNone(self.runtime.get("m1"))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class DeleteRaceTests(_Case):
    def test_a_delete_does_not_remove_a_namesake_made_while_it_stopped(self):
        api = _API(self, "--allow-host-network")
        api.as_user(FOO)
        api.deploy("m1")
        held = Deferred()
        self.patch(api.waker, "halt", lambda name, timeout: held)
        response = api.request("DELETE", "/deploy/m1")
        api.runtime.remove("m1", force=True)
        api.runtime.add_managed("m1", labels={"wakeproxy.port": "9000", "wakeproxy.owner": "alice"})
        held.callback(None)
        self.assertProblem(response, 404)
        self.assertEqual(api.runtime.get("m1").labels["wakeproxy.owner"], "alice")


class OptionTests(SynchronousTestCase):
    def parse(self, *argv):
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_defaults(self):
        settings = self.parse().settings
        access = settings.access
        self.assertEqual(access.mode, "open")
        self.assertIsNone(access.keys)
        self.assertIsNone(access.forward_auth_url)
        self.assertEqual(access.cookie, "wakeproxy_access")
        self.assertEqual(access.ttl, 12 * 3600)
        self.assertEqual(access.forward_auth_headers, ())
        self.assertEqual(access.forward_auth_cache, 0)
        self.assertEqual(settings.allow_ports, ((1024, 65535),))
        api = settings.api
        self.assertEqual((api.metrics_auth, api.allow_router_rules, api.router_labels, api.access_cookie_secure),
                         (False, False, False, False))

    def test_an_access_key_makes_signed_the_default(self):
        path = _key_file(self, "n" * 32, "o" * 32, "p" * 32)
        access = self.parse("--access-key", path).settings.access
        self.assertEqual(access.mode, "signed")
        self.assertIsInstance(access.keys, AccessKeys)
        token = access.keys.issue("x", "foo", 10)
        self.assertEqual(AccessKeys([b"n" * 32]).check(token, "x", 0), "foo")  # the first key signs
        self.assertEqual(self.parse("--access-key", path, "--access", "open").settings.access.mode, "open")

    def test_values(self):
        settings = self.parse("--access", "forward-auth:http://127.0.0.1:9/auth", "--forward-auth-headers",
                              "X-User, Remote-Email", "--forward-auth-cache", "30s", "--allow-port", "8080",
                              "--allow-port", "9000-9100", "--metrics-auth", "--allow-router-rules", "--router-labels",
                              "--access-cookie", "tenant", "--access-ttl", "30m", "--access-cookie-secure").settings
        access = settings.access
        self.assertEqual((access.mode, access.forward_auth_url), ("forward-auth", "http://127.0.0.1:9/auth"))
        self.assertEqual(access.forward_auth_headers, ("x-user", "remote-email"))
        self.assertEqual(access.forward_auth_cache, 30)
        self.assertEqual(settings.allow_ports, ((8080, 8080), (9000, 9100)))
        self.assertEqual((access.cookie, access.ttl), ("tenant", 1800))
        api = settings.api
        self.assertEqual((api.metrics_auth, api.allow_router_rules, api.router_labels, api.access_cookie_secure),
                         (True, True, True, True))

    def test_usage_errors(self):
        short = _key_file(self, "short")
        empty = _key_file(self, "# nothing")
        cases = [
            (["--access", "closed"], "--access"),
            (["--access", "signed"], "--access-key"),
            (["--access", "forward-auth:"], "forward-auth:URL"),
            (["--access", "forward-auth:ftp://x"], "forward-auth:URL"),
            (["--access-key", "/nonexistent/keys"], "--access-key"),
            (["--access-key", short], "at least 32"),
            (["--access-key", empty], "no access key"),
            (["--access-cookie", "a b"], "--access-cookie"),
            (["--access-cookie", "a;b"], "--access-cookie"),
            (["--access-ttl", "0"], "--access-ttl"),
            (["--access-ttl", "soon"], "--access-ttl"),
            (["--forward-auth-headers", "X-Ok,Bad Header"], "--forward-auth-headers"),
            (["--forward-auth-cache", "later"], "--forward-auth-cache"),
            (["--allow-port", "0"], "--allow-port"),
            (["--allow-port", "9000-8000"], "--allow-port"),
            (["--allow-port", "70000"], "--allow-port"),
            (["--allow-port", "http"], "--allow-port"),
            (["--trusted-proxy", "not-a-net"], "--trusted-proxy"),
        ]
        for argv, expected in cases:
            with self.assertRaises(usage.UsageError, msg=argv) as caught:
                self.parse(*argv)
            self.assertIn(expected, str(caught.exception), argv)

    def test_open_access_is_announced_loudly_at_start(self):
        from twisted.internet.testing import MemoryReactorClock
        from wakeproxy import tap

        events = _capture_logs(self)
        options = self.parse("--docker-url", "unix:///nonexistent.sock")
        service = tap.makeService(options, MemoryReactorClock())
        self.assertIn("--access open", _text(events))
        self.assertIn("ANYONE", _text(events))
        del events[:]
        tap.makeService(self.parse("--access-key", _key_file(self), "--docker-url", "unix:///nonexistent.sock"),
                        MemoryReactorClock())
        self.assertNotIn("--access open", _text(events))
        self.assertIsNotNone(service)
