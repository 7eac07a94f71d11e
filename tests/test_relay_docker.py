# -*- test-case-name: tests.test_relay_docker -*-
"""
The HTTP/1.1 relay end to end: C{twistd wakeproxy} as a process, real containers on the
real engine, real clients (the C{websockets} library, C{curl}, C{requests}, raw sockets) over loopback.

Covered: a WebSocket that wakes a stopped instance and echoes 1,000 messages; tunnel backpressure; idle
tunnels (ping-only lets the instance sleep with a close 1001, data frames or C{idle-tunnel open} keep it up,
a closed tunnel ends, a stop sends close 1001); 200 MiB uploads (Expect: 100-continue, chunked, to a stopped
and to a running instance) with wakeproxy's RSS flat and no temp file, and the 100 coming from the woken
app; C{--max-body}; pipelined requests for different instances; the head, body, keep-alive and upstream
timeouts; the Nagle/delayed-ACK stall of a plain http.server upstream (tests/plainapp.py); keep-alive reuse
on both sides.

Every test names its own owner label (C{--owner-label}), so its wakeproxy never sees, wakes or stops
containers of other tests or sessions on the same engine.
"""

import base64
import concurrent.futures
import hashlib
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import tempfile
import threading
import time
from typing import Optional

import pytest
import requests
from twisted.trial.unittest import SynchronousTestCase
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.dockerapp import Instances
from tests.support import MOCK_IMAGE, Twistd, check_problem, free_port, start_wakeproxy, remove_containers, unique_name

pytestmark = pytest.mark.docker

PLAINAPP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plainapp.py")
MIB = 1024 * 1024
UPLOAD_SIZE = 200 * MIB
#: how much wakeproxy's RSS may grow while 200 MiB stream through it
RSS_GROWTH_LIMIT_KIB = 20 * 1024


def _cookie(name: str) -> dict:
    return {"Cookie": "instance={}".format(name)}


def _owner() -> str:
    return "wakeproxy.test-owner={}".format(unique_name("relay"))


class _RelayCase(SynchronousTestCase):
    """
    One owner label per test; C{self.wakeproxy(*args)} starts wakeproxy for it (after the test's containers
    exist) and checks its log for tracebacks when the test ends.
    """

    def setUp(self):
        self.owner = _owner()
        self.instances = Instances(owner=self.owner)
        self.addCleanup(self.instances.cleanup)
        self.session = requests.Session()
        self.addCleanup(self.session.close)

    def wakeproxy(self, *args, env: Optional[dict] = None, owner: Optional[str] = None) -> Twistd:
        return start_wakeproxy(self, "--owner-label", owner or self.owner, *args, env=env)

    def get(self, server: Twistd, name: str, path: str = "/", **kw) -> requests.Response:
        headers = dict(_cookie(name), **kw.pop("headers", {}))
        return self.session.get(server.proxy_url + path, headers=headers, timeout=kw.pop("timeout", 30), **kw)

    def assertProblemBytes(self, status: int, headers: dict, body: bytes, code: int) -> dict:
        self.assertEqual(status, code, body[:500])
        return check_problem(self, code, headers.get("content-type"), json.loads(body))


# raw HTTP over a socket


