"""Tests for mock_home, the home site: run as a subprocess on a free port, against a deploy API test double."""

import json
import os
import re
import secrets
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
from twisted.trial.unittest import SynchronousTestCase

from mock_home import config, pages
from tests.support import free_port, start_script

APP_PATH = Path(__file__).resolve().parent.parent / "mock_home" / "app.py"
TIMEOUT = 10



# -- the deploy API test double --------------------------------------------------------------------


class FakeDeployApi:
    """
    A test double of wakeproxy's deploy API: POST /login, GET/POST /deploy, GET /deploy/<name>, with
    users, tokens and instances in memory. It records every request it receives in C{requests}.
    """

    def __init__(self, users=None):
        self.users = dict(users or {"foo": "bar", "zip": "zap"})
        self.tokens = {}
        self.instances = {}
        #: POST /deploy/<name>/access: None answers 409 (access tokens off), else the cookie name to name
        self.access_cookie = "wakeproxy_access"
        self.forwarded_for = []  # the X-Forwarded-For header of each POST /login
        self.requests = []  # (method, path, authorization header, parsed JSON body or None)
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeApiHandler)
        self.server.daemon_threads = True
        self.server.api = self
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def add_instance(self, name, user=None, state="exited", health=None):
        labels = {"origin": "spawner"}
        if user is not None:
            labels[config.USER_LABEL] = user
        self.instances[name] = {"name": name, "id": secrets.token_hex(32), "image": "mock-app:latest",
                                "labels": labels, "state": state, "health": health}

    def posts(self, path="/deploy"):
        return [r for r in self.requests if r[0] == "POST" and r[1] == path]


class _FakeApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def _reply(self, status, doc, problem=False):
        body = json.dumps(doc).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/problem+json" if problem else "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _problem(self, status, detail):
        self._reply(status, {"type": "about:blank", "title": "Error", "status": status, "detail": detail}, True)

    def _handle(self):
        api = self.server.api
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        path = self.path.rstrip("/") or "/"
        with api.lock:
            api.requests.append((self.command, path, self.headers.get("Authorization"), body))
            if path == "/login" and self.command == "POST":
                api.forwarded_for.append(self.headers.get("X-Forwarded-For"))
                user, password = body.get("username"), body.get("password")
                if api.users.get(user) != password:
                    return self._problem(401, "login invalid: wrong user name or password")
                token = secrets.token_urlsafe(32)
                api.tokens[token] = user
                return self._reply(200, {"token": token, "token_type": "Bearer", "expires_in": 3600})
            scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
            if scheme.lower() != "bearer" or token not in api.tokens:
                return self._problem(401, "token invalid")
            if path == "/deploy" and self.command == "GET":
                return self._reply(200, {"instances": list(api.instances.values())})
            if path == "/deploy" and self.command == "POST":
                name = body["name"]
                if name in api.instances:
                    return self._problem(409, "the name %r is already taken by another container" % name)
                api.add_instance(name, state="running")
                api.instances[name]["labels"].update(body["labels"])
                api.instances[name]["image"] = body["image"]
                return self._reply(201, api.instances[name])
            if path.startswith("/deploy/") and self.command == "GET":
                doc = api.instances.get(path[len("/deploy/"):])
                return self._reply(200, doc) if doc else self._problem(404, "no managed instance")
            if path.startswith("/deploy/") and path.endswith("/access") and self.command == "POST":
                name = path[len("/deploy/"):-len("/access")]
                doc = api.instances.get(name)
                if doc is None or doc["labels"].get(config.USER_LABEL) != api.tokens[token]:
                    return self._problem(404, "no managed instance named %s" % json.dumps(name))
                if api.access_cookie is None:
                    return self._problem(409, "access tokens are off: wakeproxy runs without --access-key")
                value = "signed-%s-for-%s" % (name, api.tokens[token])
                return self._reply(200, {"token": value, "expires": int(time.time()) + 3600, "instance": name,
                                         "cookie": "%s=%s; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax" % (
                                             api.access_cookie, value)})
            return self._problem(404, "no such API endpoint")

    do_GET = do_POST = do_PUT = do_DELETE = _handle


