"""The HTTP plumbing shared by the two demo apps, mock_app/app.py and mock_home/app.py (standard library only).

Not part of the wakeproxy package.  In the repository each app imports this module from ``../demo_http``;
in the images it sits next to ``app.py``.

* ``make_log(program)``: the timestamped line writer (stderr).
* ``HttpError``, ``ClientGone``: how a handler gives up on a request.
* ``ServerState``: in-flight requests, the stop signal and an optional idle deadline.
* ``DemoServer``: the threaded HTTP server (large backlog, IPv6, no DNS lookup, quiet errors).
* ``DemoHandler``: request dispatch, logging, sending, request body framing (with a deferred
  ``100 Continue``) and the WebSocket upgrade (``_serve_websocket``).
* ``websocket_accept()``, ``websocket_key()``, ``read_frame()``, ``encode_frame()``, ``WebSocket``: the
  server side of RFC 6455 (handshake, frames, messages, close handshake).
* ``listen_address()``, ``serve()``: the end of each app's ``main()``.

Stopping: after SIGTERM/SIGINT, or once the idle deadline passes, the server stops accepting and waits for
the requests in flight: at most SIGNAL_DRAIN_SECONDS after a signal, without limit when idle.  An open
WebSocket is a request in flight; after a signal each one gets a close frame 1001 (going away).
"""

import base64
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