class _Raw:
    """Reads HTTP/1.1 responses off a socket, to the byte (Content-Length, chunked, or until close)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        data = self.sock.recv(256 * 1024)
        if not data:
            raise EOFError("connection closed with {!r} unread".format(self.buf[:200]))
        self.buf += data

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            self._fill()
        end = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:end], self.buf[end:]
        return out

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self):
        """C{(status, headers with lower-cased names, body)} of the next response (interim ones included)."""
        head = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        headers = {}
        for line in head[1:]:
            if line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        if 100 <= status < 200 or status in (204, 304):
            return status, headers, b""
        if "content-length" in headers:
            return status, headers, self._exactly(int(headers["content-length"]))
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self._until(b"\r\n").split(b";")[0].strip(), 16)
                if size == 0:
                    while self._until(b"\r\n") != b"\r\n":
                        pass
                    return status, headers, body
                body += self._exactly(size)
                self._exactly(2)
        while True:
            try:
                self._fill()
            except EOFError:
                body, self.buf = self.buf, b""
                return status, headers, body

    def ends(self) -> bool:
        """Whether the connection ends (EOF or reset) with nothing more to read."""
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return not self.buf
        return not data and not self.buf


def _request(method: str, path: str, name: str, body: bytes = b"", extra: str = "") -> bytes:
    head = "{} {} HTTP/1.1\r\nHost: relay.test\r\nCookie: instance={}\r\n{}".format(method, path, name, extra)
    framed = "content-length:" in extra.lower() or "transfer-encoding:" in extra.lower()
    if (body or method in ("POST", "PUT")) and not framed:
        head += "Content-Length: {}\r\n".format(len(body))
    return head.encode("latin-1") + b"\r\n" + body


# WebSocket clients


def _ws(server: Twistd, name: str, **kw):
    return connect("ws://127.0.0.1:{}/ws".format(server.proxy_port), additional_headers=_cookie(name),
                   open_timeout=30, close_timeout=5, ping_interval=None, compression=None, proxy=None,
                   max_size=None, **kw)


def _ws_handshake(sock: socket.socket, name: str) -> "_Raw":
    """A WebSocket handshake for /ws on a raw socket; return its reader (positioned after the 101)."""
    sock.sendall("GET /ws HTTP/1.1\r\nHost: relay.test\r\nCookie: instance={}\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n".format(
                     name, base64.b64encode(os.urandom(16)).decode()).encode())
    raw = _Raw(sock)
    status, _, _ = raw.response()
    if status != 101:
        raise AssertionError("no 101 for the WebSocket handshake: {}".format(status))
    return raw


def _client_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """One final frame from a client, masked with a zero key (so the payload bytes stay as they are)."""
    n = len(payload)
    if n < 126:
        size = bytes((0x80 | n,))
    elif n < 65536:
        size = bytes((0x80 | 126,)) + struct.pack("!H", n)
    else:
        size = bytes((0x80 | 127,)) + struct.pack("!Q", n)
    return bytes((0x80 | opcode,)) + size + b"\0\0\0\0" + payload


def _server_frame(raw: "_Raw") -> bytes:
    """The payload of the next (unmasked, final) frame from the server."""
    b0, b1 = raw._exactly(2)
    size = b1 & 0x7F
    if size == 126:
        size = struct.unpack("!H", raw._exactly(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", raw._exactly(8))[0]
    return raw._exactly(size)


class _Tunnel:
    """What one tunnel thread saw: pongs or echoes, whether (and when after the 101) it was closed, the code."""

    def __init__(self):
        self.opened = None
        self.closed_after: Optional[float] = None
        self.close_code: Optional[int] = None
        self.pongs = 0
        self.echoes = 0


def _ping_only(server: Twistd, name: str, hold: float) -> _Tunnel:
    """A tunnel that sends only pings (every 0.5 s) for C{hold} seconds, or until the other side closes it."""
    seen = _Tunnel()
    with _ws(server, name) as ws:
        seen.opened = time.monotonic()
        try:
            while time.monotonic() - seen.opened < hold:
                if ws.ping().wait(2):
                    seen.pongs += 1
                time.sleep(0.5)
        except ConnectionClosed:
            seen.closed_after = time.monotonic() - seen.opened
            seen.close_code = ws.close_code
    return seen


def _data_only(server: Twistd, name: str, hold: float) -> _Tunnel:
    """A tunnel that sends a text message every 0.5 s (and reads its echo) for C{hold} seconds."""
    seen = _Tunnel()
    with _ws(server, name) as ws:
        seen.opened = time.monotonic()
        try:
            while time.monotonic() - seen.opened < hold:
                message = "tick {}".format(seen.echoes)
                ws.send(message)
                if ws.recv(timeout=5) == message:
                    seen.echoes += 1
                time.sleep(0.5)
        except ConnectionClosed:
            seen.closed_after = time.monotonic() - seen.opened
            seen.close_code = ws.close_code
    return seen


# process and socket facts


def _rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open("/proc/{}/status".format(pid)) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no {} for pid {}".format(field, pid))


class _RssPeak:
    """Samples a process's VmRSS every 20 ms while in the C{with} block; C{peak} in KiB."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak = _rss_kib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_kib(self.pid))

    def __enter__(self) -> "_RssPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_kib(self.pid))


