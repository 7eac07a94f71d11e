"""
TLS on both sides (listening through an ssl: endpoint, an https upstream verified against a private CA)
and the Traefik route check against a test double of Traefik's one router endpoint.
"""

import http.server
import json
import os
import tempfile
import threading
import time

import pytest
import requests

from tests.certs import make_ca_and_server
from tests.support import free_port, start_wakeproxy
from tests.test_proxy_docker import _ProxyCase, _cookie

pytestmark = pytest.mark.docker


class TlsTests(_ProxyCase):
    def setUp(self):
        _ProxyCase.setUp(self)
        self.tmp = tempfile.mkdtemp(prefix="wakeproxy-tls-")
        self.good = make_ca_and_server(self.tmp)
        other = os.path.join(self.tmp, "other")
        os.mkdir(other)
        self.other = make_ca_and_server(other, "other")

    def tls_wakeproxy(self):
        listen = "ssl:{{port}}:interface=127.0.0.1:privateKey={key}:certKey={cert}".format(**self.good)
        return start_wakeproxy(self, listen=listen)

    def test_tls_listener_and_verified_https_upstream(self):
        name = self.instances.create(start=True)
        inner = self.tls_wakeproxy()
        # the TLS listener, verified by a real client against the throwaway CA
        r = requests.get("https://localhost:{}/".format(inner.proxy_port), headers=_cookie(name),
                         verify=self.good["ca"], timeout=30)
        self.assertEqual(r.json().get("instance"), name, r.text)
        # a wakeproxy whose upstream is that https listener, trusting the private CA
        outer = self.wakeproxy("--upstream", "https://localhost:{}".format(inner.proxy_port),
                               "--upstream-ca", self.good["ca"])
        r = self.get(outer, name, headers={"Host": "front.example"})
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.json()["requested"], "front.example/")
        self.assertEqual(r.headers["via"].count("wakeproxy"), 2)

    def test_untrusted_upstream_certificate_is_refused(self):
        name = self.instances.create(start=True)
        inner = self.tls_wakeproxy()
        outer = self.wakeproxy("--upstream", "https://localhost:{}".format(inner.proxy_port),
                               "--upstream-ca", self.other["ca"])
        doc = self.assertProblem(self.get(outer, name), 502)
        self.assertIn(name, doc["detail"])
        self.assertNotIn("localhost", doc["detail"])  # internal addresses go to the log, not to clients


class _TraefikDouble(http.server.BaseHTTPRequestHandler):
    """A test double of Traefik's C{GET /api/http/routers/<name>@docker} and nothing else."""

    enabled_after = 3
    calls: dict = {}

    def do_GET(self):
        prefix = "/api/http/routers/"
        if not self.path.startswith(prefix) or not self.path.endswith("@docker"):
            self.send_error(404)
            return
        router = self.path[len(prefix):-len("@docker")]
        self.server.calls[router] = self.server.calls.get(router, 0) + 1
        if self.server.broken:
            self.send_error(500)
            return
        if self.server.calls[router] <= self.server.enabled_after:
            self.send_error(404)
            return
        body = json.dumps({"name": router + "@docker", "status": "enabled", "rule": "Host(`x`)",
                           "service": router}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class RouteCheckTests(_ProxyCase):
    def traefik(self, broken=False):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _TraefikDouble)
        server.calls, server.broken, server.enabled_after = {}, broken, 3
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return server

    def test_waits_for_the_router(self):
        name = self.instances.create(labels={"wakeproxy.router": "custom-router"})
        traefik = self.traefik()
        server = self.wakeproxy("--traefik-api", "http://127.0.0.1:{}".format(traefik.server_port))
        r = self.get(server, name)
        self.assertEqual(r.status_code, 200)
        self.assertIn("route;dur=", r.headers["server-timing"])
        self.assertGreaterEqual(traefik.calls["custom-router"], 4)

    def test_failing_traefik_api_never_stops_the_container(self):
        name = self.instances.create()
        traefik = self.traefik(broken=True)
        server = self.wakeproxy("--traefik-api", "http://127.0.0.1:{}".format(traefik.server_port),
                                "--wake-timeout", "1.5s")
        doc = self.assertProblem(self.get(server, name), 504)
        self.assertEqual(doc["phase"], "route")
        time.sleep(0.5)
        self.assertEqual(self.instances.state(name), "running")
