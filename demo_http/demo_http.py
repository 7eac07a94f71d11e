"""The HTTP plumbing shared by the two demo apps, mock_app/app.py and mock_home/app.py (standard library only).

Not part of the wakeproxy package.  In the repository each app imports this module from ``../demo_http``;
in the images it sits next to ``app.py``.

* ``make_log(program)``: the timestamped line writer (stderr).
* ``HttpError``, ``ClientGone``: how a handler gives up on a request.
* ``ServerState``: in-flight requests, the stop signal and an optional idle deadline.
* ``DemoServer``: the threaded HTTP server (large backlog, IPv6, no DNS lookup, quiet errors).
* ``DemoHandler``: request dispatch, logging, sending and request body framing.
* ``listen_address()``, ``serve()``: the end of each app's ``main()``.

Stopping: after SIGTERM/SIGINT, or once the idle deadline passes, the server stops accepting and waits for
the requests in flight: at most SIGNAL_DRAIN_SECONDS after a signal, without limit when idle.
"""

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

SIGNAL_DRAIN_SECONDS = 2.0
POLL_SECONDS = 0.1
MAX_LINE = 64 * 1024

_HEX = re.compile(rb"[0-9A-Fa-f]+")

_log_lock = threading.Lock()


def make_log(program):
    """A function writing one timestamped line, ``<time> <program>[<pid>]: <message>``, to stderr and flushing it."""

    def log(message):
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))
        line = "%s.%03d %s[%d]: %s\n" % (stamp, int(now * 1000) % 1000, program, os.getpid(), message)
        with _log_lock:
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (OSError, ValueError):
                pass

    return log


class HttpError(Exception):
    """A request problem answered with an error (the app's ``_send_error``) and a closed connection."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class ClientGone(Exception):
    """The client closed the connection before the request body was complete."""


class ServerState:
    """In-flight requests, the stop signal and the idle clock (``idle`` seconds; 0 or less: no idle deadline)."""

    def __init__(self, idle=0.0):
        self.idle = idle
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

    def catch_signals(self):
        """Make SIGTERM and SIGINT call on_signal (from the main thread)."""
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)

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


class DemoServer(ThreadingHTTPServer):
    """Threaded HTTP server with a large listen backlog; ``state`` and ``log`` are the app's."""

    request_queue_size = 1024
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address, handler, state, log):
        self.state = state
        self.log = log
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
            self.log("connection from %s: %s" % (client_address[0], error.__class__.__name__))
            return
        self.log("unexpected error from %s: %r" % (client_address[0], error))