def _local_ports(pid: int, dport: int) -> set:
    """Local ports of C{pid}'s established TCP connections to 127.0.0.1:C{dport} (from C{ss})."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", "( dport = :{} )".format(dport)],
                         capture_output=True, text=True, check=True).stdout
    marker = "pid={},".format(pid)
    return {line.split()[2].rsplit(":", 1)[1] for line in out.splitlines() if marker in line}


# 1. WebSocket across a wake


class WebSocketWakeTests(_RelayCase):
    def test_websocket_wakes_a_stopped_instance_and_echoes_1000_messages(self):
        name = self.instances.create(env={"STARTUP_DELAY": "0.5"})
        server = self.wakeproxy()
        sizes = (1, 125, 126, 127, 1000, 65535, 65536, 100000)  # every payload-length encoding
        began = time.monotonic()
        with _ws(server, name) as ws:
            opened = time.monotonic() - began
            self.assertEqual(ws.response.status_code, 101)
            self.assertEqual(ws.response.headers.get("X-Wakeproxy-Woke"), "1")
            self.assertIn("total;dur=", ws.response.headers.get("Server-Timing", ""))
            echo_began = time.monotonic()
            for i in range(1000):
                if i % 2:
                    message = os.urandom(sizes[i % len(sizes)])
                else:
                    message = "message {} ".format(i) * (1 + i % 40) + "\u00e9\u263a"
                ws.send(message)
                self.assertEqual(ws.recv(timeout=10), message, i)
            echoed = time.monotonic() - echo_began
        self.assertEqual(ws.close_code, 1000)  # mock_app answered our close frame through the tunnel
        self.assertGreaterEqual(opened, 0.5)  # the handshake was held across the app's STARTUP_DELAY
        self.assertEqual(self.instances.starts(name), 1)
        self.assertEqual(self.instances.state(name), "running")
        print("websocket: 101 after {:.0f} ms (wake), 1000 echoes in {:.0f} ms".format(opened * 1000, echoed * 1000))


    def test_tunnel_backpressure_both_ways_keeps_memory_flat(self):
        """
        64 MiB of 1 MiB messages to an echo whose reader reads nothing for 2 s: every buffer on the way fills,
        the sender blocks, wakeproxy's RSS stays flat; then everything arrives intact. (A raw-socket client:
        the websockets sync client holds one lock while a send blocks, so it cannot read meanwhile.)
        """
        name = self.instances.create(start=True)
        server = self.wakeproxy()
        self.assertEqual(self.get(server, name).status_code, 200)
        pid = server.process.pid
        baseline = _rss_kib(pid)
        messages = [os.urandom(MIB) for _ in range(4)]
        with socket.create_connection(("127.0.0.1", server.proxy_port)) as s, _RssPeak(pid) as rss:
            s.settimeout(30)
            raw = _ws_handshake(s, name)
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                sending = pool.submit(lambda: [s.sendall(_client_frame(messages[i % 4])) for i in range(64)])
                time.sleep(2)  # nobody reads
                blocked = not sending.done()
                received = [_server_frame(raw) for _ in range(64)]
                sending.result(timeout=30)
            s.sendall(_client_frame(b"\x03\xe8", opcode=0x8))
            self.assertEqual(_server_frame(raw), b"\x03\xe8")  # close 1000 answered
        self.assertTrue(blocked, "64 MiB went through a tunnel whose reader was not reading")
        for i, message in enumerate(received):
            self.assertEqual(message, messages[i % 4], i)
        growth = rss.peak - baseline
        print("tunnel backpressure: 64 MiB echoed to a stalled reader, wakeproxy RSS +{:.1f} MiB".format(
            growth / 1024))
        self.assertLess(growth, RSS_GROWTH_LIMIT_KIB)


# 2. idle tunnels


class IdleTunnelTests(_RelayCase):
    """Idle timeout 3 s (label) on every instance here; tunnels held for 9 s, three times that."""

    IDLE = {"wakeproxy.idle-timeout": "3s"}
    HOLD = 9.0

    def test_ping_only_tunnel_lets_the_instance_sleep_with_close_1001(self):
        name = self.instances.create(labels=self.IDLE)
        server = self.wakeproxy()
        seen = _ping_only(server, name, self.HOLD)
        self.assertGreater(seen.pongs, 3)  # the pings went through the tunnel and were answered
        self.assertEqual(seen.close_code, 1001, vars(seen))
        self.assertGreater(seen.closed_after, 2.5, "closed before its idle timeout")
        self.assertLess(seen.closed_after, 7.0)
        self.instances.wait_state(name, "exited", timeout=5)
        self.assertEqual(self.instances.starts(name), 1)
        print("ping-only tunnel: close 1001 {:.1f}s after its 101 ({} pongs)".format(seen.closed_after, seen.pongs))

    def test_data_tunnel_and_open_tunnels_keep_the_instance_awake(self):
        """
        A tunnel with a data message every 0.5 s (idle-tunnel data, the default), and ping-only tunnels under
        idle-tunnel open (label; flag, on a second wakeproxy) keep their instances running for 3x the idle
        timeout.
        """
        talker = self.instances.create(labels=self.IDLE)
        labelled = self.instances.create(labels=dict(self.IDLE, **{"wakeproxy.idle-tunnel": "open"}))
        flag_owner = _owner()
        flagged_instances = Instances(owner=flag_owner)
        self.addCleanup(flagged_instances.cleanup)
        flagged = flagged_instances.create(labels=self.IDLE)
        server = self.wakeproxy()
        open_server = self.wakeproxy("--idle-tunnel", "open", owner=flag_owner)
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            talk_f = pool.submit(_data_only, server, talker, self.HOLD)
            label_f = pool.submit(_ping_only, server, labelled, self.HOLD)
            flag_f = pool.submit(_ping_only, open_server, flagged, self.HOLD)
            time.sleep(self.HOLD - 1.5)  # every tunnel has been open for > 2x the idle timeout, and still is
            states = {n: self.instances.state(n) for n in (talker, labelled)}
            states[flagged] = flagged_instances.state(flagged)
            talk, label, flag = (f.result(timeout=60) for f in (talk_f, label_f, flag_f))
        for name, seen in ((talker, talk), (labelled, label), (flagged, flag)):
            self.assertIsNone(seen.closed_after, (name, vars(seen)))
            self.assertEqual(states[name], "running", name)
        self.assertGreater(talk.echoes, 12)
        self.assertGreater(min(label.pongs, flag.pongs), 12)
        self.assertEqual((self.instances.starts(talker), self.instances.starts(labelled)), (1, 1))

    def test_a_closed_tunnel_ends_and_its_instance_sleeps(self):
        """After the close handshake both sockets go, and an idle-tunnel open instance sleeps on time."""
        labelled = self.instances.create(labels=dict(self.IDLE, **{"wakeproxy.idle-tunnel": "open"}))
        talker = self.instances.create(labels=self.IDLE, start=True)
        server = self.wakeproxy()
        pid = server.process.pid

        def echo_once(name):
            with _ws(server, name) as ws:
                ws.send("hello")
                self.assertEqual(ws.recv(timeout=5), "hello")
            self.assertEqual(ws.close_code, 1000)

        echo_once(talker)  # whatever wakeproxy opens once (pools, Docker connections) is open now
        time.sleep(0.3)
        fds = len(os.listdir("/proc/{}/fd".format(pid)))
        for _ in range(10):
            echo_once(talker)
        time.sleep(0.3)
        leaked = len(os.listdir("/proc/{}/fd".format(pid))) - fds
        echo_once(labelled)
        closed = time.monotonic()
        self.assertLessEqual(leaked, 2, "wakeproxy holds {} more fds after 10 closed tunnels".format(leaked))
        self.instances.wait_state(labelled, "exited", timeout=6)
        self.instances.wait_state(talker, "exited", timeout=3)
        print("closed tunnels: instances slept {:.1f}s after the close".format(time.monotonic() - closed))

    def test_stopping_an_instance_sends_its_websocket_clients_close_1001(self):
        """The same close as for an idle stop (Waker.before_sleep), reached through the deploy API's stop."""
        name = self.instances.create()
        server = self.wakeproxy("--no-auth")
        with _ws(server, name) as ws:
            ws.send("before")
            self.assertEqual(ws.recv(timeout=5), "before")
            began = time.monotonic()
            r = requests.post(server.api_url + "/deploy/{}/stop".format(name), timeout=30)
            self.assertEqual(r.status_code, 200, r.text)
            with self.assertRaises(ConnectionClosed):
                ws.recv(timeout=10)
            closed_after = time.monotonic() - began
        self.assertEqual((ws.close_code, ws.close_reason), (1001, "going away"))
        self.assertLess(closed_after, 10)
        self.instances.wait_state(name, "exited", timeout=10)