# -- mock_home as a subprocess ---------------------------------------------------------------------


def start_home(testcase, api_url, **env):
    port = free_port()
    full_env = dict(os.environ)
    for name in ("INSTANCE_IMAGE", "INSTANCE_NETWORK", "INSTANCE_IDLE_TIMEOUT", "SITE_NAME", "http_proxy",
                 "HTTP_PROXY"):
        full_env.pop(name, None)
    full_env.update(HOST="127.0.0.1", PORT=str(port), API_URL=api_url, PYTHONUNBUFFERED="1")
    full_env.update(env)
    return start_script(testcase, APP_PATH, full_env, port)


def set_cookies(response):
    """The response's Set-Cookie headers as {name: (value, {attribute lower-case: value})}."""
    result = {}
    for header in response.raw.headers.getlist("Set-Cookie"):
        pieces = [p.strip() for p in header.split(";")]
        name, _, value = pieces[0].partition("=")
        attributes = {}
        for piece in pieces[1:]:
            key, _, val = piece.partition("=")
            attributes[key.lower()] = val
        result[name] = (value, attributes)
    return result


def csrf_of(page, action):
    """The CSRF token in the form posting to C{action}."""
    match = re.search(r'<form[^>]*action="%s"[^>]*>.*?name="csrf" value="([^"]*)"' % re.escape(action), page, re.S)
    if match is None:
        raise AssertionError("no form for %s in:\n%s" % (action, page))
    return match.group(1)


def element_text(page, element_id):
    match = re.search(r'<[a-z]+ id="%s"[^>]*>(.*?)</' % re.escape(element_id), page, re.S)
    return None if match is None else match.group(1)


class HomeTestCase(SynchronousTestCase):
    """A deploy API double and mock_home in front of it; helpers to drive the pages over HTTP."""

    home_env = {}

    def setUp(self):
        self.api = FakeDeployApi()
        self.addCleanup(self.api.stop)
        self.home = start_home(self, self.api.url, **self.home_env)

    def client(self):
        session = requests.Session()
        session.trust_env = False
        self.addCleanup(session.close)
        return session

    def get(self, client, path, **kwargs):
        kwargs.setdefault("allow_redirects", False)
        return client.get(self.home.url + path, timeout=TIMEOUT, **kwargs)

    def post(self, client, path, data, **kwargs):
        kwargs.setdefault("allow_redirects", False)
        return client.post(self.home.url + path, data=data, timeout=TIMEOUT, **kwargs)

    def sign_in(self, user="foo", password="bar", client=None, headers=None):
        client = client or self.client()
        page = self.get(client, "/home")
        self.assertEqual(page.status_code, 200)
        response = self.post(client, "/home/login", {"username": user, "password": password,
                                                     "csrf": csrf_of(page.text, "/home/login")}, headers=headers)
        return client, response

    def signed_in(self, user="foo", password="bar"):
        client, response = self.sign_in(user, password)
        self.assertEqual(response.status_code, 303, response.text)
        return client

    def home_page(self, client):
        page = self.get(client, "/home")
        self.assertEqual(page.status_code, 200, page.text)
        return page.text


# -- tests -----------------------------------------------------------------------------------------


