"""Tests for the mock_app demo backend, run as a subprocess on a free port; its WebSocket and
``Expect: 100-continue`` plumbing (demo_http) also in-process; and tests.plainapp, the plain upstream."""

import base64
import contextlib
import hashlib
import http.client
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests import plainapp
from tests.support import ScriptProcess, can_connect, free_port, import_script

APP_PATH = Path(__file__).resolve().parent.parent / "mock_app" / "app.py"
PLAINAPP_PATH = Path(__file__).resolve().parent / "plainapp.py"

app = import_script("mock_app_app", APP_PATH)
demo_http = app.demo_http

# RFC 6455 section 1.3: this key's accept value.
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


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


class AcceptsHtmlTests(SynchronousTestCase):
    """accepts_html: a browser's navigation gets the page, every other client the JSON."""

    BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
    CASES = [
        (BROWSER, True),
        ("text/html", True),
        ("TEXT/HTML; charset=utf-8", True),
        ("application/xhtml+xml", True),
        ("application/json, text/html;q=0.9", False),
        ("text/html;q=0.5, application/json;q=0.9", False),
        ("application/json;q=0.5, text/html", True),
        ("application/json, text/html", False),  # a tie: JSON, the app's own format
        ("text/html;q=0", False),
        ("text/html;q=abc", False),
        ("*/*", False),
        ("text/*", False),
        ("application/json", False),
        ("", False),
        (None, False),
    ]

    def test_table(self):
        for accept, expected in self.CASES:
            self.assertEqual(app.accepts_html(accept), expected, accept)

    def test_page_escapes_everything(self):
        page = app.identity_page({"hostname": "h<1>", "instance": "<script>x</script>",
                                  "connection string": "a&b \"c\"", "requested": "x/?q=<i>"})
        self.assertNotIn("<script>x", page)
        self.assertNotIn("<i>", page)
        self.assertIn("&lt;script&gt;x&lt;/script&gt;", page)
        self.assertIn("a&amp;b &quot;c&quot;", page)
        self.assertIn('<a id="home" href="/home">', page)
        self.assertIn("(none set)", app.identity_page({"hostname": "h", "instance": "i",
                                                       "connection string": "", "requested": "/"}))


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

    def test_root_for_a_browser(self):
        """Issue 15: a browser gets the identity as a page with a way back home; curl still gets JSON."""
        browser = {"Host": "demo.example", "Accept": AcceptsHtmlTests.BROWSER}
        response, body = self.app.request("GET", "/", headers=browser)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.getheader("Content-Type"), "text/html; charset=utf-8")
        self.assertEqual(response.getheader("Vary"), "Accept")
        self.assertIn("default-src 'none'", response.getheader("Content-Security-Policy"))
        page = body.decode("utf-8")
        for text in ('<dd id="instance"><code>blue-1</code>', '<dd id="connstr"><code>postgres://db/example</code>',
                     '<dd id="hostname"><code>%s</code>' % socket.gethostname(), 'href="/home"',
                     "<title>blue-1 · wakeproxy demo</title>"):
            self.assertIn(text, page)
        response, body = self.app.request("HEAD", "/", headers={"Accept": "text/html"})
        self.assertEqual((response.status, response.getheader("Content-Type"), body),
                         (200, "text/html; charset=utf-8", b""))
        response, body = self.app.request("GET", "/", headers={"Accept": "*/*"})
        self.assertEqual(response.getheader("Content-Type"), "application/json")
        self.assertEqual(json.loads(body)["instance"], "blue-1")

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


# -- WebSocket ------------------------------------------------------------------


def parse_headers(text):
    """Request headers as BaseHTTPRequestHandler holds them, from ``Name: value`` lines."""
    return http.client.parse_headers(io.BytesIO(text.encode("latin-1") + b"\r\n"))


HANDSHAKE = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"


def client_frame(opcode, payload, fin=True):
    """A masked (client) frame."""
    return demo_http.encode_frame(opcode, payload, fin=fin, mask=os.urandom(4))


def read_head(sock):
    """Read an HTTP response head from a raw socket, byte by byte; return (status line, headers dict, rest)."""
    data = b""
    while b"\r\n\r\n" not in data:
        byte = sock.recv(1)
        if not byte:
            raise AssertionError("connection closed after %r" % data)
        data += byte
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, rest