# 3. uploads


class UploadTests(_RelayCase):
    """200 MiB through wakeproxy: sha256 checked, RSS growth under 20 MiB, nothing spooled to TMPDIR."""

    @classmethod
    def setUpClass(cls):
        cls.scratch = tempfile.mkdtemp(prefix="wakeproxy-upload-")
        cls.upload = os.path.join(cls.scratch, "upload.bin")
        digest = hashlib.sha256()
        block = os.urandom(MIB)
        with open(cls.upload, "wb") as f:
            for i in range(UPLOAD_SIZE // MIB):
                piece = block[i:] + block[:i]  # no two MiB alike
                digest.update(piece)
                f.write(piece)
        cls.sha256 = digest.hexdigest()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.scratch, ignore_errors=True)

    def _upload_proxy(self, *args) -> tuple:
        tmpdir = tempfile.mkdtemp(prefix="wakeproxy-tmpdir-")
        self.addCleanup(shutil.rmtree, tmpdir, True)
        server = self.wakeproxy(*args, env={"TMPDIR": tmpdir, "TMP": tmpdir, "TEMP": tmpdir})
        return server, tmpdir

    def curl(self, server: Twistd, name: str, chunked: bool = False, expect: bool = True) -> dict:
        """PUT the upload to /echo with curl (-T); check the echo; return timing and what curl saw."""
        cmd = ["curl", "-sS", "-v", "--max-time", "120", "-b", "instance={}".format(name), "-w", "\n%{http_code}"]
        if chunked:
            cmd += ["-H", "Transfer-Encoding: chunked", "-T", "-"]
        else:
            cmd += ["-T", self.upload]
        if not expect:
            cmd += ["-H", "Expect:"]
        cmd.append(server.proxy_url + "/echo")
        began = time.monotonic()
        with open(self.upload, "rb") as stdin:
            done = subprocess.run(cmd, stdin=stdin if chunked else subprocess.DEVNULL, capture_output=True,
                                  timeout=150)
        took = time.monotonic() - began
        body, _, status = done.stdout.decode().rpartition("\n")
        trace = done.stderr.decode("utf-8", "replace")
        self.assertEqual((done.returncode, status), (0, "200"), trace[-3000:])
        doc = json.loads(body)
        self.assertEqual((doc["length"], doc["sha256"]), (UPLOAD_SIZE, self.sha256))
        sent = [line[2:].lower() for line in trace.splitlines() if line.startswith("> ")]
        got = [line[2:].lower() for line in trace.splitlines() if line.startswith("< ")]
        self.assertEqual("expect: 100-continue" in sent, expect, sent)
        self.assertEqual("transfer-encoding: chunked" in sent, chunked, sent)
        self.assertEqual(doc["headers"].get("Transfer-Encoding", "").lower(), "chunked" if chunked else "")
        return {"took": took, "sent": sent, "got": got, "mib_s": UPLOAD_SIZE / MIB / took}

    def _check_flat(self, server: Twistd, tmpdir: str, baseline: int, rss: _RssPeak, label: str) -> None:
        growth = rss.peak - baseline
        print("{}: wakeproxy RSS {:.1f} MiB before, peak {:.1f} MiB (+{:.1f} MiB)".format(
            label, baseline / 1024, rss.peak / 1024, growth / 1024))
        self.assertLess(growth, RSS_GROWTH_LIMIT_KIB, "{}: RSS grew by {} KiB".format(label, growth))
        self.assertEqual(os.listdir(tmpdir), [])

    def test_expect_upload_to_stopped_and_running_instance(self):
        asleep = self.instances.create(env={"STARTUP_DELAY": "1.5"})
        awake = self.instances.create(start=True)
        server, tmpdir = self._upload_proxy()
        self.assertEqual(self.get(server, awake).status_code, 200)
        pid = server.process.pid
        baseline = _rss_kib(pid)
        with _RssPeak(pid) as rss:
            cold = self.curl(server, asleep)
            warm = self.curl(server, awake)
        # curl gives up waiting for a 100 after 1 s and sends; the held request's body waited in the
        # socket buffers until the instance was up, then streamed
        self.assertIn("x-wakeproxy-woke: 1", cold["got"])
        self.assertGreater(cold["took"], 1.5)
        self.assertIn("http/1.1 100 continue", warm["got"])  # mock_app's own 100, relayed
        self.assertNotIn("x-wakeproxy-woke: 1", warm["got"])
        self.assertEqual(self.instances.starts(asleep), 1)
        self._check_flat(server, tmpdir, baseline, rss, "curl -T 200 MiB")
        print("curl -T 200 MiB: to a stopped instance {:.2f}s, to a running one {:.2f}s ({:.0f} MiB/s)".format(
            cold["took"], warm["took"], warm["mib_s"]))

    def test_chunked_upload_to_running_and_stopped_instance(self):
        awake = self.instances.create(start=True)
        asleep = self.instances.create(env={"STARTUP_DELAY": "1.0"})
        server, tmpdir = self._upload_proxy()
        self.assertEqual(self.get(server, awake).status_code, 200)
        pid = server.process.pid
        baseline = _rss_kib(pid)
        with _RssPeak(pid) as rss:
            warm = self.curl(server, awake, chunked=True)
            # no Expect: curl pushes the body at once; wakeproxy must leave it in the socket while held
            cold = self.curl(server, asleep, chunked=True, expect=False)
        self.assertIn("x-wakeproxy-woke: 1", cold["got"])
        self.assertEqual(self.instances.starts(asleep), 1)
        self._check_flat(server, tmpdir, baseline, rss, "chunked 200 MiB")
        print("chunked 200 MiB: to a running instance {:.2f}s ({:.0f} MiB/s), to a stopped one (no Expect) "
              "{:.2f}s".format(warm["took"], warm["mib_s"], cold["took"]))

    def test_expect_100_comes_from_the_woken_upstream(self):
        """Nothing asks for the body of a held request: the 100 is the upstream's, after the wake."""
        name = self.instances.create(env={"STARTUP_DELAY": "1.0"})
        server = self.wakeproxy()
        body = os.urandom(3 * MIB)
        with socket.create_connection(("127.0.0.1", server.proxy_port)) as s:
            s.settimeout(30)
            began = time.monotonic()
            s.sendall(_request("POST", "/echo", name, extra="Expect: 100-continue\r\nContent-Length: {}\r\n".format(
                len(body))))
            raw = _Raw(s)
            status, headers, _ = raw.response()
            interim_after = time.monotonic() - began
            self.assertEqual(status, 100)
            self.assertEqual(self.instances.state(name), "running")
            self.assertGreaterEqual(interim_after, 1.0)  # not before the app's STARTUP_DELAY
            s.sendall(body)
            status, headers, data = raw.response()
        self.assertEqual(status, 200, data[:300])
        doc = json.loads(data)
        self.assertEqual((doc["length"], doc["sha256"]), (len(body), hashlib.sha256(body).hexdigest()))
        self.assertEqual(headers.get("x-wakeproxy-woke"), "1")