class NamingTests(SynchronousTestCase):
    """The pure parts: instance names and the Traefik rule."""

    def test_instance_name(self):
        self.assertEqual(config.instance_name("foo"), "u-foo")
        self.assertEqual(config.instance_name("Foo.Bar@Example.com"), "u-foo-bar-example-com")
        self.assertEqual(config.instance_name("x" * 60), "u-" + "x" * 40)
        name = config.instance_name("!!!")
        self.assertRegex(name, r"^u-[a-z0-9-]+$")

    def test_rule_is_anchored(self):
        rule = config.cookie_router_rule("u-foo")
        self.assertEqual(rule, "HeadersRegexp(`Cookie`, `(^|;\\s*)instance=u-foo(;|$)`)")
        pattern = re.compile(rule.split("`")[3])
        for cookie in ("instance=u-foo", "a=1; instance=u-foo", "instance=u-foo; b=2"):
            self.assertIsNotNone(pattern.search(cookie), cookie)
        for cookie in ("xinstance=u-foo", "instance=u-foo0", "instance=u-foo-2", "a=instance=u-foo"):
            self.assertIsNone(pattern.search(cookie), cookie)


class StateWordsTests(SynchronousTestCase):
    """Docker's state and health, the way a person reads them."""

    CASES = [
        (("running", "healthy"), ("awake", "awake")),
        (("running", "none"), ("awake", "awake")),
        (("running", None), ("awake", "awake")),
        (("Running", "starting"), ("waking", "waking")),
        (("running", "unhealthy"), ("awake but unhealthy", "unhealthy")),
        (("exited", "unhealthy"), ("asleep", "asleep")),
        (("exited", "none"), ("asleep", "asleep")),
        (("created", None), ("asleep", "asleep")),
        (("paused", "healthy"), ("paused (asleep)", "asleep")),
        (("restarting", None), ("restarting", "waking")),
        (("dead", None), ("gone", "gone")),
        (("removing", "healthy"), ("gone", "gone")),
        (("frozen<b>", None), ("frozen<b>", "unknown")),
        ((None, None), ("unknown", "unknown")),
    ]

    def test_state_words(self):
        for (state, health), expected in self.CASES:
            self.assertEqual(pages.state_words(state, health), expected, (state, health))


class SiteNameTests(HomeTestCase):
    home_env = {"SITE_NAME": "Acme <apps>"}

    def test_every_page_names_the_site(self):
        client = self.client()
        for page in (self.get(client, "/home"), self.get(client, "/nowhere")):
            self.assertIn("<title>", page.text)
            self.assertIn(" · Acme &lt;apps&gt;</title>", page.text)
            self.assertEqual(element_text(page.text, "site"), "Acme &lt;apps&gt;")
        self.assertIn("Sign in", element_text(self.get(client, "/home").text, "intro"))


