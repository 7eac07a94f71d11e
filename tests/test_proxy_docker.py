"""
Hold, wake and replay end to end: C{twistd wakeproxy} as a process, real mock_app containers on a real
Docker engine, real HTTP clients over loopback sockets.
"""

import concurrent.futures
import hashlib
import os
import socket
import time

import pytest
import requests
from twisted.trial.unittest import SynchronousTestCase

from tests.dockerapp import Instances
from tests.support import check_problem, metric, start_wakeproxy, unique_name

pytestmark = pytest.mark.docker


def _cookie(name):
    return {"Cookie": "instance={}".format(name)}


class _ProxyCase(SynchronousTestCase):
    """One wakeproxy per test (started with C{self.wakeproxy(*args)}) and the containers the test makes."""

    def setUp(self):
        self.instances = Instances()
        self.addCleanup(self.instances.cleanup)
        self.session = requests.Session()
        self.addCleanup(self.session.close)

    def wakeproxy(self, *args, api: bool = False):
        """
        Start wakeproxy (after creating the test's containers: its first resync then includes them). With
        C{api}, its deploy API needs no credentials (C{--no-auth}), so that the test can poll what wakeproxy
        sees (L{wait_seen}) instead of sleeping.
        """
        return start_wakeproxy(self, *(("--no-auth",) if api else ()), *args)

    def wait_seen(self, server, name, check, what: str, timeout: float = 10) -> dict:
        """
        Poll wakeproxy's own view of an instance (C{GET /deploy/<name>}, with its activity) until
        C{check(doc)} is true; return that document (fail, saying C{what} was awaited, after C{timeout}).
        """
        deadline = time.monotonic() + timeout
        while True:
            doc = self.session.get(server.api_url + "/deploy/" + name, timeout=10).json()
            if check(doc):
                return doc
            self.assertLess(time.monotonic(), deadline, "wakeproxy never saw {} {}: {}".format(name, what, doc))
            time.sleep(0.02)

    def wait_state_seen(self, server, name, state: str, timeout: float = 10) -> dict:
        """L{wait_seen} until wakeproxy's snapshot of the container is in C{state}."""
        return self.wait_seen(server, name, lambda doc: doc.get("state") == state, state, timeout)

    def get(self, server, name, path="/", **kw):
        headers = dict(_cookie(name), **kw.pop("headers", {}))
        return self.session.get(server.proxy_url + path, headers=headers, timeout=kw.pop("timeout", 30), **kw)

    def assertProblem(self, response, status):
        self.assertEqual(response.status_code, status, response.text)
        return check_problem(self, status, response.headers["content-type"], response.json())