# 4. pipelining


class PipeliningTests(_RelayCase):
    def test_pipelined_requests_for_two_instances_answered_in_order(self):
        first = self.instances.create(env={"STARTUP_DELAY": "0.5"})
        second = self.instances.create()
        server = self.wakeproxy()
        body = os.urandom(50000)
        burst = (_request("POST", "/echo", first, body)
                 + _request("GET", "/", second)
                 + _request("GET", "/bytes/100000", second)
                 + _request("GET", "/", first, extra="Connection: close\r\n"))
        with socket.create_connection(("127.0.0.1", server.proxy_port)) as s:
            s.settimeout(30)
            s.sendall(burst)  # all four requests in one write
            raw = _Raw(s)
            answers = [raw.response() for _ in range(4)]
            self.assertTrue(raw.ends())
        self.assertEqual([a[0] for a in answers], [200] * 4, [a[2][:200] for a in answers])
        echo = json.loads(answers[0][2])
        self.assertEqual((echo["length"], echo["sha256"]), (len(body), hashlib.sha256(body).hexdigest()))
        self.assertEqual(json.loads(answers[1][2])["instance"], second)
        self.assertEqual(len(answers[2][2]), 100000)
        self.assertEqual(answers[2][2][:3], bytes((0, 1, 2)))
        self.assertEqual(json.loads(answers[3][2])["instance"], first)
        # each woke its own instance, once
        self.assertEqual(answers[0][1].get("x-wakeproxy-woke"), "1")
        self.assertEqual(answers[1][1].get("x-wakeproxy-woke"), "1")
        self.assertEqual((self.instances.starts(first), self.instances.starts(second)), (1, 1))