def ws_connect(port, **kwargs):
    """The websockets sync client on mock_app's /ws (no proxy, no compression, 32 MiB messages)."""
    options = dict(proxy=None, compression=None, max_size=32 << 20, open_timeout=10, close_timeout=5)
    options.update(kwargs)
    return connect("ws://127.0.0.1:%d/ws" % port, **options)


class RawWebSocket:
    """A hand-made client: the handshake on a raw socket, then frames with demo_http's encoder/reader."""

    def __init__(self, port, key=RFC_KEY):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n%sSec-WebSocket-Key: %s\r\n\r\n"
                           % (HANDSHAKE, key)).encode("ascii"))
        self.status, self.headers, rest = read_head(self.sock)
        assert rest == b""
        self.rfile = self.sock.makefile("rb")

    def send(self, data):
        self.sock.sendall(data)

    def read_frame(self):
        """The next server frame: (fin, opcode, payload); it must be unmasked."""
        return demo_http.read_frame(self.rfile, masked=False)

    def at_eof(self):
        return self.rfile.read(1) == b""

    def close(self):
        self.rfile.close()
        self.sock.close()


class WebSocketHandshakeUnitTests(SynchronousTestCase):
    """websocket_accept and websocket_key: RFC 6455 section 4.2."""

    def test_accept_rfc_example(self):
        self.assertEqual(demo_http.websocket_accept(RFC_KEY), RFC_ACCEPT)

    def test_valid(self):
        for text in [
            HANDSHAKE + "Sec-WebSocket-Key: %s\r\n" % RFC_KEY,
            "Upgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key:  %s \r\n" % RFC_KEY,
            HANDSHAKE + "Sec-WebSocket-Key: %s\r\nContent-Length: 0\r\n" % RFC_KEY,
        ]:
            self.assertEqual(demo_http.websocket_key("HTTP/1.1", parse_headers(text)), RFC_KEY, text)

    def test_invalid(self):
        key = "Sec-WebSocket-Key: %s\r\n" % RFC_KEY
        short_key = base64.b64encode(b"x" * 15).decode("ascii")
        cases = [
            ("HTTP/1.1", HANDSHAKE, "Sec-WebSocket-Key"),
            ("HTTP/1.1", HANDSHAKE + "Sec-WebSocket-Key: %s\r\n" % short_key, "16 bytes"),
            ("HTTP/1.1", HANDSHAKE + "Sec-WebSocket-Key: not base64!\r\n", "16 bytes"),
            ("HTTP/1.1", HANDSHAKE + key + key, "one Sec-WebSocket-Key"),
            ("HTTP/1.1", HANDSHAKE.replace("13", "8") + key, "Sec-WebSocket-Version"),
            ("HTTP/1.1", HANDSHAKE.replace("Sec-WebSocket-Version: 13\r\n", "") + key, "Sec-WebSocket-Version"),
            ("HTTP/1.1", HANDSHAKE.replace("websocket", "h2c") + key, "Upgrade"),
            ("HTTP/1.1", HANDSHAKE.replace("Connection: Upgrade", "Connection: keep-alive") + key, "Connection"),
            ("HTTP/1.0", HANDSHAKE + key, "HTTP/1.1"),
            ("HTTP/1.1", HANDSHAKE + key + "Content-Length: 3\r\n", "no body"),
            ("HTTP/1.1", HANDSHAKE + key + "Transfer-Encoding: chunked\r\n", "no body"),
        ]
        for version, text, words in cases:
            error = self.assertRaises(demo_http.HttpError, demo_http.websocket_key, version, parse_headers(text))
            self.assertEqual(error.status, 400, text)
            self.assertIn(words, error.message, text)
            self.assertEqual(error.headers, (("Sec-WebSocket-Version", "13"),))