class WakeTests(_ProxyCase):
    def test_herd_of_200_gets_and_posts_one_start(self):
        name = self.instances.create()
        server = self.wakeproxy()
        bodies = [os.urandom(1000 + 397 * i) for i in range(100)]

        def one(i):
            with requests.Session() as s:
                if i % 2:
                    r = s.get(server.proxy_url + "/", headers=_cookie(name), timeout=60)
                    return r.status_code, r.json()["instance"], r.headers.get("x-wakeproxy-woke")
                body = bodies[i // 2]
                r = s.post(server.proxy_url + "/echo", data=body, headers=_cookie(name), timeout=60)
                doc = r.json()
                return r.status_code, (doc["length"], doc["sha256"]) == (len(body), hashlib.sha256(body).hexdigest()), \
                    r.headers.get("x-wakeproxy-woke")

        with concurrent.futures.ThreadPoolExecutor(200) as pool:
            results = list(pool.map(one, range(200)))
        self.assertEqual([r[0] for r in results], [200] * 200)
        for i, (status, check, woke) in enumerate(results):
            self.assertEqual(check, name if i % 2 else True, i)
        self.assertGreater(sum(1 for r in results if r[2] == "1"), 0)
        self.assertEqual(self.instances.starts(name), 1)
        # and now it is warm: no Server-Timing, straight through
        r = self.get(server, name)
        self.assertEqual(r.status_code, 200)
        self.assertNotIn("x-wakeproxy-woke", r.headers)

    def test_woken_response_carries_server_timing(self):
        name = self.instances.create(env={"STARTUP_DELAY": "1.0"})
        server = self.wakeproxy()
        started = time.monotonic()
        r = self.get(server, name)
        elapsed = time.monotonic() - started
        self.assertEqual(r.status_code, 200)
        self.assertEqual(r.headers["x-wakeproxy-woke"], "1")
        timing = dict(part.strip().split(";dur=") for part in r.headers["server-timing"].split(","))
        self.assertEqual(set(timing), {"start", "health", "total"})
        self.assertGreaterEqual(float(timing["health"]), 900)  # the app's STARTUP_DELAY
        self.assertGreaterEqual(elapsed, 1.0)

    def test_paused_instance_is_unpaused(self):
        name = self.instances.create(start=True)
        server = self.wakeproxy(api=True)
        self.assertEqual(self.get(server, name).status_code, 200)
        self.instances.client.pause(name)
        self.wait_state_seen(server, name, "paused")  # the pause event reached wakeproxy
        r = self.get(server, name)
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.headers.get("x-wakeproxy-woke"), "1")
        self.assertEqual(self.instances.state(name), "running")

    def test_slow_app_past_the_deadline_gets_504_naming_health(self):
        name = self.instances.create(env={"STARTUP_DELAY": "5"})
        server = self.wakeproxy("--wake-timeout", "1s")
        started = time.monotonic()
        r = self.get(server, name)
        doc = self.assertProblem(r, 504)
        self.assertEqual(doc["phase"], "health")
        self.assertIn("health", doc["detail"])
        self.assertIn("retry-after", r.headers)
        self.assertLess(time.monotonic() - started, 4)

    def test_app_that_never_gets_healthy(self):
        name = self.instances.create(labels={"wakeproxy.health-check": "/no-such-path"})
        server = self.wakeproxy("--wake-timeout", "1.5s")
        doc = self.assertProblem(self.get(server, name), 504)
        self.assertEqual(doc["phase"], "health")
        # the container is left running (a later request may find it ready); nothing was stopped
        self.assertEqual(self.instances.state(name), "running")

    def test_app_that_crashes_on_start_fails_fast_once(self):
        name = self.instances.create(env={"CRASH_ON_START": "1"})
        server = self.wakeproxy("--wake-timeout", "30s", api=True)
        started = time.monotonic()
        doc = self.assertProblem(self.get(server, name), 502)
        self.assertLess(time.monotonic() - started, 5)
        self.assertIn("exited with code 3", doc["detail"])
        seen = self.wait_state_seen(server, name, "exited")
        self.assertEqual((seen["activity"]["waking"], seen["activity"]["last_wake"]["outcome"]), (False, "failed"))
        self.assertEqual(self.instances.starts(name), 1)

    def test_held_bounds_and_held_bodies(self):
        name = self.instances.create(env={"STARTUP_DELAY": "1.5"})
        uploads = self.instances.create(env={"STARTUP_DELAY": "1.0"})
        server = self.wakeproxy("--max-held-per-instance", "2")
        # a held request's body is not read until the instance is ready: any size is held for its head only
        body = os.urandom(3 * 1024 * 1024)
        r = self.session.post(server.proxy_url + "/echo", data=body, headers=_cookie(uploads), timeout=30)
        self.assertEqual((r.status_code, r.json()["sha256"]), (200, hashlib.sha256(body).hexdigest()))
        self.assertEqual(r.headers.get("x-wakeproxy-woke"), "1")

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(requests.get, server.proxy_url + "/", headers=_cookie(name), timeout=30)
                       for _ in range(6)]
            responses = [f.result() for f in futures]
        codes = sorted(r.status_code for r in responses)
        self.assertEqual(codes, [200, 200, 503, 503, 503, 503])
        for r in responses:
            if r.status_code == 503:
                self.assertProblem(r, 503)
                self.assertIn("retry-after", r.headers)
        # once awake, a large body is not held, so it passes
        r = self.session.post(server.proxy_url + "/echo", data=b"x" * 5000, headers=_cookie(name), timeout=30)
        self.assertEqual(r.json()["length"], 5000)

    def test_client_that_leaves_while_held_does_not_stop_the_wake(self):
        name = self.instances.create(env={"STARTUP_DELAY": "1.0"})
        server = self.wakeproxy()
        s = socket.create_connection(("127.0.0.1", server.proxy_port))
        s.sendall("GET / HTTP/1.1\r\nHost: x\r\nCookie: instance={}\r\n\r\n".format(name).encode())
        deadline = time.monotonic() + 10
        while metric(server, "wakeproxy_held_requests") < 1:
            self.assertLess(time.monotonic(), deadline, "the request was never held")
            time.sleep(0.02)
        s.close()
        r = self.get(server, name)
        self.assertEqual(r.status_code, 200)
        self.assertEqual(self.instances.starts(name), 1)


