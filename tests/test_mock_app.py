"""Tests for the mock_app demo backend, run as a subprocess on a free port."""

import hashlib
import http.client
import json
import os
import signal
import socket
import struct
import threading
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.support import ScriptProcess, can_connect, free_port, import_script

APP_PATH = Path(__file__).resolve().parent.parent / "mock_app" / "app.py"

app = import_script("mock_app_app", APP_PATH)


class AppProcess(ScriptProcess):
    """A running mock_app subprocess, with its stderr captured in a file."""

    def connection(self, timeout=10):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=10):
        """Make one request on a fresh connection; return (response, body bytes)."""
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response, response.read()
        finally:
            conn.close()

    def get_json(self, path):
        response, body = self.request("GET", path)
        return response.status, json.loads(body)


def start_app(testcase, wait=True, **env):
    """Start mock_app with extra environment; always killed in cleanup."""
    port = free_port()
    full_env = dict(os.environ)
    for name in ("IDLE", "INSTANCE", "CONNSTR", "STARTUP_DELAY", "CRASH_ON_START"):
        full_env.pop(name, None)
    full_env.update(HOST="127.0.0.1", PORT=str(port), PYTHONUNBUFFERED="1")
    full_env.update(env)
    return AppProcess(APP_PATH, full_env, port).start(testcase, wait=wait)


