# -*- test-case-name: tests.test_mock_app -*-
"""An ordinary standard-library upstream, to expose Nagle/delayed-ACK stalls in tests and benchmarks.

``python -m tests.plainapp PORT`` (or ``python3 plainapp.py PORT``, standalone: no package imports)
listens on 127.0.0.1:PORT until SIGTERM/SIGINT; ``serve(port)`` does the same in-process and returns the
server, already serving on a daemon thread (``server.shutdown()`` then ``server.server_close()`` stop it;
port 0 picks a free one, see ``server.server_address``).

* ``GET /`` (and ``HEAD /``): a small ``text/plain`` body.
* ``POST /echo``: ``{"length": N, "sha256": "..."}`` of the request body (Content-Length bodies only;
  411 without one, 501 for a chunked one).
* anything else: 404.

It is a plain ``http.server.ThreadingHTTPServer`` with a ``BaseHTTPRequestHandler`` subclass speaking
HTTP/1.1 with keep-alive, and it deliberately behaves like an ordinary Python app, unlike mock_app:

* the response head (``send_response``/``end_headers``) and the body (``wfile.write``) go out in two
  separate sends, because the handler's ``wfile`` is unbuffered (``wbufsize = 0``, the default);
* ``TCP_NODELAY`` is **not** set, so Nagle's algorithm holds the body back while the head is unacknowledged.

On a reused connection the client's delayed ACK then stalls every response by about 40 ms, unless the
client (a proxy's upstream side) sets ``TCP_QUICKACK`` after each read.  Do not "fix" this app: the stall
is what it is for.  It logs nothing, so that logging costs nothing in benchmarks.
"""

import hashlib
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["PlainHandler", "serve", "main"]

BODY = b"hello from plainapp\n"
_READ_SIZE = 64 * 1024


class PlainHandler(BaseHTTPRequestHandler):
    """GET / and POST /echo, each answer written as head, then body (two sends)."""

    protocol_version = "HTTP/1.1"
    server_version = "plainapp/1.0"

    def log_message(self, format, *args):
        pass

    def _reply(self, status, body, content_type="text/plain; charset=utf-8", close=False):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()  # first send: the head
        if self.command != "HEAD":
            self.wfile.write(body)  # second send: the body

    def _has_body(self):
        return ("Transfer-Encoding" in self.headers
                or self.headers.get("Content-Length", "0").strip() not in ("", "0"))

    def do_GET(self):
        if self.path == "/":
            self._reply(200, BODY)
        else:
            self._reply(404, b"not found\n", close=self._has_body())

    do_HEAD = do_GET

    def do_POST(self):
        if self.path != "/echo":
            return self._reply(404, b"not found\n", close=self._has_body())
        if "Transfer-Encoding" in self.headers:
            return self._reply(501, b"chunked bodies are not supported\n", close=True)
        length = self.headers.get("Content-Length", "").strip()
        if not length.isdigit():
            return self._reply(411, b"Content-Length required\n", close=True)
        left = int(length)
        digest = hashlib.sha256()
        while left > 0:
            data = self.rfile.read(min(left, _READ_SIZE))
            if not data:
                self.close_connection = True
                return
            digest.update(data)
            left -= len(data)
        body = json.dumps({"length": int(length), "sha256": digest.hexdigest()}).encode("ascii") + b"\n"
        self._reply(200, body, "application/json")


def serve(port, host="127.0.0.1"):
    """Listen on ``host:port`` and serve on a daemon thread; return the ``ThreadingHTTPServer``."""
    server = ThreadingHTTPServer((host, port), PlainHandler)
    thread = threading.Thread(target=server.serve_forever, name="plainapp", daemon=True)
    thread.start()
    server.thread = thread
    return server


def main(argv):
    if len(argv) != 2 or not argv[1].isdigit():
        sys.stderr.write("usage: python -m tests.plainapp PORT\n")
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    server = serve(int(argv[1]))
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
