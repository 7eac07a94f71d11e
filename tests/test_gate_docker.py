"""
Access to instances through the proxy (C{--access}), end to end: C{twistd wakeproxy} as a process, real
mock_app containers, real HTTP clients. Without access nothing is woken and nothing says whether the
instance exists.
"""

import http.server
import json
import os
import shutil
import tempfile
import threading
import time

import pytest
import requests

from tests.support import check_problem, free_port
from tests.test_proxy_docker import _ProxyCase
from wakeproxy.http.access import AccessKeys

pytestmark = pytest.mark.docker

KEY = b"test-access-key-" + b"x" * 32


class _AuthDouble(http.server.BaseHTTPRequestHandler):
    """A forwardAuth service: allows requests carrying X-Test-Allow: yes (answering X-User), else 403."""

    def do_GET(self):
        self.server.seen.append((self.headers.get("X-Forwarded-Method"), self.headers.get("X-Forwarded-Uri")))
        if self.headers.get("X-Test-Allow") == "yes":
            self.send_response(200)
            self.send_header("X-User", "alice")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"forbidden by the auth service"
        self.send_response(403)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _GateCase(_ProxyCase):
    def setUp(self):
        _ProxyCase.setUp(self)
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)


class SignedAccessTests(_GateCase):
    def test_no_token_no_wake_no_existence(self):
        name = self.instances.create()
        key_file = os.path.join(self.dir, "access.key")
        with open(key_file, "wb") as f:
            f.write(KEY + b"\n")
        server = self.wakeproxy("--access-key", key_file)
        url = server.proxy_url + "/echo"
        keys = AccessKeys([KEY])
        # no token, a token for another instance, an expired one, garbage: 401, the same for a missing instance
        for target in (name, "no-such-instance"):
            cases = [
                ({}, "needs an access token"),
                ({"wakeproxy_access": keys.issue("other", "u", time.time() + 60)}, "another instance"),
                ({"wakeproxy_access": keys.issue(target, "u", time.time() - 1)}, "expired"),
                ({"wakeproxy_access": "garbage"}, "malformed"),
            ]
            for cookies, reason in cases:
                r = requests.get(url, cookies=dict(cookies, instance=target), timeout=10)
                self.assertEqual(r.status_code, 401, r.text)
                doc = check_problem(self, 401, r.headers["content-type"], r.json())
                self.assertIn(reason, doc["detail"])
            r = requests.get(url, cookies={"instance": target}, headers={"X-Wakeproxy-Status": "1"}, timeout=10)
            self.assertEqual(r.status_code, 401)
            r = requests.get(server.proxy_url + "/", cookies={"instance": target}, headers={"Accept": "text/html"},
                             allow_redirects=False, timeout=10)
            self.assertEqual((r.status_code, r.headers.get("location")), (302, "/home"))
        self.assertEqual(self.instances.starts(name), 0)
        # with a token (cookie or header): woken, and the token never reaches the app
        token = keys.issue(name, "", time.time() + 60)  # an operator-made instance: no owner
        r = requests.post(url, data=b"hi", cookies={"instance": name, "wakeproxy_access": token, "theme": "dark"},
                          timeout=30)
        self.assertEqual(r.status_code, 200, r.text)
        headers = json.dumps(r.json()["headers"])
        self.assertNotIn(token, headers)
        self.assertIn("theme=dark", headers)
        r = requests.post(url, data=b"hi", cookies={"instance": name}, headers={"X-Wakeproxy-Access": token},
                          timeout=30)
        self.assertEqual(r.status_code, 200, r.text)
        self.assertNotIn(token, json.dumps(r.json()["headers"]))
        self.assertEqual(self.instances.starts(name), 1)


class ForwardAuthTests(_GateCase):
    def test_forward_auth_decides_before_anything_wakes(self):
        name = self.instances.create()
        auth = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _AuthDouble)
        auth.seen = []
        threading.Thread(target=auth.serve_forever, daemon=True).start()
        self.addCleanup(auth.server_close)
        self.addCleanup(auth.shutdown)
        server = self.wakeproxy("--access", "forward-auth:http://127.0.0.1:{}/check".format(auth.server_port),
                                "--forward-auth-headers", "X-User")
        r = requests.post(server.proxy_url + "/echo?q=1", data=b"x", cookies={"instance": name}, timeout=10)
        self.assertEqual((r.status_code, r.text), (403, "forbidden by the auth service"))
        self.assertEqual(auth.seen[-1], ("POST", "/echo?q=1"))
        self.assertEqual(self.instances.starts(name), 0)
        r = requests.post(server.proxy_url + "/echo", data=b"x", cookies={"instance": name},
                          headers={"X-Test-Allow": "yes", "X-User": "forged"}, timeout=30)
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.json()["headers"].get("X-User"), "alice")
        self.assertEqual(self.instances.starts(name), 1)