class UnknownTests(_ProxyCase):
    def test_unknown_missing_and_unmanaged(self):
        foreign = self.instances.create(managed=False)
        server = self.wakeproxy("--home-url", "/home")
        cases = [
            ({}, "no cookie named 'instance'"),
            (_cookie("no-such-instance"), "no-such-instance"),
            (_cookie("../etc"), "invalid"),
            (_cookie(foreign), foreign),
        ]
        for headers, detail in cases:
            r = self.session.get(server.proxy_url + "/", headers=dict(headers, Accept="application/json"), timeout=10)
            doc = self.assertProblem(r, 404)
            self.assertIn(detail, doc["detail"], headers)
            r = self.session.get(server.proxy_url + "/", headers=dict(headers, Accept="text/html,*/*"),
                                 allow_redirects=False, timeout=10)
            self.assertEqual((r.status_code, r.headers["location"]), (302, "/home"), headers)
        self.assertEqual(self.instances.state(foreign), "created")
        self.assertEqual(self.instances.starts(foreign), 0)

    def test_absolute_form_target_is_rejected(self):
        server = self.wakeproxy()
        with socket.create_connection(("127.0.0.1", server.proxy_port)) as s:
            s.sendall(b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
            reply = s.recv(65536)
        self.assertTrue(reply.startswith(b"HTTP/1.1 400"), reply[:100])
        self.assertIn(b"application/problem+json", reply)


class SelectorTests(_ProxyCase):
    def test_path_prefix(self):
        name = self.instances.create()
        server = self.wakeproxy("--select", "path:/u")
        r = self.session.get(server.proxy_url + "/u/{}/status?x=1".format(name), timeout=30)
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.json()["status"], "ok")
        r = self.session.get(server.proxy_url + "/u/{}".format(name), timeout=30)
        self.assertEqual(r.json()["instance"], name)

    def test_path_prefix_keep_path(self):
        name = self.instances.create()
        server = self.wakeproxy("--select", "path:/u", "--keep-path")
        r = self.session.post(server.proxy_url + "/u/{}/echo".format(name), data=b"abc", timeout=30)
        self.assertEqual(r.status_code, 404)  # mock_app has no /u/<name>/echo: the path went through unchanged

    def test_host_pattern(self):
        name = self.instances.create()
        server = self.wakeproxy("--select", "host:{name}.apps.test")
        r = self.session.get(server.proxy_url + "/", headers={"Host": "{}.apps.test:8000".format(name)}, timeout=30)
        self.assertEqual(r.json()["instance"], name)
        self.assertEqual(r.json()["requested"], "{}.apps.test:8000/".format(name))  # Host preserved

    def test_header(self):
        base = unique_name("wpt-minion")
        first = self.instances.create(name=base + "-1")
        tenth = self.instances.create(name=base + "-10")
        server = self.wakeproxy("--select", "header:X-Instance")
        r = self.session.get(server.proxy_url + "/", headers={"X-Instance": first}, timeout=30)
        self.assertEqual(r.json()["instance"], first)
        self.assertEqual(self.instances.state(tenth), "created")