class WebSocketFrameUnitTests(SynchronousTestCase):
    """encode_frame, read_frame and mask_payload."""

    def test_rfc_examples(self):
        # RFC 6455 section 5.7: a single-frame unmasked and masked text message "Hello".
        unmasked = bytes([0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f])
        masked = bytes([0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58])
        self.assertEqual(demo_http.encode_frame(demo_http.OP_TEXT, b"Hello"), unmasked)
        self.assertEqual(demo_http.encode_frame(demo_http.OP_TEXT, b"Hello", mask=masked[2:6]), masked)
        self.assertEqual(demo_http.read_frame(io.BytesIO(masked)), (True, demo_http.OP_TEXT, b"Hello"))
        self.assertEqual(demo_http.read_frame(io.BytesIO(unmasked), masked=False),
                         (True, demo_http.OP_TEXT, b"Hello"))
        # Unfragmented ping with "Hello", and the 256-byte and 64 KiB binary length forms.
        self.assertEqual(demo_http.encode_frame(demo_http.OP_PING, b"Hello")[:2], b"\x89\x05")
        self.assertEqual(demo_http.encode_frame(demo_http.OP_BINARY, b"x" * 256)[:4], b"\x82\x7e\x01\x00")
        self.assertEqual(demo_http.encode_frame(demo_http.OP_BINARY, b"x" * 65536)[:10],
                         b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00")

    def test_round_trip_lengths(self):
        for length in (0, 1, 3, 4, 5, 125, 126, 127, 65535, 65536, 70001):
            payload = os.urandom(length)
            for fin in (True, False):
                frame = client_frame(demo_http.OP_BINARY, payload, fin=fin)
                self.assertEqual(demo_http.read_frame(io.BytesIO(frame)), (fin, demo_http.OP_BINARY, payload))

    def test_mask_is_an_involution(self):
        data = os.urandom(1001)
        mask = b"\x01\x02\x03\x04"
        self.assertEqual(demo_http.mask_payload(mask, demo_http.mask_payload(mask, data)), data)
        self.assertEqual(demo_http.mask_payload(mask, b"\x00" * 6), b"\x01\x02\x03\x04\x01\x02")

    def test_broken_frames(self):
        op = demo_http
        cases = [
            (op.encode_frame(op.OP_TEXT, b"hi"), op.CLOSE_PROTOCOL_ERROR),  # unmasked client frame
            (b"\xc1" + client_frame(op.OP_TEXT, b"hi")[1:], op.CLOSE_PROTOCOL_ERROR),  # RSV1
            (b"\x83" + client_frame(op.OP_TEXT, b"hi")[1:], op.CLOSE_PROTOCOL_ERROR),  # opcode 3
            (client_frame(op.OP_PING, b"x" * 126), op.CLOSE_PROTOCOL_ERROR),  # control frame too long
            (client_frame(op.OP_PING, b"x", fin=False), op.CLOSE_PROTOCOL_ERROR),  # fragmented control
            (b"\x82\xff" + b"\x80" + b"\x00" * 7, op.CLOSE_PROTOCOL_ERROR),  # 64-bit length, top bit set
            (client_frame(op.OP_BINARY, b"x" * 101), op.CLOSE_TOO_BIG),
        ]
        for frame, code in cases:
            error = self.assertRaises(op.WebSocketError, op.read_frame, io.BytesIO(frame), 100)
            self.assertEqual(error.code, code, frame[:12])
        # A ping may be larger than what is left of a message's budget.
        self.assertEqual(op.read_frame(io.BytesIO(client_frame(op.OP_PING, b"p" * 120)), 100)[2], b"p" * 120)

    def test_truncated(self):
        frame = client_frame(demo_http.OP_BINARY, b"x" * 300)
        for cut in (0, 1, 3, 7, 8, 100):
            self.assertRaises(demo_http.ClientGone, demo_http.read_frame, io.BytesIO(frame[:cut]))


class WebSocketSessionUnitTests(SynchronousTestCase):
    """WebSocket.messages() over in-memory files: reassembly, control frames, close and failure."""

    def run_session(self, *frames, max_message=demo_http.MAX_WEBSOCKET_MESSAGE):
        """Echo every message, as mock_app does; return (websocket, server frames)."""
        out = io.BytesIO()
        websocket = demo_http.WebSocket(io.BytesIO(b"".join(frames)), out, max_message=max_message)
        app._echo_messages(websocket)
        reader = io.BytesIO(out.getvalue())
        sent = []
        while reader.tell() < len(out.getvalue()):
            sent.append(demo_http.read_frame(reader, masked=False))
        return websocket, sent

    def test_fragments_reassembled_around_a_ping(self):
        op = demo_http
        websocket, sent = self.run_session(
            client_frame(op.OP_TEXT, "hé".encode("utf-8")[:2], fin=False),
            client_frame(op.OP_PING, b"are you there"),
            client_frame(op.OP_CONTINUATION, "hé".encode("utf-8")[2:], fin=False),
            client_frame(op.OP_PONG, b"unsolicited"),
            client_frame(op.OP_CONTINUATION, b"llo"),
            client_frame(op.OP_BINARY, b"\x00\xff"),
            client_frame(op.OP_CLOSE, struct.pack("!H", 1000) + b"done"),
        )
        self.assertEqual(sent, [
            (True, op.OP_PONG, b"are you there"),
            (True, op.OP_TEXT, "héllo".encode("utf-8")),
            (True, op.OP_BINARY, b"\x00\xff"),
            (True, op.OP_CLOSE, struct.pack("!H", 1000)),
        ])
        self.assertEqual((websocket.messages_in, websocket.close_received, websocket.close_sent), (2, 1000, 1000))

    def test_close_answers(self):
        op = demo_http
        for payload, answer in [
            (b"", b""),  # no status code: none back
            (struct.pack("!H", 4321) + b"reason", struct.pack("!H", 4321)),
            (struct.pack("!H", 1001), struct.pack("!H", 1001)),
            (b"\x03", struct.pack("!H", 1002)),  # one byte
            (struct.pack("!H", 1005), struct.pack("!H", 1002)),  # a code that is never sent
            (struct.pack("!H", 999), struct.pack("!H", 1002)),
            (struct.pack("!H", 1000) + b"\xff", struct.pack("!H", 1007)),  # reason not UTF-8
        ]:
            _, sent = self.run_session(client_frame(op.OP_CLOSE, payload), client_frame(op.OP_TEXT, b"late"))
            self.assertEqual(sent, [(True, op.OP_CLOSE, answer)], payload)

    def test_failures(self):
        op = demo_http
        cases = [
            ([client_frame(op.OP_CONTINUATION, b"x")], op.CLOSE_PROTOCOL_ERROR),
            ([client_frame(op.OP_TEXT, b"a", fin=False), client_frame(op.OP_TEXT, b"b")], op.CLOSE_PROTOCOL_ERROR),
            ([client_frame(op.OP_TEXT, b"\xff\xfe")], op.CLOSE_INVALID_DATA),
            ([client_frame(op.OP_BINARY, b"x" * 60, fin=False), client_frame(op.OP_CONTINUATION, b"y" * 41)],
             op.CLOSE_TOO_BIG),
        ]
        for frames, code in cases:
            websocket, sent = self.run_session(*frames, client_frame(op.OP_TEXT, b"never echoed"), max_message=100)
            self.assertEqual(len(sent), 1, sent)
            self.assertEqual(sent[0][1], op.OP_CLOSE)
            self.assertEqual(struct.unpack("!H", sent[0][2][:2])[0], code)
            self.assertEqual(websocket.close_sent, code)

    def test_connection_lost(self):
        frame = client_frame(demo_http.OP_TEXT, b"cut short")
        websocket, sent = self.run_session(client_frame(demo_http.OP_TEXT, b"whole"), frame[:-3])
        self.assertEqual(sent, [(True, demo_http.OP_TEXT, b"whole")])
        self.assertTrue(websocket.lost)
        self.assertIn("connection lost", websocket.summary())

    def test_going_away_then_peer_close(self):
        op = demo_http
        out = io.BytesIO()
        websocket = demo_http.WebSocket(io.BytesIO(client_frame(op.OP_TEXT, b"dropped")
                                                   + client_frame(op.OP_CLOSE, struct.pack("!H", 1001))), out)
        websocket.going_away()
        self.assertFalse(websocket.send(op.OP_TEXT, b"after close"))
        app._echo_messages(websocket)
        frames = io.BytesIO(out.getvalue())
        self.assertEqual(demo_http.read_frame(frames, masked=False)[:2], (True, op.OP_CLOSE))
        self.assertEqual(frames.read(), b"")  # nothing after our close frame
        self.assertEqual((websocket.close_sent, websocket.close_received), (1001, 1001))


class WebSocketEndpointTests(SynchronousTestCase):
    """GET /ws on a running app."""

    def setUp(self):
        self.app = start_app(self, IDLE="1h")

    def raw(self, **kwargs):
        client = RawWebSocket(self.app.port, **kwargs)
        self.addCleanup(client.close)
        return client

    def wait_log(self, text, timeout=10):
        end = time.monotonic() + timeout
        while text not in self.app.log() and time.monotonic() < end:
            time.sleep(0.02)
        self.assertIn(text, self.app.log())
        return self.app.log()

    def test_handshake_rfc_key(self):
        client = self.raw()
        self.assertEqual(client.status, "HTTP/1.1 101 Switching Protocols")
        self.assertEqual(client.headers["upgrade"].lower(), "websocket")
        self.assertEqual(client.headers["connection"].lower(), "upgrade")
        self.assertEqual(client.headers["sec-websocket-accept"], RFC_ACCEPT)
        self.assertNotIn("content-length", client.headers)
        # Masked frame in, unmasked frame out (read_frame with masked=False rejects a masked one).
        client.send(client_frame(demo_http.OP_TEXT, b"Hello"))
        self.assertEqual(client.read_frame(), (True, demo_http.OP_TEXT, b"Hello"))

    def test_echo_text_and_binary(self):
        with ws_connect(self.app.port) as ws:
            ws.send("hello, wörld")
            self.assertEqual(ws.recv(timeout=10), "hello, wörld")
            ws.send(b"\x00\x01\xfe\xff")
            self.assertEqual(ws.recv(timeout=10), b"\x00\x01\xfe\xff")
            ws.send("")
            self.assertEqual(ws.recv(timeout=10), "")

    def test_echo_one_mebibyte(self):
        binary = os.urandom(1 << 20)
        text = "x€" * (1 << 18)
        with ws_connect(self.app.port) as ws:
            ws.send(binary)
            self.assertEqual(ws.recv(timeout=20), binary)
            ws.send(text)
            self.assertEqual(ws.recv(timeout=20), text)

    def test_sixteen_mebibytes_and_one_more_byte(self):
        largest = os.urandom(16 << 20)
        with ws_connect(self.app.port) as ws:
            ws.send(largest)
            self.assertEqual(ws.recv(timeout=30), largest)
            ws.send(largest + b"!")
            self.assertRaises(ConnectionClosed, ws.recv, timeout=30)
            self.assertEqual(ws.protocol.close_rcvd.code, 1009)

    def test_fragmented_message(self):
        pieces = [os.urandom(size) for size in (1, 70000, 0, 5, 200000)]
        with ws_connect(self.app.port) as ws:
            ws.send(iter(pieces))
            self.assertEqual(ws.recv(timeout=10), b"".join(pieces))
            ws.send(["frag", "mented ", "téxt"])
            self.assertEqual(ws.recv(timeout=10), "fragmented téxt")

    def test_ping_pong(self):
        with ws_connect(self.app.port, ping_interval=None) as ws:
            pong = ws.ping(b"same payload")  # set when the pong with that payload arrives
            self.assertTrue(pong.wait(10))
        client = self.raw()
        client.send(client_frame(demo_http.OP_PING, b"\x00raw\xff"))
        self.assertEqual(client.read_frame(), (True, demo_http.OP_PONG, b"\x00raw\xff"))

    def test_close_handshake(self):
        with ws_connect(self.app.port) as ws:
            ws.send("before")
            self.assertEqual(ws.recv(timeout=10), "before")
            ws.close(4001, "bye")
            self.assertEqual(ws.protocol.close_rcvd.code, 4001)
            self.assertEqual(ws.protocol.close_sent.code, 4001)
        client = self.raw()
        client.send(client_frame(demo_http.OP_CLOSE, struct.pack("!H", 1000)))
        self.assertEqual(client.read_frame(), (True, demo_http.OP_CLOSE, struct.pack("!H", 1000)))
        self.assertTrue(client.at_eof())  # the server closes the connection
        log = self.wait_log("close in=1000 out=1000")
        self.assertIn("close in=4001 out=4001", log)
        self.assertIn("GET /ws 101 ", log)

    def test_unmasked_client_frame_fails_with_1002(self):
        client = self.raw()
        client.send(demo_http.encode_frame(demo_http.OP_TEXT, b"not masked"))
        fin, opcode, payload = client.read_frame()
        self.assertEqual((opcode, struct.unpack("!H", payload[:2])[0]), (demo_http.OP_CLOSE, 1002))
        self.assertTrue(client.at_eof())

    def test_bad_handshakes(self):
        key = "Sec-WebSocket-Key: %s\r\n" % RFC_KEY
        for headers, words in [
            (HANDSHAKE, "Sec-WebSocket-Key"),  # missing key
            (HANDSHAKE.replace("13", "8") + key, "Sec-WebSocket-Version"),  # wrong version
            (HANDSHAKE.replace("Upgrade: websocket\r\n", "") + key, "Upgrade"),
            ("", "Upgrade"),  # a plain GET
        ]:
            sock = socket.create_connection(("127.0.0.1", self.app.port), timeout=10)
            self.addCleanup(sock.close)
            sock.sendall(("GET /ws HTTP/1.1\r\nHost: x\r\n%s\r\n" % headers).encode("ascii"))
            status, response_headers, body = read_head(sock)
            while len(body) < int(response_headers["content-length"]):
                body += sock.recv(4096)
            self.assertEqual(status, "HTTP/1.1 400 Bad Request", headers)
            self.assertEqual(response_headers["content-type"], "application/json")
            self.assertEqual(response_headers["sec-websocket-version"], "13")
            self.assertEqual(response_headers["connection"], "close")
            self.assertIn(words, json.loads(body)["error"], headers)
            self.assertEqual(sock.recv(1), b"")  # and the connection is closed
        self.assertIn("GET /ws 400 ", self.wait_log("GET /ws 400 "))
        response, raw = self.app.request("POST", "/ws", body=b"")
        self.assertEqual((response.status, response.getheader("Allow")), (405, "GET"))

    def test_client_vanishing_is_quiet(self):
        for cut in (b"", client_frame(demo_http.OP_BINARY, b"x" * 1000)[:300]):
            client = self.raw()
            client.send(cut)
            time.sleep(0.1)
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
        log = self.wait_log("connection lost")
        end = time.monotonic() + 5
        while log.count("connection lost") < 2 and time.monotonic() < end:
            time.sleep(0.02)
            log = self.app.log()
        self.assertEqual(log.count("connection lost"), 2, log)
        for word in ("Traceback", "internal error", "unexpected error"):
            self.assertNotIn(word, log)
        status, _ = self.app.get_json("/status")
        self.assertEqual(status, 200)

    def test_many_sockets_at_once(self):
        with contextlib.ExitStack() as stack:
            clients = [stack.enter_context(ws_connect(self.app.port)) for _ in range(20)]
            for index, ws in enumerate(clients):
                ws.send("client %d" % index)
            for index, ws in enumerate(clients):
                self.assertEqual(ws.recv(timeout=10), "client %d" % index)


class WebSocketShutdownTests(SynchronousTestCase):
    """Open WebSockets are requests in flight: the idle stop waits for them, a signal says going away."""

    def test_sigterm_sends_going_away(self):
        process = start_app(self, IDLE="1h")
        with ws_connect(process.port) as ws:
            ws.send("ready?")
            self.assertEqual(ws.recv(timeout=10), "ready?")
            started = time.monotonic()
            process.proc.send_signal(signal.SIGTERM)
            self.assertRaises(ConnectionClosed, ws.recv, timeout=10)
            self.assertEqual(ws.protocol.close_rcvd.code, 1001)
        self.assertEqual(process.wait_exit(10), 0)
        self.assertLess(time.monotonic() - started, 1.5)  # the close handshake ends the drain early
        self.assertIn("all requests finished", process.log())

    def test_sigterm_bounds_a_peer_that_does_not_answer(self):
        process = start_app(self, IDLE="1h")
        client = RawWebSocket(process.port)
        self.addCleanup(client.close)
        started = time.monotonic()
        process.proc.send_signal(signal.SIGTERM)
        fin, opcode, payload = client.read_frame()
        self.assertEqual((opcode, struct.unpack("!H", payload[:2])[0]), (demo_http.OP_CLOSE, 1001))
        self.assertEqual(process.wait_exit(10), 0)  # no close frame back: the 2 s drain bound
        self.assertLess(time.monotonic() - started, 4.0)

    def test_idle_stop_waits_for_open_websocket(self):
        process = start_app(self, IDLE="1s")
        with ws_connect(process.port) as ws:
            end = time.monotonic() + 10
            while can_connect(process.port) and time.monotonic() < end:
                time.sleep(0.05)
            self.assertFalse(can_connect(process.port))  # idle: no longer accepting ...
            time.sleep(0.5)
            ws.send("still here")  # ... but the open socket still works
            self.assertEqual(ws.recv(timeout=10), "still here")
            self.assertIsNone(process.proc.poll())
            self.assertIn("1 request(s) in flight", process.log())
        self.assertEqual(process.wait_exit(10), 0)
        self.assertEqual(ws.protocol.close_rcvd.code, 1000)


# -- Expect: 100-continue ----------------------------------------------------------


class ExpectContinueTests(SynchronousTestCase):
    """The interim 100 Continue arrives before the body is read, and only when it will be."""

    def setUp(self):
        self.app = start_app(self, IDLE="1h")

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.app.port), timeout=10)
        self.addCleanup(sock.close)
        return sock

    def read_response(self, sock):
        """(status line, headers, body) of a Content-Length response."""
        status, headers, body = read_head(sock)
        while len(body) < int(headers["content-length"]):
            body += sock.recv(65536)
        return status, headers, body

    def test_content_length(self):
        data = os.urandom(300000)
        sock = self.connect()
        for _ in range(2):  # and the connection stays usable
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(data))
            self.assertEqual(read_head(sock), ("HTTP/1.1 100 Continue", {}, b""))
            sock.sendall(data)
            status, headers, body = self.read_response(sock)
            self.assertEqual(status, "HTTP/1.1 200 OK")
            self.assertEqual(json.loads(body)["sha256"], hashlib.sha256(data).hexdigest())
            self.assertNotIn("connection", headers)

    def test_chunked(self):
        sock = self.connect()
        sock.sendall(b"PUT /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        self.assertEqual(read_head(sock)[0], "HTTP/1.1 100 Continue")
        sock.sendall(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        status, _, body = self.read_response(sock)
        self.assertEqual(status, "HTTP/1.1 200 OK")
        self.assertEqual(json.loads(body)["sha256"], hashlib.sha256(b"hello world").hexdigest())

    def test_no_interim_answer_when_the_body_is_not_read(self):
        for request in [
            b"POST /nope HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
            b"GET /status HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: x\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
            b"POST /echo HTTP/1.0\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
        ]:
            sock = self.connect()
            sock.sendall(request)
            status, headers, body = self.read_response(sock)
            self.assertNotIn("100", status, request)
            self.assertNotIn(b"100 Continue", body, request)


# -- tests.plainapp -------------------------------------------------------------------


class PlainAppTests(SynchronousTestCase):
    """The plain upstream: in-process with serve(), and as a program."""

    def start(self):
        server = plainapp.serve(0)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return server.server_address[1]

    def test_get_keep_alive_and_echo(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.start(), timeout=10)
        self.addCleanup(conn.close)
        for _ in range(3):
            conn.request("GET", "/")
            response = conn.getresponse()
            self.assertEqual((response.status, response.read()), (200, plainapp.BODY))
        sock = conn.sock
        data = os.urandom(200000)
        conn.request("POST", "/echo", body=data)
        response = conn.getresponse()
        self.assertEqual(json.loads(response.read()),
                         {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        self.assertIs(conn.sock, sock)
        conn.request("GET", "/missing")
        response = conn.getresponse()
        self.assertEqual(response.status, 404)
        response.read()

    def test_no_nodelay_and_two_sends(self):
        # The handler's socket keeps Nagle on and its wfile is unbuffered (one send per write).
        seen = {}

        class Probe(plainapp.PlainHandler):
            def setup(self):
                super().setup()
                seen["nodelay"] = self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                seen["wbufsize"] = self.wbufsize

        server = plainapp.ThreadingHTTPServer(("127.0.0.1", 0), Probe)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        self.addCleanup(conn.close)
        conn.request("GET", "/")
        conn.getresponse().read()
        self.assertEqual(seen, {"nodelay": 0, "wbufsize": 0})

    def test_program(self):
        for args, cwd in [([sys.executable, "-m", "tests.plainapp"], Path(__file__).resolve().parent.parent),
                          ([sys.executable, "plainapp.py"], PLAINAPP_PATH.parent)]:
            port = free_port()
            proc = subprocess.Popen(args + [str(port)], cwd=str(cwd), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self.addCleanup(lambda p=proc: (p.poll() is None and p.kill(), p.wait(), p.stderr.close()))
            end = time.monotonic() + 10
            while not can_connect(port) and proc.poll() is None and time.monotonic() < end:
                time.sleep(0.02)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/")
            self.assertEqual(conn.getresponse().read(), plainapp.BODY)
            conn.close()
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(10), 0, proc.stderr.read())