class SignInTests(HomeTestCase):

    def test_signin_page(self):
        page = self.get(self.client(), "/home")
        self.assertEqual(page.status_code, 200)
        self.assertTrue(page.headers["Content-Type"].startswith("text/html"))
        self.assertIn("<title>Sign in · wakeproxy demo</title>", page.text)
        self.assertEqual(element_text(page.text, "site"), "wakeproxy demo")
        for element in ('id="username"', 'id="password"', 'id="signin"'):
            self.assertIn(element, page.text)
        self.assertNotIn('id="error"', page.text)
        self.assertNotIn(config.SESSION_COOKIE, set_cookies(page))
        self.assertEqual(self.get(self.client(), "/home/").status_code, 200)

    def test_wrong_password(self):
        client, response = self.sign_in("foo", "nope")
        self.assertEqual(response.status_code, 401)
        self.assertIn('id="error"', response.text)
        self.assertIn("Wrong user name or password", element_text(response.text, "error"))
        self.assertNotIn(config.SESSION_COOKIE, set_cookies(response))
        self.assertNotIn(config.SESSION_COOKIE, client.cookies)
        self.assertEqual(self.api.posts("/login")[-1][3], {"username": "foo", "password": "nope"})

    def test_the_users_address_goes_to_the_api(self):
        """Finding 7: the API limits failed sign-ins per user address, which only mock_home knows."""
        self.sign_in("foo", "nope")
        self.sign_in("foo", "nope", headers={"X-Forwarded-For": "203.0.113.9"})
        self.assertEqual(self.api.forwarded_for, ["127.0.0.1", "203.0.113.9, 127.0.0.1"])

    def test_success(self):
        client, response = self.sign_in()
        self.assertEqual(response.status_code, 303)
        self.assertEqual(response.headers["Location"], "/home")
        value, attributes = set_cookies(response)[config.SESSION_COOKIE]
        self.assertGreaterEqual(len(value), 32)
        self.assertIn("httponly", attributes)
        self.assertEqual(attributes["samesite"], "Lax")
        self.assertEqual(attributes["path"], "/home")
        self.assertNotIn("secure", attributes)
        self.assertLessEqual(int(attributes["max-age"]), 55 * 60)
        page = self.home_page(client)
        self.assertEqual(element_text(page, "user"), "foo")
        self.assertIn('id="create"', page)
        self.assertIn('id="signout"', page)
        self.assertNotIn('id="signin"', page)

    def test_secure_behind_https(self):
        _, response = self.sign_in(headers={"X-Forwarded-Proto": "https"})
        self.assertIn("secure", set_cookies(response)[config.SESSION_COOKIE][1])

    def test_escaped(self):
        _, response = self.sign_in("<script>x</script>", "nope")
        self.assertIn("&lt;script&gt;x&lt;/script&gt;", response.text)
        self.assertNotIn("<script>", response.text)

    def test_login_csrf(self):
        """A sign-in form posted without the login cookie's token (e.g. from another site) is refused."""
        client = self.client()
        self.get(client, "/home")
        response = self.post(client, "/home/login", {"username": "foo", "password": "bar", "csrf": "forged"})
        self.assertEqual(response.status_code, 403)
        self.assertIn('id="error"', response.text)
        self.assertNotIn(config.SESSION_COOKIE, set_cookies(response))
        self.assertEqual(self.api.posts("/login"), [])
        response = self.post(self.client(), "/home/login", {"username": "foo", "password": "bar"})
        self.assertEqual(response.status_code, 403)

    def test_healthz_and_not_found(self):
        response = self.get(self.client(), "/home/healthz")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), {"status": "ok"})
        self.assertEqual(self.get(self.client(), "/elsewhere").status_code, 404)
        self.assertEqual(self.client().delete(self.home.url + "/home", timeout=TIMEOUT).status_code, 405)

    def test_logs_one_line_per_request(self):
        self.sign_in("foo", "secret-password")
        log = self.home.log()
        self.assertIn("GET /home 200", log)
        self.assertIn("POST /home/login 401", log)
        self.assertNotIn("secret-password", log)


class CreateTests(HomeTestCase):

    def test_create_host_network(self):
        client = self.signed_in()
        page = self.home_page(client)
        response = self.post(client, "/home/create", {"csrf": csrf_of(page, "/home/create")})
        self.assertEqual(response.status_code, 303, response.text)
        self.assertEqual(response.headers["Location"], "/home")
        [(_, _, authorization, body)] = self.api.posts()
        token = [t for t, u in self.api.tokens.items() if u == "foo"][0]
        self.assertEqual(authorization, "Bearer " + token)
        port = body["labels"]["wakeproxy.port"]
        self.assertTrue(port.isdigit() and 0 < int(port) < 65536)
        self.assertEqual(body, {
            "name": "u-foo", "network": "host", "image": "mock-app:latest",
            "labels": {"mock-home.user": "foo", "wakeproxy.port": port, "wakeproxy.idle-timeout": "5m"},
            "envs": {"PORT": port, "HOST": "127.0.0.1", "IDLE": "0", "CONNSTR": "db for foo"},
        })
        page = self.home_page(client)
        self.assertEqual(element_text(page, "instance-name"), "u-foo")
        self.assertEqual(element_text(page, "instance-state"), "awake")
        self.assertEqual(element_text(page, "instance-raw"), "Docker: running")
        self.assertIn('id="open"', page)
        self.assertNotIn('id="create"', page)

    def test_create_twice_creates_once(self):
        client = self.signed_in()
        token = csrf_of(self.home_page(client), "/home/create")
        for _ in range(2):
            self.assertEqual(self.post(client, "/home/create", {"csrf": token}).status_code, 303)
        self.assertEqual(len(self.api.posts()), 1)

    def test_name_taken(self):
        self.api.add_instance("u-foo", user="someone-else")
        client = self.signed_in()
        response = self.post(client, "/home/create", {"csrf": csrf_of(self.home_page(client), "/home/create")})
        self.assertEqual(response.status_code, 409)
        self.assertIn("already taken", element_text(response.text, "error"))
        self.assertIn('id="create"', response.text)


