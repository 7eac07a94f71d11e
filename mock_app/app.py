"""Mock backend app for wakeproxy demos and tests (Python standard library only).

Endpoints:

* ``GET /``            JSON identity document; resets the idle timer.
* ``GET /status``      ``{"status": "ok", "left": "<idle time left>"}``; no reset.
* ``POST|PUT /echo``   reads the body (Content-Length or chunked) and returns
                       its length, sha256, method, path and headers.
* ``GET /bytes/N``     streams N deterministic bytes (``i % 251``), chunked.
* ``GET /slow?ms=N``   sleeps N ms, then returns ``{"slept_ms": N}``.

Configuration comes from the environment: ``PORT`` (9000), ``HOST``
(0.0.0.0), ``CONNSTR``, ``INSTANCE`` (hostname), ``IDLE`` (Go-style
duration, ``1m``; ``0`` means never), ``STARTUP_DELAY`` (seconds, 0) and
``CRASH_ON_START`` (``1`` exits with status 3).

After ``IDLE`` without a request to ``/`` the server stops accepting, lets
in-flight requests finish and exits 0.  SIGTERM/SIGINT do the same but give
in-flight requests at most 2 seconds.
"""

import hashlib
import json
import os
import re
import signal
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CHUNK_SIZE = 64 * 1024
PATTERN_MODULUS = 251
DEFAULT_IDLE = 60.0
SIGNAL_DRAIN_SECONDS = 2.0
POLL_SECONDS = 0.1
MAX_LINE = 64 * 1024

