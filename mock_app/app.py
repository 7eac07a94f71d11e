"""Mock backend app for wakeproxy demos and tests (Python standard library only).

Endpoints:

* ``GET /``            JSON identity document; resets the idle timer.  A browser (``Accept``
                       preferring ``text/html`` to ``application/json``) gets it as a
                       small HTML page instead, with a link back to ``/home``.
* ``GET /status``      ``{"status": "ok", "left": "<idle time left>"}``; no reset.
* ``POST|PUT /echo``   reads the body (Content-Length or chunked) and returns
                       its length, sha256, method, path and headers.
* ``GET /bytes/N``     streams N deterministic bytes (``i % 251``), chunked.
* ``GET /slow?ms=N``   sleeps N ms, then returns ``{"slept_ms": N}``.
* ``GET /ws``          WebSocket (RFC 6455) echo: each text or binary message
                       (fragments reassembled, 16 MiB at most) comes back in
                       one frame; pings get pongs, a close frame gets a close
                       frame with the same code.  400 for a bad handshake.

``Expect: 100-continue`` gets its interim ``100 Continue`` when /echo starts
reading the body; answers that do not read it (404, 405, 400) come without.

Configuration comes from the environment: ``PORT`` (9000), ``HOST``
(0.0.0.0), ``CONNSTR``, ``INSTANCE`` (hostname), ``IDLE`` (Go-style
duration, ``1m``; ``0`` means never), ``STARTUP_DELAY`` (seconds, 0) and
``CRASH_ON_START`` (``1`` exits with status 3).

After ``IDLE`` without a request to ``/`` the server stops accepting, lets
in-flight requests finish and exits 0.  SIGTERM/SIGINT do the same but give
in-flight requests at most 2 seconds.  An open WebSocket is a request in
flight: the idle stop waits for it; after a signal it gets a close frame 1001.
"""

import hashlib
import html
import os
import re
import socket
import sys
import time
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "demo_http"))
import demo_http  # noqa: E402  (next to app.py in the images, ../demo_http in the repo)
from demo_http import ClientGone, HttpError  # noqa: E402

CHUNK_SIZE = 64 * 1024
PATTERN_MODULUS = 251
DEFAULT_IDLE = 60.0

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

log = demo_http.make_log("mock_app")


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


def accepts_html(accept):
    """Whether an ``Accept`` header prefers HTML: ``text/html`` (or XHTML) named with a quality above 0
    and above that of ``application/json``. ``*/*`` alone, or no header, means JSON."""
    best = {"html": 0.0, "json": 0.0}
    for item in (accept or "").split(","):
        media, _, params = item.strip().partition(";")
        kind = {"text/html": "html", "application/xhtml+xml": "html",
                "application/json": "json"}.get(media.strip().lower())
        if kind is None:
            continue
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        best[kind] = max(best[kind], quality)
    return best["html"] > 0 and best["html"] > best["json"]


_PAGE_STYLE = ("body{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;color:#222}"
               ".site{color:#555;margin:0}dt{font-weight:600;margin-top:.6rem}dd{margin:0}"
               "code{font-size:1.05em;word-break:break-all}.awake{color:#070}")


def identity_page(identity):
    """The identity document as a small HTML page (every value escaped)."""
    def esc(value):
        return html.escape("" if value is None else str(value), quote=True)

    connstr = identity["connection string"]
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        "<title>%(instance)s · wakeproxy demo</title><style>%(style)s</style></head>\n<body>\n"
        "<p class=\"site\">wakeproxy demo</p>\n"
        "<h1>Instance <code>%(instance)s</code> is <span class=\"awake\">awake</span></h1>\n"
        "<dl>\n<dt>Instance</dt><dd id=\"instance\"><code>%(instance)s</code></dd>\n"
        "<dt>Host name</dt><dd id=\"hostname\"><code>%(hostname)s</code></dd>\n"
        "<dt>Connection string</dt><dd id=\"connstr\">%(connstr)s</dd>\n"
        "<dt>Requested</dt><dd id=\"requested\"><code>%(requested)s</code></dd>\n</dl>\n"
        "<p>This is the demo app; programs asking for JSON get the same facts as JSON.</p>\n"
        "<p><a id=\"home\" href=\"/home\">Back to your home page</a></p>\n</body></html>\n"
        % {"instance": esc(identity["instance"]), "hostname": esc(identity["hostname"]),
           "connstr": "<code>%s</code>" % esc(connstr) if connstr else "<em>(none set)</em>",
           "requested": esc(identity["requested"]), "style": _PAGE_STYLE})