class CreateBridgeNetworkTests(HomeTestCase):
    home_env = {"INSTANCE_NETWORK": "web", "INSTANCE_IMAGE": "registry.test/app:2", "INSTANCE_IDLE_TIMEOUT": "30s"}

    def test_create_with_traefik_labels(self):
        client = self.signed_in()
        response = self.post(client, "/home/create", {"csrf": csrf_of(self.home_page(client), "/home/create")})
        self.assertEqual(response.status_code, 303, response.text)
        [(_, _, _, body)] = self.api.posts()
        self.assertEqual(body["name"], "u-foo")
        self.assertEqual(body["network"], "web")
        self.assertEqual(body["image"], "registry.test/app:2")
        labels = body["labels"]
        self.assertEqual(labels["mock-home.user"], "foo")
        self.assertEqual(labels["traefik.enable"], "true")
        self.assertNotIn("traefik.http.routers.u-foo.rule", labels)  # wakeproxy --router-labels writes it
        self.assertEqual(labels["traefik.http.services.u-foo.loadbalancer.server.port"], "9000")
        self.assertEqual(labels["wakeproxy.port"], "9000")
        self.assertEqual(labels["wakeproxy.idle-timeout"], "30s")
        self.assertEqual(body["envs"], {"PORT": "9000", "HOST": "0.0.0.0", "IDLE": "0", "CONNSTR": "db for foo"})


class CreateWithRouterRuleTests(HomeTestCase):
    home_env = {"INSTANCE_NETWORK": "web", "INSTANCE_ROUTER_RULE": "1"}

    def test_the_anchored_rule_on_request(self):
        client = self.signed_in()
        self.post(client, "/home/create", {"csrf": csrf_of(self.home_page(client), "/home/create")})
        [(_, _, _, body)] = self.api.posts()
        self.assertEqual(body["labels"]["traefik.http.routers.u-foo.rule"],
                         "HeadersRegexp(`Cookie`, `(^|;\\s*)instance=u-foo(;|$)`)")