_PATTERN_BLOCK = bytes(range(PATTERN_MODULUS)) * (CHUNK_SIZE // PATTERN_MODULUS + 2)

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 MICRO SIGN
    "μs": 1e-6,  # U+03BC GREEK SMALL LETTER MU
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_HEX = re.compile(rb"[0-9A-Fa-f]+")

_log_lock = threading.Lock()


def log(message):
    """Write one timestamped line to stderr and flush it."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))
    line = "%s.%03d mock_app[%d]: %s\n" % (stamp, int(now * 1000) % 1000, os.getpid(), message)
    with _log_lock:
        try:
            sys.stderr.write(line)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


def parse_duration(text):
    """Parse a Go-style duration (``500ms``, ``1h30m``, ``0``) into seconds.

    Raises ValueError for anything else, including negative durations and
    numbers without a unit (other than ``0``).
    """
    if not isinstance(text, str):
        raise ValueError("duration must be a string: %r" % (text,))
    body = text[1:] if text.startswith("+") else text
    if body == "0":
        return 0.0
    if not body:
        raise ValueError("invalid duration: %r" % (text,))
    total = 0.0
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            raise ValueError("invalid duration: %r" % (text,))
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return total


def pattern(offset, length):
    """Return ``length`` bytes of the /bytes stream starting at ``offset``.

    The byte at absolute offset ``i`` is ``i % 251``.
    """
    if offset < 0 or length < 0:
        raise ValueError("offset and length must be non-negative")
    start = offset % PATTERN_MODULUS
    if start + length <= len(_PATTERN_BLOCK):
        return _PATTERN_BLOCK[start:start + length]
    repeats = (start + length) // PATTERN_MODULUS + 1
    return (bytes(range(PATTERN_MODULUS)) * repeats)[start:start + length]


def format_seconds(seconds):
    """Format a remaining time like ``41.2s``."""
    return "%.1fs" % max(0.0, seconds)


class HttpError(Exception):
    """A request problem answered with a JSON error and a closed connection."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class ClientGone(Exception):
    """The client closed the connection before the request body was complete."""


class AppState:
    """Shared state: idle clock, in-flight requests and the stop signal."""

    def __init__(self, idle, hostname, instance, connstr):
        self.idle = idle
        self.hostname = hostname
        self.instance = instance
        self.connstr = connstr
        self._clock_lock = threading.Lock()
        self._last_request = time.monotonic()
        self._inflight_cond = threading.Condition()
        self._inflight = 0
        self.stopping = False
        # Written by signal handlers only (simple assignments, no locks, so
        # a handler can never deadlock against the interrupted main thread).
        self.signal_name = None
        self.signal_time = None

    def touch(self):
        """Reset the idle timer."""
        with self._clock_lock:
            self._last_request = time.monotonic()

    def idle_left(self):
        """Seconds left before the idle shutdown (``None`` if it never happens)."""
        if self.idle <= 0:
            return None
        with self._clock_lock:
            last = self._last_request
        return self.idle - (time.monotonic() - last)

    def request_started(self):
        with self._inflight_cond:
            self._inflight += 1

    def request_finished(self):
        with self._inflight_cond:
            self._inflight -= 1
            if self._inflight == 0:
                self._inflight_cond.notify_all()

    def inflight(self):
        with self._inflight_cond:
            return self._inflight

    def on_signal(self, signum, frame):
        """Signal handler: record the request to stop; the main loop acts on it."""
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
            self.signal_time = time.monotonic()

    def wait_for_stop(self):
        """Block until a signal arrives or the idle time runs out; return the reason."""
        while True:
            if self.signal_name is not None:
                return self.signal_name
            left = self.idle_left()
            if left is not None and left <= 0:
                return "idle"
            wait = POLL_SECONDS if left is None else min(POLL_SECONDS, left)
            time.sleep(max(wait, 0.001))

    def drain(self):
        """Wait for in-flight requests to finish.

        Unbounded unless a signal was received, in which case at most
        SIGNAL_DRAIN_SECONDS after that signal.  Returns the number of
        requests still running.
        """
        with self._inflight_cond:
            while self._inflight > 0:
                timeout = POLL_SECONDS
                if self.signal_time is not None:
                    left = self.signal_time + SIGNAL_DRAIN_SECONDS - time.monotonic()
                    if left <= 0:
                        break
                    timeout = min(timeout, left)
                self._inflight_cond.wait(timeout)
            return self._inflight


class MockServer(ThreadingHTTPServer):
    """Threaded HTTP server with a large listen backlog."""

    request_queue_size = 1024
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address, handler, state):
        self.state = state
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def server_bind(self):
        # HTTPServer.server_bind calls socket.getfqdn(), which may block on
        # DNS inside a container; the name is only used for CGI, so skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name = self.server_address[0]
        self.server_port = self.server_address[1]

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            log("connection from %s: %s" % (client_address[0], error.__class__.__name__))
            return
        log("unexpected error from %s: %r" % (client_address[0], error))