# 5. read timeouts


class TimeoutTests(_RelayCase):
    def test_head_trickled_a_line_every_half_second_gets_408(self):
        server = self.wakeproxy("--head-timeout", "2s")
        with socket.create_connection(("127.0.0.1", server.proxy_port)) as s:
            began = time.monotonic()
            s.sendall(b"GET / HTTP/1.1\r\nHost: relay.test\r\n")
            s.settimeout(0.5)
            answer = b""
            lines = 0
            while time.monotonic() - began < 10:
                try:
                    answer = s.recv(65536)
                    break
                except socket.timeout:
                    pass
                try:
                    s.sendall("X-Trickle-{}: {}\r\n".format(lines, lines).encode())
                    lines += 1
                except OSError:
                    break
            answered = time.monotonic() - began
            s.settimeout(5)
            raw = _Raw(s)
            raw.buf = answer
            status, headers, body = raw.response()
            self.assertTrue(raw.ends())
            ended = time.monotonic() - began
        self.assertProblemBytes(status, headers, body, 408)
        self.assertEqual(headers.get("connection"), "close")
        self.assertGreater(answered, 1.0)
        self.assertLess(ended, 4.0)
        print("head timeout 2s: 408 after {:.2f}s ({} header lines trickled), closed after {:.2f}s".format(
            answered, lines, ended))

    def test_body_that_goes_silent_gets_408_or_abort(self):
        name = self.instances.create(start=True)
        server = self.wakeproxy("--body-timeout", "2s")
        self.assertEqual(self.get(server, name).status_code, 200)  # ready: the request goes straight upstream
        with socket.create_connection(("127.0.0.1", server.proxy_port)) as s:
            s.settimeout(10)
            s.sendall("POST /echo HTTP/1.1\r\nHost: relay.test\r\nCookie: instance={}\r\nContent-Length: 100\r\n"
                      "\r\n".format(name).encode() + b"0123456789")  # 10 of 100 body bytes, then silence
            began = time.monotonic()
            raw = _Raw(s)
            try:
                status, headers, body = raw.response()
            except (ConnectionResetError, EOFError):
                status = None  # aborted: also acceptable
            ended = time.monotonic() - began
            if status is not None:
                self.assertProblemBytes(status, headers, body, 408)
                self.assertTrue(raw.ends())
                ended = time.monotonic() - began
        self.assertGreater(ended, 1.0)
        self.assertLess(ended, 4.0)
        print("body timeout 2s: {} after {:.2f}s".format(status or "abort", ended))


    def test_idle_keepalive_connection_is_closed(self):
        name = self.instances.create(start=True)
        server = self.wakeproxy("--keepalive-timeout", "2s")
        with socket.create_connection(("127.0.0.1", server.proxy_port)) as s:
            s.settimeout(30)
            s.sendall(_request("GET", "/status", name))
            raw = _Raw(s)
            status, headers, body = raw.response()
            self.assertEqual(status, 200, body)
            answered = time.monotonic()
            s.settimeout(6)
            self.assertTrue(raw.ends())
            idle = time.monotonic() - answered
        self.assertGreater(idle, 1.0)
        self.assertLess(idle, 4.0)
        print("keep-alive timeout 2s: idle connection closed after {:.2f}s".format(idle))

    def test_upstream_response_head_timeout_gets_504(self):
        name = self.instances.create(start=True)
        server = self.wakeproxy("--upstream-timeout", "1s")
        self.assertEqual(self.get(server, name).status_code, 200)
        began = time.monotonic()
        r = self.get(server, name, "/slow", params={"ms": "4000"})
        took = time.monotonic() - began
        self.assertEqual(r.status_code, 504, r.text)
        check_problem(self, 504, r.headers["content-type"], r.json())
        self.assertGreater(took, 0.9)
        self.assertLess(took, 3.0)
        # the instance and wakeproxy are fine: the next request (a new connection, upstream too) works
        self.session.close()
        self.assertEqual(self.get(server, name, "/slow", params={"ms": "10"}).json(), {"slept_ms": 10})