class OpenTests(HomeTestCase):

    def _client_with_instance(self, user="foo", password="bar", name="u-foo"):
        self.api.add_instance(name, user=user)
        return self.signed_in(user, password)

    def test_page_shows_stopped_instance(self):
        """Issue 15: a cleanly stopped instance (its last health check failed) is asleep, the raw state aside."""
        self.api.add_instance("u-foo", user="foo", health="unhealthy")
        page = self.home_page(self.signed_in())
        self.assertEqual(element_text(page, "instance-name"), "u-foo")
        self.assertEqual(element_text(page, "instance-state"), "asleep")
        self.assertIn('title="Docker: exited, health: unhealthy"', page)
        self.assertEqual(element_text(page, "instance-raw"), "Docker: exited, health: unhealthy")
        self.assertNotIn("(health:", page)

    def test_open(self):
        client = self._client_with_instance()
        response = self.post(client, "/home/open", {"csrf": csrf_of(self.home_page(client), "/home/open")})
        self.assertEqual(response.status_code, 303)
        self.assertEqual(response.headers["Location"], "/")
        value, attributes = set_cookies(response)["instance"]
        self.assertEqual(value, "u-foo")
        self.assertIn("httponly", attributes)
        self.assertEqual(attributes["samesite"], "Lax")
        self.assertEqual(attributes["path"], "/")
        self.assertNotIn("secure", attributes)
        value, attributes = set_cookies(response)["wakeproxy_access"]
        self.assertEqual(value, "signed-u-foo-for-foo")
        self.assertIn("httponly", attributes)
        self.assertEqual((attributes["samesite"], attributes["path"]), ("Lax", "/"))
        self.assertTrue(3500 <= int(attributes["max-age"]) <= 3600)
        self.assertNotIn("secure", attributes)

    def test_open_behind_https(self):
        client = self._client_with_instance()
        response = self.post(client, "/home/open", {"csrf": csrf_of(self.home_page(client), "/home/open")},
                             headers={"X-Forwarded-Proto": "https"})
        self.assertEqual(response.status_code, 303)
        self.assertIn("secure", set_cookies(response)["instance"][1])
        self.assertIn("secure", set_cookies(response)["wakeproxy_access"][1])

    def test_open_without_access_tokens_sets_the_instance_cookie_only(self):
        self.api.access_cookie = None  # the API answers 409
        client = self._client_with_instance()
        response = self.post(client, "/home/open", {"csrf": csrf_of(self.home_page(client), "/home/open")})
        self.assertEqual(response.status_code, 303)
        self.assertEqual(set(set_cookies(response)), {"instance"})

    def test_the_access_cookie_is_named_as_the_api_says(self):
        self.api.access_cookie = "tenant"
        client = self._client_with_instance()
        response = self.post(client, "/home/open", {"csrf": csrf_of(self.home_page(client), "/home/open")})
        self.assertEqual(set(set_cookies(response)), {"instance", "tenant"})

    def test_open_someone_elses(self):
        self.api.add_instance("u-zip", user="zip")
        client = self._client_with_instance()
        page = self.home_page(client)
        response = self.post(client, "/home/open", {"csrf": csrf_of(page, "/home/open"), "name": "u-zip"})
        self.assertEqual(response.status_code, 403)
        self.assertNotIn("instance", set_cookies(response))

    def test_shortcut(self):
        client = self._client_with_instance()
        response = self.get(client, "/home/u-foo")
        self.assertEqual(response.status_code, 303)
        self.assertEqual(response.headers["Location"], "/")
        value, attributes = set_cookies(response)["instance"]
        self.assertEqual((value, attributes["path"], attributes["samesite"]), ("u-foo", "/", "Lax"))
        self.assertIn("httponly", attributes)
        self.assertEqual(set_cookies(response)["wakeproxy_access"][0], "signed-u-foo-for-foo")

    def test_shortcut_signed_out(self):
        self.api.add_instance("u-foo", user="foo")
        response = self.get(self.client(), "/home/u-foo")
        self.assertEqual(response.status_code, 303)
        self.assertEqual(response.headers["Location"], "/home")
        self.assertNotIn("instance", set_cookies(response))

    def test_shortcut_other_users_instance(self):
        client = self._client_with_instance()
        self.api.add_instance("u-zip", user="zip")
        self.api.add_instance("unlabelled")
        for path in ("/home/u-zip", "/home/unlabelled", "/home/nothing-here", "/home/%3Cb%3E"):
            response = self.get(client, path)
            self.assertEqual(response.status_code, 403, path)
            self.assertIn('id="error"', response.text)
            self.assertNotIn("instance", set_cookies(response))
            self.assertNotIn("<b>", response.text)


class CsrfTests(HomeTestCase):

    def test_forms_need_the_sessions_token(self):
        self.api.add_instance("u-zip", user="zip")
        client = self.signed_in("zip", "zap")
        other = self.signed_in("foo", "bar")
        others_token = csrf_of(self.home_page(other), "/home/create")
        for action in ("/home/create", "/home/open", "/home/logout"):
            for data in ({}, {"csrf": ""}, {"csrf": "forged"}, {"csrf": others_token}):
                response = self.post(client, action, data)
                self.assertEqual(response.status_code, 403, (action, data))
                self.assertIn('id="error"', response.text)
                self.assertEqual(set_cookies(response), {}, (action, data))
        self.assertEqual(self.api.posts(), [])
        self.assertEqual(element_text(self.home_page(client), "user"), "zip")  # still signed in