class ForwardingTests(_ProxyCase):
    def test_header_hygiene_end_to_end(self):
        name = self.instances.create(start=True)
        sent = dict(_cookie(name), Connection="keep-alive, X-Secret", **{
            "X-Secret": "s3", "X-Forwarded-For": "10.1.2.3", "X-Real-IP": "10.9.9.9", "Forwarded": "for=10.9.9.9",
            "X-Forwarded-Port": "1", "Host": "front.example"})
        # from a peer outside --trusted-proxy, client-sent forwarding headers are dropped and rebuilt
        untrusting = self.wakeproxy()
        # from a trusted one they are extended
        trusting = self.wakeproxy("--trusted-proxy", "127.0.0.0/8")
        for server, chain in ((untrusting, "127.0.0.1"), (trusting, "10.1.2.3, 127.0.0.1")):
            r = self.session.post(server.proxy_url + "/echo", data=b"hello", timeout=30, headers=sent)
            headers = {k.lower(): v for k, v in r.json()["headers"].items()}
            self.assertNotIn("x-secret", headers)
            self.assertNotIn("connection", headers)
            self.assertEqual(headers["x-forwarded-for"], chain)
            self.assertEqual(headers["x-forwarded-proto"], "http")
            self.assertEqual(headers["x-forwarded-host"], "front.example")
            self.assertEqual(headers["host"], "front.example")
            self.assertIn("wakeproxy", headers["via"])
            self.assertIn("wakeproxy", r.headers["via"])
            if server is untrusting:
                for dropped in ("x-real-ip", "forwarded", "x-forwarded-port"):
                    self.assertNotIn(dropped, headers)
            else:
                self.assertEqual(headers["x-real-ip"], "10.9.9.9")

    def test_all_methods_and_status_codes_pass_through(self):
        name = self.instances.create(start=True)
        server = self.wakeproxy()
        for method in ("PUT", "POST"):
            r = self.session.request(method, server.proxy_url + "/echo", data=b"z" * 300000, headers=_cookie(name),
                                     timeout=30)
            self.assertEqual((r.status_code, r.json()["method"], r.json()["length"]), (200, method, 300000))
        r = self.session.head(server.proxy_url + "/", headers=_cookie(name), timeout=30)
        self.assertEqual((r.status_code, r.content), (200, b""))
        r = self.get(server, name, "/nothing-here")
        self.assertEqual(r.status_code, 404)
        self.assertEqual(r.headers["content-type"], "application/json")  # the app's own 404, untouched

    def test_download_streams_with_bounded_memory_and_disconnect_stops_upstream(self):
        name = self.instances.create(start=True)
        server = self.wakeproxy()
        size = 1 << 30
        pid = server.process.pid
        rss_before = _rss(pid)
        peak = rss_before
        with socket.create_connection(("127.0.0.1", server.proxy_port)) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.sendall("GET /bytes/{} HTTP/1.1\r\nHost: x\r\nCookie: instance={}\r\n\r\n".format(size, name).encode())
            # A client that does not read for 2 s: without backpressure wakeproxy would buffer the stream.
            time.sleep(2)
            peak = max(peak, _rss(pid))
            received = 0
            digest = hashlib.sha256()
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(65536)
            head, _, rest = head.partition(b"\r\n\r\n")
            self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
            buffered = rest
            while received < size // 2:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                received += len(chunk)
                if received % (64 << 20) < len(chunk):
                    peak = max(peak, _rss(pid))
        growth = peak - rss_before
        self.assertGreater(received, size // 2 - (1 << 20))
        self.assertLess(growth, 40 << 20, "wakeproxy RSS grew by {} MB".format(growth >> 20))
        # closing mid-download stops the upstream transfer
        deadline = time.monotonic() + 5
        while "client gone after" not in self.instances.logs(name):
            self.assertLess(time.monotonic(), deadline, "the upstream kept streaming after the client left")
            time.sleep(0.1)
        del buffered, digest


def _rss(pid: int) -> int:
    with open("/proc/{}/status".format(pid)) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for {}".format(pid))