def format_seconds(seconds):
    """Format a remaining time like ``41.2s``."""
    return "%.1fs" % max(0.0, seconds)


class AppState(demo_http.ServerState):
    """Shared state: the app's identity, the idle clock, in-flight requests and the stop signal."""

    def __init__(self, idle, hostname, instance, connstr):
        super().__init__(idle)
        self.hostname = hostname
        self.instance = instance
        self.connstr = connstr


class Handler(demo_http.DemoHandler):
    """Request handler implementing the mock endpoints."""

    server_version = "mock_app/1.0"

    def setup(self):
        super().setup()
        # Head and body go out in separate writes; without NODELAY, Nagle holds the body until the
        # client's delayed ACK (~40 ms) on every kept-alive response after the first.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- plumbing ---------------------------------------------------------

    def _begin(self):
        self._websocket = None

    def _log_suffix(self):
        return " (websocket: %s)" % self._websocket.summary() if self._websocket else ""

    def _send_error(self, status, message):
        self._send_json(status, {"error": message})

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
        if path == "/ws":
            if method != "GET":
                return self._method_not_allowed("GET")
            self._websocket = self._serve_websocket(_echo_messages)
            return None
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
        self._send_json(405, {"error": "method not allowed"}, [("Allow", allow)])

    # -- endpoints --------------------------------------------------------

    def _root(self, state):
        identity = {
            "hostname": state.hostname,
            "instance": state.instance,
            "connection string": state.connstr,
            "requested": (self.headers.get("Host") or "") + self.path,
        }
        vary = [("Vary", "Accept")]
        if not accepts_html(", ".join(self.headers.get_all("Accept", []))):
            return self._send_json(200, identity, vary)
        self._send(200, identity_page(identity).encode("utf-8"), "text/html; charset=utf-8", vary + [
            ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'"),
            ("X-Content-Type-Options", "nosniff"),
        ])

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
        length = self._body_length("invalid content-length")
        if length is None:
            return self._read_chunked()
        return self._read_exactly(length)

    def _read_exactly(self, count):
        while count > 0:
            data = self.rfile.read(min(count, CHUNK_SIZE))
            if not data:
                raise ClientGone("body ended early")
            count -= len(data)
            yield data

    def _read_chunked(self):
        for size in self._chunk_sizes():
            yield from self._read_exactly(size)


def _echo_messages(websocket):
    """The /ws session: every message goes back as it came (text or binary)."""
    for opcode, payload in websocket.messages():
        websocket.send(opcode, payload)


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
    state.catch_signals()

    address = demo_http.listen_address(9000, log)
    if address is None:
        return 2

    delay = _env_seconds("STARTUP_DELAY", 0.0, float)
    if delay > 0:
        log("sleeping %.3fs before listening (STARTUP_DELAY)" % delay)
        deadline = time.monotonic() + delay
        while state.signal_name is None and time.monotonic() < deadline:
            time.sleep(min(demo_http.POLL_SECONDS, max(deadline - time.monotonic(), 0.001)))
        if state.signal_name is not None:
            log("%s during startup delay, exiting" % state.signal_name)
            return 0

    return demo_http.serve(address, Handler, state, log, "instance=%s idle=%s" % (
        state.instance, "never" if state.idle <= 0 else format_seconds(state.idle)))


if __name__ == "__main__":
    sys.exit(main())