class Handler(BaseHTTPRequestHandler):
    """Request handler implementing the mock endpoints."""

    protocol_version = "HTTP/1.1"
    server_version = "mock_app/1.0"

    def setup(self):
        super().setup()
        # Head and body go out in separate writes; without NODELAY, Nagle holds the body until the
        # client's delayed ACK (~40 ms) on every kept-alive response after the first.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    # -- plumbing ---------------------------------------------------------

    def log_request(self, code="-", size="-"):
        # Called by send_response(); remember the status for our own log line.
        try:
            self._status = int(code)
        except (TypeError, ValueError):
            self._status = code

    def log_message(self, format, *args):
        log("%s %s" % (self.address_string(), format % args))

    def _dispatch(self):
        state = self.server.state
        started = time.monotonic()
        self._status = None
        state.request_started()
        try:
            self._route(state)
        except HttpError as error:
            self.close_connection = True
            if self._status is None:
                self._send_json(error.status, {"error": error.message})
        except (ClientGone, ConnectionError, TimeoutError) as error:
            self.close_connection = True
            log("%s %s: client gone (%s)" % (self.command, self.path, error.__class__.__name__))
        except Exception as error:  # keep serving other requests
            self.close_connection = True
            log("%s %s: internal error %r" % (self.command, self.path, error))
            if self._status is None:
                try:
                    self._send_json(500, {"error": "internal error"})
                except OSError:
                    pass
        finally:
            state.request_finished()
            log("%s %s %s %.1fms" % (self.command, self.path, self._status or "-",
                                     (time.monotonic() - started) * 1000))

    def _end_headers(self):
        if self.close_connection or self.server.state.stopping:
            self.send_header("Connection", "close")  # also sets close_connection
        self.end_headers()

    def _send_json(self, status, obj):
        body = (json.dumps(obj) + "\n").encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self._end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _has_body(self):
        return ("Transfer-Encoding" in self.headers
                or self.headers.get("Content-Length", "0").strip() not in ("", "0"))

    # -- routing ----------------------------------------------------------

    def _route(self, state):
        path = urlsplit(self.path).path
        if path != "/echo" and self._has_body():
            # The body is not read: do not try to parse it as the next request.
            self.close_connection = True
        method = self.command
        if path == "/echo":
            if method in ("GET", "HEAD"):
                return self._method_not_allowed("POST, PUT, PATCH, DELETE")
            return self._echo()
        if method not in ("GET", "HEAD"):
            known = path in ("/", "/status", "/slow") or path.startswith("/bytes/")
            if known:
                return self._method_not_allowed("GET, HEAD")
            return self._send_json(404, {"error": "not found"})
        if path == "/":
            state.touch()
            return self._root(state)
        if path == "/status":
            left = state.idle_left()
            return self._send_json(200, {
                "status": "ok",
                "left": "never" if left is None else format_seconds(left),
            })
        if path.startswith("/bytes/"):
            return self._bytes(path[len("/bytes/"):])
        if path == "/slow":
            return self._slow()
        return self._send_json(404, {"error": "not found"})

    def _method_not_allowed(self, allow):
        body = (json.dumps({"error": "method not allowed"}) + "\n").encode("utf-8")
        self.send_response(405)
        self.send_header("Allow", allow)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self._end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    # -- endpoints --------------------------------------------------------

    def _root(self, state):
        self._send_json(200, {
            "hostname": state.hostname,
            "instance": state.instance,
            "connection string": state.connstr,
            "requested": (self.headers.get("Host") or "") + self.path,
        })

    def _slow(self):
        values = parse_qs(urlsplit(self.path).query).get("ms", [])
        try:
            ms = int(values[-1])
        except (IndexError, ValueError):
            ms = -1
        if ms < 0:
            raise HttpError(400, "ms must be a non-negative integer")
        time.sleep(ms / 1000.0)
        self._send_json(200, {"slept_ms": ms})

    def _bytes(self, text):
        if not text.isdigit():
            raise HttpError(400, "size must be a non-negative integer")
        total = int(text)
        chunked = self.request_version != "HTTP/1.0"
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(total))
        self._end_headers()
        if self.command == "HEAD":
            return
        sent = 0
        try:
            while sent < total:
                size = min(CHUNK_SIZE, total - sent)
                data = pattern(sent, size)
                if chunked:
                    self.wfile.write(b"%x\r\n%s\r\n" % (size, data))
                else:
                    self.wfile.write(data)
                sent += size
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
            self.close_connection = True
            log("GET %s: client gone after %d bytes" % (self.path, sent))

    def _echo(self):
        digest = hashlib.sha256()
        length = 0
        for piece in self._read_body():
            digest.update(piece)
            length += len(piece)
        headers = {}
        names = {}
        for name, value in self.headers.items():
            key = name.lower()
            if key in names:
                headers[names[key]] += ", " + value
            else:
                names[key] = name
                headers[name] = value
        self._send_json(200, {
            "length": length,
            "sha256": digest.hexdigest(),
            "method": self.command,
            "path": self.path,
            "headers": headers,
        })

    # -- request bodies ---------------------------------------------------

    def _read_body(self):
        """Yield the request body in pieces; never holds all of it in memory."""
        encoding = self.headers.get("Transfer-Encoding")
        if encoding is not None:
            codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
            if not codings or codings[-1] != "chunked":
                raise HttpError(501, "unsupported transfer-encoding")
            return self._read_chunked()
        values = {v.strip() for v in self.headers.get_all("Content-Length", [])}
        if not values:
            return iter(())
        value = values.pop()
        if values or not value.isdigit():
            raise HttpError(400, "invalid content-length")
        return self._read_exactly(int(value))

    def _read_exactly(self, count):
        while count > 0:
            data = self.rfile.read(min(count, CHUNK_SIZE))
            if not data:
                raise ClientGone("body ended early")
            count -= len(data)
            yield data

    def _readline(self):
        line = self.rfile.readline(MAX_LINE + 1)
        if not line:
            raise ClientGone("body ended early")
        if len(line) > MAX_LINE:
            raise HttpError(400, "line too long in chunked body")
        return line

    def _read_chunked(self):
        while True:
            size_text = self._readline().split(b";", 1)[0].strip()
            if not _HEX.fullmatch(size_text):
                raise HttpError(400, "invalid chunk size")
            size = int(size_text, 16)
            if size == 0:
                break
            yield from self._read_exactly(size)
            if self._readline() not in (b"\r\n", b"\n"):
                raise HttpError(400, "missing CRLF after chunk")
        while self._readline() not in (b"\r\n", b"\n"):
            pass  # trailers are ignored