SIGNAL_DRAIN_SECONDS = 2.0
POLL_SECONDS = 0.1
MAX_LINE = 64 * 1024
MAX_WEBSOCKET_MESSAGE = 16 * 1024 * 1024
WEBSOCKET_LINGER_SECONDS = 2.0

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
    """A request problem answered with an error (the app's ``_send_error``) and a closed connection.

    ``headers``: extra ``(name, value)`` pairs the error answer carries.
    """

    def __init__(self, status, message, headers=()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = tuple(headers)


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
        self._websockets_lock = threading.Lock()
        self._websockets = set()
        self._going_away = False
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

    def websocket_opened(self, websocket):
        """Track an open WebSocket; one opened after ``websockets_going_away()`` is told to go away at once."""
        with self._websockets_lock:
            self._websockets.add(websocket)
            late = self._going_away
        if late:
            websocket.going_away()

    def websocket_closed(self, websocket):
        with self._websockets_lock:
            self._websockets.discard(websocket)

    def websockets_going_away(self):
        """Send a close frame 1001 (going away) on every open WebSocket, and on any opened later."""
        with self._websockets_lock:
            self._going_away = True
            websockets = list(self._websockets)
        for websocket in websockets:
            websocket.going_away()

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
        SIGNAL_DRAIN_SECONDS after that signal, and open WebSockets are
        sent a close frame 1001 (from a daemon thread: a peer that does
        not read cannot hold up the exit).  Returns the number of
        requests still running.
        """
        announced = False
        with self._inflight_cond:
            while self._inflight > 0:
                timeout = POLL_SECONDS
                if self.signal_time is not None:
                    if not announced:
                        announced = True
                        threading.Thread(target=self.websockets_going_away, name="going-away",
                                         daemon=True).start()
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

    ``Expect: 100-continue`` (HTTP/1.1): the interim ``100 Continue`` goes out when the handler starts
    reading a body (``_body_length()`` finds one), not for answers given without reading it.
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

    def parse_request(self):
        self._continue_expected = False
        self._error_headers = ()
        return super().parse_request()

    def handle_expect_100(self):
        # Called by parse_request() for an HTTP/1.1 "Expect: 100-continue"; the
        # interim answer waits until the body is read (_send_continue).
        self._continue_expected = True
        return True

    def _send_continue(self):
        """Send the interim ``100 Continue`` if the client waits for one (once per request)."""
        if self._continue_expected:
            self._continue_expected = False
            self.send_response_only(100)
            self.end_headers()

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
                self._error_headers = error.headers
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
        for name, value in self._error_headers:
            self.send_header(name, value)
        self._error_headers = ()
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
        Sends the ``100 Continue`` the client may be waiting for when a body follows.
        """
        encoding = self.headers.get("Transfer-Encoding")
        if encoding is not None:
            codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
            if not codings or codings[-1] != "chunked":
                raise HttpError(501, "unsupported transfer-encoding")
            self._send_continue()
            return None
        values = {v.strip() for v in self.headers.get_all("Content-Length", [])}
        if not values:
            return 0
        value = values.pop()
        if values or not value.isdigit():
            raise HttpError(400, invalid_length_message)
        if int(value) > 0:
            self._send_continue()
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

    # -- WebSocket --------------------------------------------------------

    def _serve_websocket(self, session):
        """Answer a WebSocket handshake (RFC 6455) and run ``session(websocket)`` on the connection.

        HttpError 400 (with ``Sec-WebSocket-Version: 13``) for a bad handshake, 503 once the server stops.
        After ``101 Switching Protocols`` the connection is a ``WebSocket`` and is closed when
        ``session`` returns; it stays a request in flight, and an open WebSocket of the state, until then.
        Returns the WebSocket.
        """
        key = websocket_key(self.request_version, self.headers)
        if self.server.state.stopping:
            raise HttpError(503, "shutting down")
        self.close_connection = True  # no HTTP after this, whatever happens
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", websocket_accept(key))
        self.end_headers()
        websocket = WebSocket(self.rfile, self.wfile, self.connection)
        state = self.server.state
        state.websocket_opened(websocket)
        try:
            session(websocket)
        finally:
            state.websocket_closed(websocket)
        return websocket


# -- WebSocket (RFC 6455, server side) -----------------------------------------

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WEBSOCKET_VERSION = "13"

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA_OPCODES = (OP_CONTINUATION, OP_TEXT, OP_BINARY)
_CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_NO_STATUS = 1005  # never sent: "the close frame had no status code"
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009

_MAX_CONTROL_PAYLOAD = 125


def _tokens(headers, name):
    """The lower-cased comma-separated tokens of every ``name`` header."""
    return {token.strip().lower() for value in headers.get_all(name, []) for token in value.split(",")}


def websocket_accept(key):
    """The ``Sec-WebSocket-Accept`` value for a ``Sec-WebSocket-Key`` (RFC 6455 section 4.2.2)."""
    digest = hashlib.sha1((key + WEBSOCKET_GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def websocket_key(request_version, headers):
    """The ``Sec-WebSocket-Key`` of a valid handshake (a GET request, checked by the caller).

    ``headers`` is the request's ``email.message.Message``.  Raises HttpError 400, carrying
    ``Sec-WebSocket-Version: 13``, for anything short of RFC 6455 section 4.2.1: HTTP/1.1 or later,
    ``Upgrade: websocket``, ``Connection: upgrade``, version 13, one key that is 16 bytes in base64, no body.
    """
    def bad(message):
        return HttpError(400, message, [("Sec-WebSocket-Version", WEBSOCKET_VERSION)])

    if request_version in ("HTTP/0.9", "HTTP/1.0"):
        raise bad("websocket handshake needs HTTP/1.1")
    if "websocket" not in _tokens(headers, "Upgrade"):
        raise bad("websocket handshake needs Upgrade: websocket")
    if "upgrade" not in _tokens(headers, "Connection"):
        raise bad("websocket handshake needs Connection: Upgrade")
    versions = [v.strip() for v in headers.get_all("Sec-WebSocket-Version", [])]
    if versions != [WEBSOCKET_VERSION]:
        raise bad("unsupported Sec-WebSocket-Version (13 only)")
    keys = [k.strip() for k in headers.get_all("Sec-WebSocket-Key", [])]
    if len(keys) != 1:
        raise bad("websocket handshake needs one Sec-WebSocket-Key")
    try:
        raw = base64.b64decode(keys[0].encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raw = b""
    if len(raw) != 16:
        raise bad("Sec-WebSocket-Key is not 16 bytes in base64")
    if "Transfer-Encoding" in headers or headers.get("Content-Length", "0").strip() not in ("", "0"):
        raise bad("a websocket handshake has no body")
    return keys[0]


class WebSocketError(Exception):
    """A peer broke RFC 6455: the connection fails with close ``code``."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def mask_payload(mask, data):
    """XOR ``data`` with the 4-byte ``mask`` repeated (masking and unmasking are the same operation)."""
    length = len(data)
    if not length:
        return b""
    key = (mask * (length // 4 + 1))[:length]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")


def encode_frame(opcode, payload, fin=True, mask=None):
    """One frame as bytes: unmasked (a server's) unless a 4-byte ``mask`` is given (a client's)."""
    length = len(payload)
    head = bytearray([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if mask is not None else 0
    if length < 126:
        head.append(mask_bit | length)
    elif length < 1 << 16:
        head.append(mask_bit | 126)
        head += length.to_bytes(2, "big")
    else:
        head.append(mask_bit | 127)
        head += length.to_bytes(8, "big")
    if mask is None:
        return bytes(head) + payload
    return bytes(head) + mask + mask_payload(mask, payload)


def _read(rfile, count):
    data = rfile.read(count) if count else b""
    if len(data) != count:
        raise ClientGone("connection closed inside a frame" if data else "connection closed")
    return data


def read_frame(rfile, max_payload=MAX_WEBSOCKET_MESSAGE, masked=True):
    """Read one frame; return ``(fin, opcode, payload)`` with the payload unmasked.

    ``masked``: whether frames must be masked (a client's, as a server reads them) or must not be.
    Raises WebSocketError for a frame that breaks RFC 6455 (1002) or a data frame whose payload exceeds
    ``max_payload`` (1009), ClientGone when the connection ends first.
    """
    first, second = _read(rfile, 2)
    fin = bool(first & 0x80)
    opcode = first & 0x0F
    if first & 0x70:
        raise WebSocketError(CLOSE_PROTOCOL_ERROR, "reserved bits set (no extension was negotiated)")
    if opcode not in _DATA_OPCODES + _CONTROL_OPCODES:
        raise WebSocketError(CLOSE_PROTOCOL_ERROR, "unknown opcode %d" % opcode)
    if bool(second & 0x80) != masked:
        raise WebSocketError(CLOSE_PROTOCOL_ERROR, "client frames must be masked" if masked
                             else "server frames must not be masked")
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(_read(rfile, 2), "big")
    elif length == 127:
        length = int.from_bytes(_read(rfile, 8), "big")
        if length >> 63:
            raise WebSocketError(CLOSE_PROTOCOL_ERROR, "frame length has its top bit set")
    if opcode in _CONTROL_OPCODES and (length > _MAX_CONTROL_PAYLOAD or not fin):
        raise WebSocketError(CLOSE_PROTOCOL_ERROR, "control frames are single frames of 125 bytes or less")
    if opcode in _DATA_OPCODES and length > max_payload:
        raise WebSocketError(CLOSE_TOO_BIG, "message larger than %d bytes" % max_payload)
    mask = _read(rfile, 4) if masked else None
    payload = _read(rfile, length)
    return fin, opcode, (mask_payload(mask, payload) if masked else payload)


def _close_code_allowed(code):
    """Whether a peer may send ``code`` in a close frame (RFC 6455 section 7.4)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class WebSocket:
    """The server end of a WebSocket connection, after the handshake.

    ``messages()`` reads (on the handler's thread) and yields whole text and binary messages; it answers
    pings and the peer's close frame itself.  ``send()`` and ``going_away()`` may be called from any
    thread.  Counters for the log: ``messages_in``, ``close_received`` (the peer's code, 1005 for a close
    frame without one), ``close_sent`` (ours), ``lost`` (the connection ended without a close frame).
    """

    def __init__(self, rfile, wfile, connection=None, max_message=MAX_WEBSOCKET_MESSAGE):
        self._rfile = rfile
        self._wfile = wfile
        self._connection = connection
        self.max_message = max_message
        self._send_lock = threading.Lock()
        self.messages_in = 0
        self.close_received = None
        self.close_sent = None
        self.lost = False

    def summary(self):
        """``messages in, close codes`` for the request's log line."""
        if self.lost and self.close_received is None:
            ending = "connection lost"
        else:
            ending = "close in=%s out=%s" % (self.close_received or "-", self.close_sent or "-")
        return "%d message(s), %s" % (self.messages_in, ending)

    # -- sending ------------------------------------------------------------

    def _write(self, data, closing_code=None, timeout=None):
        """Write one frame under the send lock; False if a close frame went out already or writing failed."""
        if not self._send_lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        try:
            if self.close_sent is not None or self.lost:
                return False
            if closing_code is not None:
                self.close_sent = closing_code
            self._wfile.write(data)
            return True
        except (OSError, ValueError):  # peer gone, or the handler closed the file
            self.lost = True
            return False
        finally:
            self._send_lock.release()

    def send(self, opcode, payload):
        """Send a message (OP_TEXT with bytes in UTF-8, or OP_BINARY) in one frame; False if it cannot go."""
        return self._write(encode_frame(opcode, payload))

    def close(self, code, reason=b""):
        """Send a close frame (status ``code``; none for 1005) unless one went out already."""
        payload = b"" if code == CLOSE_NO_STATUS else code.to_bytes(2, "big") + reason[:123]
        return self._write(encode_frame(OP_CLOSE, payload), closing_code=code)

    def going_away(self):
        """Close with 1001; if the sender is stuck (a peer that does not read), shut the socket instead."""
        payload = CLOSE_GOING_AWAY.to_bytes(2, "big") + b"server stopping"
        if not self._write(encode_frame(OP_CLOSE, payload), CLOSE_GOING_AWAY, timeout=1.0):
            if self.close_sent is None and self._connection is not None:
                try:
                    self._connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    # -- receiving ----------------------------------------------------------

    def messages(self):
        """Yield ``(opcode, payload)`` for each whole message (OP_TEXT or OP_BINARY) until the connection ends.

        Fragments are reassembled (at most ``max_message`` bytes per message; text must be UTF-8).
        Pings get a pong with the same payload, pongs are ignored, a close frame is answered with one
        carrying the same status code and ends the loop; so does a broken rule (after a close frame
        1002, 1007 or 1009) and a connection that drops (quietly).  After our own close frame, data
        is read and dropped until the peer's close frame arrives.
        """
        pieces = []
        opcode = None
        size = 0
        try:
            while True:
                fin, frame_opcode, payload = read_frame(self._rfile, self.max_message - size)
                if frame_opcode == OP_PING:
                    self._write(encode_frame(OP_PONG, payload))
                    continue
                if frame_opcode == OP_PONG:
                    continue
                if frame_opcode == OP_CLOSE:
                    self._answer_close(payload)
                    return
                if frame_opcode == OP_CONTINUATION:
                    if opcode is None:
                        raise WebSocketError(CLOSE_PROTOCOL_ERROR, "continuation without a message")
                elif opcode is not None:
                    raise WebSocketError(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
                else:
                    opcode = frame_opcode
                pieces.append(payload)
                size += len(payload)
                if not fin:
                    continue
                message = pieces[0] if len(pieces) == 1 else b"".join(pieces)
                kind = opcode
                pieces, opcode, size = [], None, 0
                if kind == OP_TEXT:
                    try:
                        message.decode("utf-8")
                    except UnicodeDecodeError:
                        raise WebSocketError(CLOSE_INVALID_DATA, "text message is not UTF-8")
                self.messages_in += 1
                if self.close_sent is None:
                    yield kind, message
        except WebSocketError as error:
            self.close(error.code, error.message.encode("utf-8"))
            self._linger()
        except (ClientGone, OSError, ValueError):  # EOF, reset, or a file closed under us: end quietly
            self.lost = True

    def _linger(self):
        """After failing the connection: send no more and drop what the peer still sends, for
        WEBSOCKET_LINGER_SECONDS at most, so that closing the socket with unread data (a reset) does
        not destroy our close frame before the peer reads it."""
        connection = self._connection
        if connection is None:
            return
        deadline = time.monotonic() + WEBSOCKET_LINGER_SECONDS
        try:
            connection.shutdown(socket.SHUT_WR)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                connection.settimeout(left)
                if not connection.recv(64 * 1024):
                    break
        except (OSError, ValueError):
            pass

    def _answer_close(self, payload):
        if not payload:
            self.close_received = CLOSE_NO_STATUS
            self.close(CLOSE_NO_STATUS)
            return
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 0
        self.close_received = code
        try:
            payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            self.close(CLOSE_INVALID_DATA)
            return
        self.close(code if _close_code_allowed(code) else CLOSE_PROTOCOL_ERROR)


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