class BodyLimitTests(_RelayCase):
    def test_declared_length_over_max_body_gets_413_from_the_head_alone(self):
        """--max-body: a 200 MiB Content-Length is refused before any body byte, and does not wake anyone."""
        asleep = self.instances.create()
        awake = self.instances.create(start=True)
        server = self.wakeproxy("--max-body", str(MIB))
        for name in (asleep, awake):
            with socket.create_connection(("127.0.0.1", server.proxy_port)) as s:
                s.settimeout(10)
                began = time.monotonic()
                s.sendall(_request("PUT", "/echo", name, extra="Expect: 100-continue\r\nContent-Length: {}\r\n".format(
                    UPLOAD_SIZE)))
                raw = _Raw(s)
                status, headers, body = raw.response()  # a final answer, no 100 first
                self.assertLess(time.monotonic() - began, 2)
                self.assertProblemBytes(status, headers, body, 413)
                self.assertEqual(headers.get("connection"), "close")
                self.assertTrue(raw.ends())
        self.assertEqual(self.instances.state(asleep), "created")
        self.assertEqual(self.instances.starts(asleep), 0)
        # a body under the limit goes through
        body = os.urandom(MIB)
        r = self.session.put(server.proxy_url + "/echo", data=body, headers=_cookie(awake), timeout=30)
        self.assertEqual((r.status_code, r.json()["length"]), (200, MIB))


    def test_chunked_body_passing_max_body_is_cut_with_413(self):
        name = self.instances.create(start=True)
        server = self.wakeproxy("--max-body", str(MIB))
        self.assertEqual(self.get(server, name).status_code, 200)
        piece = os.urandom(64 * 1024)
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(32)) + b"0\r\n\r\n"  # 2 MiB
        with socket.create_connection(("127.0.0.1", server.proxy_port)) as s:
            s.settimeout(10)
            s.sendall(_request("PUT", "/echo", name, extra="Transfer-Encoding: chunked\r\n"))
            try:
                s.sendall(chunks)
            except OSError:
                pass  # wakeproxy may have closed while we were still sending
            raw = _Raw(s)
            status, headers, body = raw.response()
        self.assertProblemBytes(status, headers, body, 413)


# 6. Nagle against delayed ACK


class NagleTests(_RelayCase):
    def _plainapp(self) -> tuple:
        """tests/plainapp.py in a mock-app container (host network), managed by this test's wakeproxy, stopped."""
        client = self.instances.client
        name = unique_name("wpt-plain")
        port = free_port()
        labels = {self.instances.owner_key: self.instances.owner_value, "wakeproxy.port": str(port)}
        client.create_container(
            MOCK_IMAGE, name=name, command=["python3", "-u", "/plainapp.py", str(port)], labels=labels,
            healthcheck={"test": ["NONE"]},  # the image's check asks for /status, which plainapp does not serve
            host_config=client.create_host_config(
                network_mode="host", binds={PLAINAPP: {"bind": "/plainapp.py", "mode": "ro"}}))
        self.addCleanup(remove_containers, client, name)
        return name, port

    def _latencies(self, get, count: int) -> list:
        times = []
        for _ in range(count):
            began = time.perf_counter()
            r = get()
            times.append((time.perf_counter() - began) * 1000)
            self.assertEqual((r.status_code, r.content), (200, b"hello from plainapp\n"))
        return times

    def test_plain_http_server_upstream_is_not_stalled_on_a_pooled_connection(self):
        name, port = self._plainapp()
        server = self.wakeproxy()
        r = self.get(server, name)
        self.assertEqual((r.status_code, r.headers.get("x-wakeproxy-woke")), (200, "1"))
        for _ in range(5):
            self.get(server, name)
        proxied = self._latencies(lambda: self.get(server, name), 50)
        direct_url = "http://127.0.0.1:{}/".format(port)
        with requests.Session() as direct:
            direct.get(direct_url, timeout=10)
            direct_kept = self._latencies(lambda: direct.get(direct_url, timeout=10), 20)
        direct_fresh = self._latencies(
            lambda: requests.get(direct_url, headers={"Connection": "close"}, timeout=10), 20)
        p50 = statistics.median(proxied)
        print("plainapp GET /: through wakeproxy (keep-alive both sides) p50 {:.2f} ms, max {:.2f} ms; direct "
              "keep-alive p50 {:.2f} ms; direct, new connection each, p50 {:.2f} ms".format(
                  p50, max(proxied), statistics.median(direct_kept), statistics.median(direct_fresh)))
        # the app does stall a client that delays its ACKs (else this test would prove nothing)
        self.assertGreater(statistics.median(direct_kept), 30)
        self.assertLess(p50, 20)
        self.assertLess(p50, statistics.median(direct_fresh) + 5)