def in_thread(function, *args):
    """Run function(*args) in a thread; return (thread, result dict)."""
    result = {}

    def run():
        try:
            result["value"] = function(*args)
        except BaseException as error:  # reported by the test's assertions
            result["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def left_seconds(process):
    """Return the /status "left" value in seconds."""
    status, body = process.get_json("/status")
    assert status == 200 and body["status"] == "ok", body
    assert body["left"].endswith("s"), body
    return float(body["left"][:-1])


class ParseDurationTests(SynchronousTestCase):
    """parse_duration accepts Go-style durations and rejects the rest."""

    VALID = [
        ("0", 0.0),
        ("0s", 0.0),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("1m", 60.0),
        ("2h", 7200.0),
        ("1h30m", 5400.0),
        ("1m30.5s", 90.5),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("10ns", 1e-8),
        ("+1s", 1.0),
    ]
    INVALID = ["", "abc", "10", "00", "1x", "-1s", "1.2.3s", "s", "1 m", " 1s", "1m 30s",
               "1S", "1sec", "ms", "1h-30m"]

    def test_valid(self):
        for text, expected in self.VALID:
            self.assertAlmostEqual(app.parse_duration(text), expected, places=12, msg=text)

    def test_invalid(self):
        for text in self.INVALID:
            self.assertRaises(ValueError, app.parse_duration, text)


class PatternTests(SynchronousTestCase):
    """pattern() yields byte i % 251 at absolute offset i."""

    def test_values(self):
        self.assertEqual(app.pattern(0, 3), b"\x00\x01\x02")
        self.assertEqual(app.pattern(249, 4), b"\xf9\xfa\x00\x01")
        self.assertEqual(app.pattern(251 * 1000 + 7, 2), b"\x07\x08")
        self.assertEqual(app.pattern(5, 0), b"")

    def test_split_consistency(self):
        whole = app.pattern(0, 300000)
        self.assertEqual(whole, bytes(i % 251 for i in range(300000)))
        self.assertEqual(app.pattern(0, 65536) + app.pattern(65536, 300000 - 65536), whole)
        self.assertEqual(app.pattern(123457, 70000), whole[123457:123457 + 70000])


class EndpointTests(SynchronousTestCase):
    """Every endpoint of a running app."""

    def setUp(self):
        self.app = start_app(self, IDLE="1h", CONNSTR="postgres://db/example",
                             INSTANCE="blue-1")

    def test_root(self):
        response, body = self.app.request("GET", "/?q=1",
                                          headers={"Host": "demo.example:8080"})
        self.assertEqual(response.status, 200)
        self.assertEqual(response.getheader("Content-Type"), "application/json")
        self.assertEqual(int(response.getheader("Content-Length")), len(body))
        self.assertEqual(json.loads(body), {
            "hostname": socket.gethostname(),
            "instance": "blue-1",
            "connection string": "postgres://db/example",
            "requested": "demo.example:8080/?q=1",
        })

    def test_root_resets_status_does_not(self):
        first = left_seconds(self.app)
        self.assertTrue(3590 < first <= 3600, first)
        time.sleep(0.3)
        second = left_seconds(self.app)
        self.assertLess(second, first)
        status, _ = self.app.get_json("/")
        self.assertEqual(status, 200)
        self.assertGreater(left_seconds(self.app), second)

    def test_echo_content_length(self):
        data = os.urandom(1 << 20)
        conn = self.app.connection()
        self.addCleanup(conn.close)
        conn.putrequest("POST", "/echo?x=1")
        conn.putheader("Content-Length", str(len(data)))
        conn.putheader("X-Repeat", "a")
        conn.putheader("X-Repeat", "b")
        conn.putheader("X-CamelCase", "kept")
        conn.endheaders(data)
        response = conn.getresponse()
        self.assertEqual(response.status, 200)
        body = json.loads(response.read())
        self.assertEqual(body["length"], len(data))
        self.assertEqual(body["sha256"], hashlib.sha256(data).hexdigest())
        self.assertEqual(body["method"], "POST")
        self.assertEqual(body["path"], "/echo?x=1")
        self.assertEqual(body["headers"]["X-Repeat"], "a, b")
        self.assertEqual(body["headers"]["X-CamelCase"], "kept")
        self.assertEqual(body["headers"]["Content-Length"], str(len(data)))

    def test_echo_chunked(self):
        pieces = [os.urandom(size) for size in (1, 1000, 70000, 5, 200000)]
        response, raw = self.app.request("PUT", "/echo", body=iter(pieces))
        self.assertEqual(response.status, 200)
        body = json.loads(raw)
        data = b"".join(pieces)
        self.assertEqual(body["headers"]["Transfer-Encoding"], "chunked")
        self.assertEqual(body["length"], len(data))
        self.assertEqual(body["sha256"], hashlib.sha256(data).hexdigest())
        self.assertEqual(body["method"], "PUT")

    def test_echo_empty(self):
        response, raw = self.app.request("POST", "/echo", body=b"")
        self.assertEqual(response.status, 200)
        body = json.loads(raw)
        self.assertEqual(body["length"], 0)
        self.assertEqual(body["sha256"], hashlib.sha256(b"").hexdigest())

    def test_bytes(self):
        size = (1 << 20) + 12345
        response, data = self.app.request("GET", "/bytes/%d" % size)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.getheader("Transfer-Encoding"), "chunked")
        self.assertIsNone(response.getheader("Content-Length"))
        self.assertEqual(len(data), size)
        self.assertEqual(hashlib.sha256(data).hexdigest(),
                         hashlib.sha256(app.pattern(0, size)).hexdigest())

    def test_bytes_zero(self):
        response, data = self.app.request("GET", "/bytes/0")
        self.assertEqual(response.status, 200)
        self.assertEqual(data, b"")

    def test_bytes_client_gone(self):
        conn = self.app.connection()
        conn.request("GET", "/bytes/%d" % (1 << 34))
        response = conn.getresponse()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.read(100000), app.pattern(0, 100000))
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        end = time.monotonic() + 10
        while "client gone after" not in self.app.log() and time.monotonic() < end:
            time.sleep(0.05)
        self.assertIn("client gone after", self.app.log())
        status, _ = self.app.get_json("/status")
        self.assertEqual(status, 200)

    def test_slow(self):
        status, body = self.app.get_json("/slow?ms=300")
        self.assertEqual(status, 200)
        self.assertEqual(body, {"slept_ms": 300})

    def test_not_found(self):
        for path in ("/nope", "/statusx", "/bytes", "/echo/x"):
            response, raw = self.app.request("GET", path)
            self.assertEqual(response.status, 404, path)
            self.assertEqual(json.loads(raw), {"error": "not found"})

    def test_keep_alive_and_connection_close(self):
        conn = self.app.connection()
        self.addCleanup(conn.close)
        conn.request("GET", "/status")
        first = conn.getresponse()
        first.read()
        sock = conn.sock
        self.assertIsNotNone(sock)
        conn.request("GET", "/")
        second = conn.getresponse()
        second.read()
        self.assertEqual(second.status, 200)
        self.assertIs(conn.sock, sock)
        conn.request("GET", "/status", headers={"Connection": "close"})
        third = conn.getresponse()
        third.read()
        self.assertEqual(third.status, 200)
        self.assertEqual(third.getheader("Connection"), "close")

    def test_request_log_lines(self):
        self.app.get_json("/status")
        self.app.request("GET", "/missing")
        end = time.monotonic() + 5
        while "GET /missing 404" not in self.app.log() and time.monotonic() < end:
            time.sleep(0.02)
        log = self.app.log()
        self.assertIn("GET /status 200 ", log)
        self.assertIn("GET /missing 404 ", log)