class DemoHandler(BaseHTTPRequestHandler):
    """Request plumbing: every method goes to ``_route(state)``, one log line per request.

    A subclass implements ``_route(state)`` and ``_send_error(status, message)`` (the answer to an
    HttpError, and to an unexpected exception with ``internal_error_message``); it may override the
    hooks ``_begin()``, ``_log_path()``, ``_log_suffix()`` and ``_closing()``.
    """

    protocol_version = "HTTP/1.1"
    internal_error_message = "internal error"

    def do_GET(self):
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def log_request(self, code="-", size="-"):
        # Called by send_response(); remember the status for our own log line.
        try:
            self._status = int(code)
        except (TypeError, ValueError):
            self._status = code

    def log_message(self, format, *args):
        self.server.log("%s %s" % (self.address_string(), format % args))

    def _dispatch(self):
        state = self.server.state
        log = self.server.log
        started = time.monotonic()
        self._status = None
        self._begin()
        state.request_started()
        try:
            self._route(state)
        except HttpError as error:
            self.close_connection = True
            if self._status is None:
                self._send_error(error.status, error.message)
        except (ClientGone, ConnectionError, TimeoutError) as error:
            self.close_connection = True
            log("%s %s: client gone (%s)" % (self.command, self._log_path(), error.__class__.__name__))
        except Exception as error:  # keep serving other requests
            self.close_connection = True
            log("%s %s: internal error %r" % (self.command, self._log_path(), error))
            if self._status is None:
                try:
                    self._send_error(500, self.internal_error_message)
                except OSError:
                    pass
        finally:
            state.request_finished()
            log("%s %s %s %.1fms%s" % (self.command, self._log_path(), self._status or "-",
                                       (time.monotonic() - started) * 1000, self._log_suffix()))

    def _begin(self):
        """Called before each request is routed."""

    def _log_path(self):
        """The request's path as the log shows it."""
        return self.path

    def _log_suffix(self):
        """Appended to the request's log line."""
        return ""

    # -- sending ----------------------------------------------------------

    def _closing(self):
        """Whether the answer closes the connection."""
        return self.close_connection or self.server.state.stopping

    def _end_headers(self):
        if self._closing():
            self.send_header("Connection", "close")  # also sets close_connection
        self.end_headers()

    def _send(self, status, body, content_type, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self._end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status, obj, headers=()):
        self._send(status, (json.dumps(obj) + "\n").encode("utf-8"), "application/json", headers)

    # -- request bodies ---------------------------------------------------

    def _body_length(self, invalid_length_message):
        """The request body's Content-Length (0 without one), or None for a chunked body.

        HttpError 501 for another transfer-coding, 400 (``invalid_length_message``) for a bad Content-Length.
        """
        encoding = self.headers.get("Transfer-Encoding")
        if encoding is not None:
            codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
            if not codings or codings[-1] != "chunked":
                raise HttpError(501, "unsupported transfer-encoding")
            return None
        values = {v.strip() for v in self.headers.get_all("Content-Length", [])}
        if not values:
            return 0
        value = values.pop()
        if values or not value.isdigit():
            raise HttpError(400, invalid_length_message)
        return int(value)

    def _readline(self):
        line = self.rfile.readline(MAX_LINE + 1)
        if not line:
            raise ClientGone("body ended early")
        if len(line) > MAX_LINE:
            raise HttpError(400, "line too long in chunked body")
        return line

    def _chunk_sizes(self):
        """Yield the size of each chunk of a chunked body; read that many bytes before the next one.

        Reads the chunk headers, the CRLF after each chunk and the trailers (ignored).
        """
        while True:
            size_text = self._readline().split(b";", 1)[0].strip()
            if not _HEX.fullmatch(size_text):
                raise HttpError(400, "invalid chunk size")
            size = int(size_text, 16)
            if size == 0:
                break
            yield size
            if self._readline() not in (b"\r\n", b"\n"):
                raise HttpError(400, "missing CRLF after chunk")
        while self._readline() not in (b"\r\n", b"\n"):
            pass  # trailers are ignored


def listen_address(default_port, log):
    """``(host, port)`` from HOST (0.0.0.0) and PORT (``default_port``); None, logged, for a PORT that is no number."""
    host = os.environ.get("HOST", "0.0.0.0").strip() or "0.0.0.0"
    try:
        port = int(os.environ.get("PORT", str(default_port)))
    except ValueError:
        log("invalid PORT=%r" % os.environ.get("PORT"))
        return None
    return host, port


def serve(address, handler, state, log, description):
    """The end of an app's ``main()``: serve until stopped, then drain; return the exit status.

    Listens on ``address`` (1, logged, when it cannot), starts the idle clock and serves in a thread
    until ``state.wait_for_stop()`` returns; then stops accepting, waits for the requests in flight
    (``state.drain()``) and returns 0.  The signal handlers are the caller's (``state.catch_signals()``,
    early, so that a signal before this is not lost).  ``description`` ends the "listening" log line.
    """
    host, port = address
    try:
        server = DemoServer((host, port), handler, state, log)
    except OSError as error:
        log("cannot listen on %s:%d: %s" % (host, port, error))
        return 1
    thread = threading.Thread(target=server.serve_forever, name="serve",
                              kwargs={"poll_interval": POLL_SECONDS}, daemon=True)
    state.touch()  # the idle clock starts once we listen
    thread.start()
    log("listening on %s:%d %s" % (host, server.server_address[1], description))

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