def _env_seconds(name, default, parser):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parser(raw)
    except ValueError:
        value = -1.0
    if value < 0 or value != value:
        log("warning: invalid %s=%r, using %s" % (name, raw, default))
        return default
    return value


def main():
    """Run the server until idle or signalled; return the exit status."""
    if os.environ.get("CRASH_ON_START", "").strip() == "1":
        log("CRASH_ON_START=1: crashing on purpose with status 3")
        return 3

    hostname = socket.gethostname()
    state = AppState(
        idle=_env_seconds("IDLE", DEFAULT_IDLE, parse_duration),
        hostname=hostname,
        instance=os.environ.get("INSTANCE") or hostname,
        connstr=os.environ.get("CONNSTR", ""),
    )
    signal.signal(signal.SIGTERM, state.on_signal)
    signal.signal(signal.SIGINT, state.on_signal)

    host = os.environ.get("HOST", "0.0.0.0").strip() or "0.0.0.0"
    try:
        port = int(os.environ.get("PORT", "9000"))
    except ValueError:
        log("invalid PORT=%r" % os.environ.get("PORT"))
        return 2

    delay = _env_seconds("STARTUP_DELAY", 0.0, float)
    if delay > 0:
        log("sleeping %.3fs before listening (STARTUP_DELAY)" % delay)
        deadline = time.monotonic() + delay
        while state.signal_name is None and time.monotonic() < deadline:
            time.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0.001)))
        if state.signal_name is not None:
            log("%s during startup delay, exiting" % state.signal_name)
            return 0

    try:
        server = MockServer((host, port), Handler, state)
    except OSError as error:
        log("cannot listen on %s:%d: %s" % (host, port, error))
        return 1
    thread = threading.Thread(target=server.serve_forever, name="serve",
                              kwargs={"poll_interval": POLL_SECONDS}, daemon=True)
    state.touch()  # the idle clock starts once we listen
    thread.start()
    log("listening on %s:%d instance=%s idle=%s" % (
        host, server.server_address[1], state.instance,
        "never" if state.idle <= 0 else format_seconds(state.idle)))

    reason = state.wait_for_stop()
    state.stopping = True
    log("stopping (%s): no longer accepting, %d request(s) in flight" % (reason, state.inflight()))
    server.shutdown()
    server.server_close()
    thread.join()
    left = state.drain()
    if left:
        log("exiting with %d request(s) still in flight" % left)
    else:
        log("all requests finished, exiting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