class LogoutTests(HomeTestCase):

    def test_logout(self):
        client = self.signed_in()
        session_id = client.cookies[config.SESSION_COOKIE]
        response = self.post(client, "/home/logout", {"csrf": csrf_of(self.home_page(client), "/home/logout")})
        self.assertEqual(response.status_code, 303)
        self.assertEqual(response.headers["Location"], "/home")
        value, attributes = set_cookies(response)[config.SESSION_COOKIE]
        self.assertEqual((value, attributes["max-age"], attributes["path"]), ("", "0", "/home"))
        page = self.get(client, "/home")
        self.assertIn('id="signin"', page.text)
        # The old session id is gone server-side too.
        replay = self.get(self.client(), "/home", cookies={config.SESSION_COOKIE: session_id})
        self.assertIn('id="signin"', replay.text)
        self.assertEqual(self.get(self.client(), "/home/u-foo",
                                  cookies={config.SESSION_COOKIE: session_id}).headers["Location"], "/home")

    def test_expired_token(self):
        """The API forgot the token (it restarted, or the token expired): sign in again."""
        client = self.signed_in()
        self.api.tokens.clear()
        response = self.get(client, "/home")
        self.assertEqual(response.status_code, 401)
        self.assertIn("expired", element_text(response.text, "error"))
        self.assertIn('id="signin"', response.text)
        self.assertEqual(set_cookies(response)[config.SESSION_COOKIE][1]["max-age"], "0")


class ApiDownTests(SynchronousTestCase):

    def test_signin_with_api_down(self):
        home = start_home(self, "http://127.0.0.1:%d" % free_port())
        with requests.Session() as client:
            client.trust_env = False
            page = client.get(home.url + "/home", timeout=TIMEOUT)
            self.assertEqual(page.status_code, 200)
            response = client.post(home.url + "/home/login", timeout=TIMEOUT, allow_redirects=False, data={
                "username": "foo", "password": "bar", "csrf": csrf_of(page.text, "/home/login")})
        self.assertEqual(response.status_code, 502)
        self.assertIn("not reachable", element_text(response.text, "error"))
        self.assertNotIn("Traceback", response.text)
        self.assertNotIn(config.SESSION_COOKIE, set_cookies(response))
        self.assertEqual(home.proc.poll(), None)

    def test_signed_in_then_api_down(self):
        api = FakeDeployApi()
        home = start_home(self, api.url)
        with requests.Session() as client:
            client.trust_env = False
            page = client.get(home.url + "/home", timeout=TIMEOUT)
            response = client.post(home.url + "/home/login", timeout=TIMEOUT, allow_redirects=False, data={
                "username": "foo", "password": "bar", "csrf": csrf_of(page.text, "/home/login")})
            self.assertEqual(response.status_code, 303)
            page = client.get(home.url + "/home", timeout=TIMEOUT)
            api.stop()
            response = client.get(home.url + "/home", timeout=TIMEOUT)
            self.assertEqual(response.status_code, 502)
            self.assertIn("not reachable", element_text(response.text, "error"))
            self.assertIn('id="signout"', response.text)
            response = client.post(home.url + "/home/create", timeout=TIMEOUT, allow_redirects=False,
                                   data={"csrf": csrf_of(page.text, "/home/create")})
            self.assertEqual(response.status_code, 502)
            self.assertIn("not reachable", element_text(response.text, "error"))


class SignalTests(SynchronousTestCase):

    def test_sigterm_exits_zero(self):
        home = start_home(self, "http://127.0.0.1:%d" % free_port())
        home.proc.send_signal(signal.SIGTERM)
        self.assertEqual(home.proc.wait(timeout=5), 0)
        self.assertIn("all requests finished", home.log())