class ConfigurationTests(SynchronousTestCase):
    """Environment handling: IDLE values, startup delay, crash on start."""

    def test_invalid_idle_defaults_to_one_minute(self):
        process = start_app(self, IDLE="soon")
        self.assertTrue(50 < left_seconds(process) <= 60)
        self.assertEqual(process.log().count("warning"), 1, process.log())

    def test_idle_zero_never(self):
        process = start_app(self, IDLE="0")
        status, body = process.get_json("/status")
        self.assertEqual(status, 200)
        self.assertEqual(body["left"], "never")

    def test_default_instance_is_hostname(self):
        process = start_app(self)
        status, body = process.get_json("/")
        self.assertEqual(status, 200)
        self.assertEqual(body["instance"], socket.gethostname())
        self.assertEqual(body["connection string"], "")

    def test_startup_delay(self):
        process = start_app(self, wait=False, STARTUP_DELAY="1")
        self.assertFalse(can_connect(process.port))
        process.wait_listening()
        status, _ = process.get_json("/status")
        self.assertEqual(status, 200)

    def test_crash_on_start(self):
        process = start_app(self, wait=False, CRASH_ON_START="1")
        self.assertEqual(process.wait_exit(10), 3)
        self.assertNotEqual(process.log().strip(), "")


class ShutdownTests(SynchronousTestCase):
    """Idle shutdown and signal handling."""

    def test_idle_exit_without_requests(self):
        process = start_app(self, IDLE="1s")
        started = time.monotonic()
        self.assertEqual(process.wait_exit(10), 0)
        self.assertLess(time.monotonic() - started, 3.5)

    def test_status_polling_does_not_keep_alive(self):
        process = start_app(self, IDLE="1s")
        end = time.monotonic() + 10
        while process.proc.poll() is None and time.monotonic() < end:
            try:
                process.get_json("/status")
            except OSError:
                pass
            time.sleep(0.1)
        self.assertEqual(process.wait_exit(1), 0)

    def test_idle_waits_for_long_request(self):
        process = start_app(self, IDLE="1s")
        thread, result = in_thread(process.request, "GET", "/slow?ms=2500", None, None, 20)
        # The listening socket closes at the idle deadline while /slow runs.
        end = time.monotonic() + 10
        while can_connect(process.port) and time.monotonic() < end:
            time.sleep(0.05)
        self.assertFalse(can_connect(process.port))
        thread.join(20)
        self.assertNotIn("error", result)
        response, body = result["value"]
        self.assertEqual(response.status, 200)
        self.assertEqual(json.loads(body), {"slept_ms": 2500})
        self.assertEqual(process.wait_exit(10), 0)

    def test_sigterm(self):
        process = start_app(self, IDLE="1h")
        started = time.monotonic()
        process.proc.send_signal(signal.SIGTERM)
        self.assertEqual(process.wait_exit(10), 0)
        self.assertLess(time.monotonic() - started, 3.0)

    def test_sigint(self):
        process = start_app(self, IDLE="1h")
        process.proc.send_signal(signal.SIGINT)
        self.assertEqual(process.wait_exit(3), 0)

    def test_sigterm_lets_short_request_finish(self):
        process = start_app(self, IDLE="1h")
        thread, result = in_thread(process.request, "GET", "/slow?ms=500")
        end = time.monotonic() + 5
        while "/slow" not in process.log() and time.monotonic() < end:
            time.sleep(0.02)
        time.sleep(0.1)
        process.proc.send_signal(signal.SIGTERM)
        self.assertEqual(process.wait_exit(5), 0)
        thread.join(10)
        self.assertNotIn("error", result)
        response, body = result["value"]
        self.assertEqual(response.status, 200)
        self.assertEqual(json.loads(body), {"slept_ms": 500})

    def test_sigterm_bounds_long_request(self):
        process = start_app(self, IDLE="1h")
        thread, result = in_thread(process.request, "GET", "/slow?ms=30000")
        time.sleep(0.3)
        started = time.monotonic()
        process.proc.send_signal(signal.SIGTERM)
        self.assertEqual(process.wait_exit(10), 0)
        self.assertLess(time.monotonic() - started, 5.0)
        thread.join(10)
        self.assertIn("error", result)


class BurstTests(SynchronousTestCase):
    """Many simultaneous connections are all accepted and served."""

    def test_300_concurrent_connections(self):
        process = start_app(self, IDLE="1h")
        count = 300
        barrier = threading.Barrier(count)
        statuses = [None] * count

        def worker(index):
            conn = process.connection(timeout=30)
            try:
                conn.connect()
                barrier.wait(30)
                conn.request("GET", "/status")
                response = conn.getresponse()
                response.read()
                statuses[index] = response.status
            except Exception as error:
                statuses[index] = repr(error)
            finally:
                conn.close()

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        self.assertEqual(statuses, [200] * count)