# 7. keep-alive


class KeepAliveTests(_RelayCase):
    def test_100_requests_on_one_client_connection_reuse_one_upstream_connection(self):
        name = self.instances.create(start=True)
        server = self.wakeproxy()
        upstream_port = self.instances.ports[name]
        self.assertEqual(self.get(server, name).status_code, 200)
        client_ports, upstream_ports = set(), set()
        me, proxy = os.getpid(), server.process.pid
        latencies = {0: [], 1: [], 2: []}
        for i in range(100):
            kind = i % 3
            began = time.perf_counter()
            if kind == 0:
                r = self.get(server, name)
                self.assertEqual((r.status_code, r.json()["instance"]), (200, name), i)
            elif kind == 1:
                body = os.urandom(100 * i)
                r = self.session.post(server.proxy_url + "/echo", data=body, headers=_cookie(name), timeout=30)
                self.assertEqual((r.status_code, r.json()["sha256"]), (200, hashlib.sha256(body).hexdigest()), i)
            else:
                r = self.get(server, name, "/bytes/{}".format(1000 * i))  # chunked from the app
                self.assertEqual((r.status_code, len(r.content)), (200, 1000 * i), i)
            latencies[kind].append((time.perf_counter() - began) * 1000)
            client_ports |= _local_ports(me, server.proxy_port)
            upstream_ports |= _local_ports(proxy, upstream_port)
        self.assertEqual(len(client_ports), 1, client_ports)
        self.assertEqual(len(upstream_ports), 1, upstream_ports)
        print("keep-alive: 100 requests over client port {} and upstream port {}; p50 GET / {:.1f} ms, POST /echo "
              "{:.1f} ms, GET /bytes {:.1f} ms".format(client_ports, upstream_ports,
                                                      *(statistics.median(latencies[k]) for k in range(3))))


class GracefulStopTests(_RelayCase):
    def test_sigterm_lets_exchanges_finish_and_answers_held_requests(self):
        running = self.instances.create(start=True)
        sleeping = self.instances.create(env={"STARTUP_DELAY": "5"})
        server = self.wakeproxy()
        self.assertEqual(self.get(server, running).status_code, 200)  # awake and known
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            slow = pool.submit(requests.get, server.proxy_url + "/slow?ms=1500", headers=_cookie(running),
                               timeout=30)
            held = pool.submit(requests.get, server.proxy_url + "/", headers=_cookie(sleeping), timeout=30)
            time.sleep(0.5)
            began = time.monotonic()
            status = server.stop(timeout=15)
            stopped = time.monotonic() - began
            self.assertEqual(slow.result().status_code, 200)  # the exchange in flight finished
            answer = held.result()
        self.assertEqual(answer.status_code, 503, answer.text)
        self.assertIn("shutting down", answer.json()["detail"])
        self.assertIn("retry-after", answer.headers)
        self.assertIn(status, (143, -15))  # twistd re-raises SIGTERM
        self.assertLess(stopped, 10)


class AccessLogTests(_RelayCase):
    def test_one_json_line_per_request_and_tunnel(self):
        name = self.instances.create()
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "access.log")
        server = self.wakeproxy("--access-log", path)
        self.assertEqual(self.get(server, name, "/bytes/100").status_code, 200)
        with connect("ws://127.0.0.1:{}/ws".format(server.proxy_port), additional_headers=_cookie(name)) as ws:
            ws.send("hello")
            self.assertEqual(ws.recv(timeout=10), "hello")
        deadline = time.monotonic() + 5
        while True:
            with open(path) as f:
                lines = [json.loads(line) for line in f if line.strip()]
            if len(lines) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        first, tunnel = lines[:2]
        self.assertEqual((first["instance"], first["status"], first["woke"]), (name, 200, True))
        self.assertGreaterEqual(first["bytes_out"], 100)  # body bytes as sent (chunk framing included)
        self.assertIn("health;dur=", first["wake"])
        self.assertEqual((tunnel["status"], tunnel["tunnel"]), (101, True))
        self.assertGreater(tunnel["bytes_in"], 0)
