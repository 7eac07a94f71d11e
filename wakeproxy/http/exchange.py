# -*- test-case-name: tests.test_relay -*-
"""
One request through the relay (L{Exchange}): from its parsed head to the end of its response or tunnel.

The dispatcher decides (answer it, hold it, forward it); the exchange carries that out: it takes an
upstream connection from the pool, sends the head and streams the body as the client sends it, relays the
response (1xx, framing as the client can read it, a body re-chunked or de-chunked when it must be),
turns into a tunnel after a 101 (WebSocket frames counted for activity), and ends exactly once, answering
or aborting on every failure so that slots, activity and connections are always released.
"""

from __future__ import annotations

from twisted.internet import tcp

from wakeproxy import answers
from wakeproxy.http.chunked import ChunkError, ChunkScanner, chunk
from wakeproxy.http.headers import request_head, response_head
from wakeproxy.http.wsframes import FrameScanner, close_frame

__all__ = ["Exchange"]


class Exchange:
    """One request through the relay, from its head to the end of its response (or tunnel)."""

    # defaults, shared until an exchange sets its own (an exchange sets only what differs)
    extra = ()
    upstream = None
    conn = None
    scanner = None
    body_left = 0
    started = False  # response bytes were written to the client
    gone = False
    done = False
    retried = False
    mode = 0
    wait_ticks = 0
    waiting = False  # the request went upstream; no response head yet
    tunnel = False
    scanners = None
    on_end = None  # the dispatcher's accounting, called once when the exchange ends
    on_gone = None  # cancels a hold or a queued slot when the client leaves first
    on_tunnel = None
    on_activity = None
    instance = None
    slot = None  # the dispatcher's slots of its instance, while it holds one of them
    counted = False  # activity of its instance while in flight (the dispatcher's)
    pressed = False  # either side's backpressure paused the other during this exchange
    # for the access log
    status = None
    bytes_in = 0
    bytes_out = 0
    began = 0.0
    woke = None  # the wake's Server-Timing, when this request had to wake its instance

    def __init__(self, client, head):  # client: the relay.RelayProtocol it came on
        self.client = client
        self.head = head
        self.uri = head.target
        length = head.length
        self.body_done = length == 0
        if length > 0:
            self.body_left = length
        elif length < 0:
            self.scanner = ChunkScanner()
        self.close_after = not head.keep_alive
        if client.relay.access_log is not None:
            self.began = client.relay.clock.seconds()

    # what the dispatcher calls

    def answer(self, answer: "answers.Answer") -> None:
        """Answer with wakeproxy's own response (never after response bytes were sent: then abort)."""
        if self.done:
            return
        if self.started:
            self.client.abort()
            self._end()
            return
        if not self.body_done:
            self.close_after = True  # its body was not read: the connection cannot carry another request
        self.started = True
        self.status = answer.status
        self.bytes_out += len(answer.body)
        self.client.write(answer.encode(head_only=self.head.method == b"HEAD", close=self.close_after))
        self._end()

    def forward(self, upstream, uri: bytes, extra=()) -> None:
        if self.done:
            return
        self.upstream = upstream
        self.uri = uri
        self.extra = extra
        self.client.relay.pool.acquire(upstream, self)

    # what the upstream side calls

    def attached(self, conn) -> None:
        if self.gone or self.done:
            conn.pool.release(conn)
            return
        self.conn = conn
        conn.exchange = self
        conn.expect(self.head.method == b"HEAD")
        client = self.client
        head = request_head(self.head, self.uri, client.peer_ip_b, client.scheme_b, client.trusted, self.upstream)
        client.ticks = 0  # the body timeout counts from now, not from the hold
        self.waiting = True
        self.wait_ticks = 0
        if self.body_done:
            conn.write(head)
            return
        data = client.take_buffer()
        conn.sent_body = bool(data)
        if data:
            part = self._body_part(data)
            self.bytes_in += len(part)
            conn.write(head + part)
        else:
            conn.write(head)
        if not self.body_done:
            client.resume("wait")

    def _detach(self, conn) -> None:
        """C{conn} is no longer this exchange's: neither side's backpressure holds the other any more."""
        conn.exchange = None
        if self.pressed:
            self.client.full.release(conn)
            conn.release_client()

    def connect_failed(self, reason) -> None:
        self._fail(502, "{} did not accept the connection".format(self._who()),
                   reason.getErrorMessage() or reason.type.__name__)

    def body_in(self, data: bytes) -> None:
        """Request body bytes from the client, while streaming upstream."""
        part = self._body_part(data)
        if part:
            self.bytes_in += len(part)
            self.conn.sent_body = True
            self.conn.write(part)

    def _body_part(self, data: bytes) -> bytes:
        """The part of C{data} that belongs to the body; the rest goes back to the client's buffer."""
        if self.scanner is None:
            left = self.body_left
            if len(data) < left:
                self.body_left = left - len(data)
                return data
            self.body_left = 0
            self._body_complete(data[left:])
            return data[:left] if len(data) > left else data
        try:
            used = self.scanner.feed(data)
        except ChunkError as e:
            self._refuse_body(400, e.detail)
            return b""
        limit = self.client.relay.max_body
        if limit and self.scanner.payload_bytes > limit:
            self._refuse_body(413, "the request body is larger than the {} bytes wakeproxy accepts".format(limit))
            return b""
        if self.scanner.done:
            self._body_complete(data[used:])
            return data[:used]
        return data

    def _body_complete(self, rest: bytes) -> None:
        self.body_done = True
        self.client.body_finished(rest)
        if self.mode == _MODE_DONE:
            self._end()

    def _refuse_body(self, status: int, detail: str) -> None:
        self._give_up(answers.problem(status, detail))

    def _give_up(self, answer: "answers.Answer") -> None:
        """
        The exchange cannot go on: the upstream connection (if any) is aborted, and the client gets
        C{answer} if nothing was sent yet, else an aborted connection (never a clean-looking truncation).
        """
        conn, self.conn = self.conn, None
        if conn is not None:
            self._detach(conn)
            conn.transport.abortConnection()
        self.close_after = True
        if self.done:
            return
        if self.started:
            self.client.abort()
            self._end()
        else:
            self.answer(answer)

    def response_interim(self, raw: bytes) -> None:
        if self.head.version == "1.1" and not self.gone:
            self.client.write(raw)

    def response_head(self, head, body: bytes = b"") -> bool:
        """
        Write the response head to the client (with C{body}, a whole Content-Length body that came with
        it); True when the body should arrive de-chunked.
        """
        self.waiting = False
        if self.gone:
            return False
        method_head = self.head.method == b"HEAD"
        no_body = method_head or head.status in (204, 304)
        client11 = self.head.version == "1.1"
        if no_body:
            mode, framing = _MODE_PASS, None
            if method_head or head.status == 304:
                framing = b"" if head.length is None else b"Content-Length: %d\r\n" % head.length
        elif head.chunked:
            if client11:
                mode, framing = _MODE_PASS, b"Transfer-Encoding: " + head.coding + b"\r\n"
            else:
                mode, framing = _MODE_PASS, b""
                self.close_after = True
        elif head.length is not None:
            mode, framing = _MODE_PASS, b"Content-Length: %d\r\n" % head.length
        elif client11:
            mode, framing = _MODE_RECHUNK, b"Transfer-Encoding: chunked\r\n"
        else:
            mode, framing = _MODE_PASS, b""
            self.close_after = True
        self.mode = mode
        self._send_head(head, framing or b"", body)
        return head.chunked and not client11 and not no_body

    def _send_head(self, head, framing: bytes, body: bytes) -> None:
        if not self.body_done:
            self.close_after = True  # answered before the whole body was read: this connection ends after it
        self.started = True
        self.status = head.status
        self.bytes_out += len(body)
        self.client.write(response_head(head, self.extra, framing, self.close_after) + body)

    def response_whole(self, head, body: bytes, reusable: bool) -> None:
        """A Content-Length body that came whole with its head (not after HEAD/204/304): one write, done."""
        self.waiting = False
        if not self.gone:
            self._send_head(head, b"Content-Length: %d\r\n" % head.length, body)
        self.mode = _MODE_PASS
        self.response_done(reusable)

    def response_body(self, data: bytes) -> None:
        if self.gone:
            return
        self.bytes_out += len(data)
        if self.mode == _MODE_RECHUNK:
            if data:
                self.client.write(chunk(data))
        else:
            self.client.write(data)

    def response_done(self, reusable: bool) -> None:
        if self.mode == _MODE_RECHUNK and not self.gone:
            self.client.write(b"0\r\n\r\n")
        self.mode = _MODE_DONE
        conn = self.conn
        if not self.body_done:
            # the upstream answered before reading the whole body: neither connection can be reused
            self.close_after = True
            self.body_done = True
            reusable = False
        self.conn = None
        if conn is not None:
            self._detach(conn)
            if reusable:
                conn.pool.release(conn)
            else:
                conn.transport.loseConnection()
        if self.body_done:
            self._end()

    def upstream_broken(self, detail: str) -> None:
        self.conn = None
        self._fail(502, "{} sent a response wakeproxy cannot relay".format(self._who()), detail)

    def upstream_lost(self, conn, reason) -> None:
        if conn is not self.conn:
            return
        self.conn = None
        self._detach(conn)
        if self.tunnel:
            self.client.transport.loseConnection()
            self._end()
            return
        if not self.started and conn.reused and not self.retried and not conn.sent_body and self.head.length == 0 \
                and self.head.method in _IDEMPOTENT:
            self.retried = True  # a stale pooled connection: once more on a fresh one
            self.client.relay.pool.acquire(self.upstream, self, fresh=True)
            return
        self._fail(502, "{} closed the connection before answering".format(self._who()),
                   reason.getErrorMessage() or reason.type.__name__)

    def crashed(self, doing: str) -> None:
        """wakeproxy itself failed (a bug): log it with its traceback, answer 502 or abort, release all."""
        self.client.relay.log.failure("{doing} failed", doing=doing)
        self._give_up(answers.problem(502, "wakeproxy failed while handling this request (its log says why)"))

    def _who(self) -> str:
        """How answers name the upstream: the instance, never its internal address (that goes to the log)."""
        return "instance {}".format(self.instance) if self.instance else "the home site"

    def _fail(self, status: int, detail: str, why: str = "") -> None:
        self.waiting = False
        if self.done or self.gone:
            return
        self.client.relay.log.warn("{detail} (upstream {upstream}{why})", detail=detail, why=": " + why if why else "",
                                   upstream=self.upstream.base.decode() if self.upstream else "?")
        self._give_up(answers.problem(status, detail))

    def timed_out(self) -> None:
        """The upstream did not send a response head within --upstream-timeout."""
        self._fail(504, "{} did not answer within {:g}s".format(self._who(), self.client.relay.timeouts.upstream))

    # tunnels

    def tunnel_open(self, head, rest: bytes) -> None:
        if self.head.upgrade is None:
            self._fail(502, "{} switched protocols (101) unasked".format(self._who()))
            return
        self.waiting = False
        self.tunnel = True
        self.started = True
        self.status = 101
        client = self.client
        client.write(response_head(head, self.extra, b"", False, upgrade=self.head.upgrade))
        if self.head.upgrade.lower() == b"websocket":
            self.scanners = (FrameScanner(), FrameScanner())
        if self.on_tunnel is not None:
            self.on_tunnel(self)
        self.body_done = True
        if rest:
            self.tunnel_upstream_data(rest)
        data = client.take_buffer()
        if data:
            self.tunnel_client_data(data)
        client.resume("wait")

    def tunnel_client_data(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self.scanners is None or self.scanners[0].feed(data):
            if self.on_activity is not None:
                self.on_activity()
        if self.conn is not None:
            self.conn.write(data)

    def tunnel_upstream_data(self, data: bytes) -> None:
        self.bytes_out += len(data)
        if self.scanners is None or self.scanners[1].feed(data):
            if self.on_activity is not None:
                self.on_activity()
        self.client.write(data)

    def tunnel_client_eof(self) -> None:
        conn = self.conn
        if conn is not None:
            _half_close(conn.transport)

    def tunnel_upstream_eof(self) -> None:
        _half_close(self.client.transport)

    def going_away(self) -> None:
        """The instance goes to sleep: a WebSocket client gets close 1001, then both sides close."""
        if self.scanners is not None and self.scanners[1].at_boundary:
            self.client.write(close_frame(1001, b"going away"))
        self.client.transport.loseConnection()
        conn = self.conn
        if conn is not None:
            conn.transport.loseConnection()

    # ends

    def client_gone(self) -> None:
        self.gone = True
        on_gone, self.on_gone = self.on_gone, None
        if on_gone is not None:
            on_gone()
        conn, self.conn = self.conn, None
        if conn is not None:
            self._detach(conn)
            conn.transport.abortConnection() if not self.tunnel else conn.transport.loseConnection()
        self._end()

    def _end(self) -> None:
        if self.done:
            return
        self.done = True
        self.waiting = False
        on_end, self.on_end = self.on_end, None
        if on_end is not None:
            try:
                on_end(self)
            except Exception:
                self.client.relay.log.failure("ending an exchange failed")
        relay = self.client.relay
        if relay.access_log is not None:
            relay.access_log.record(self, relay.clock.seconds())
        self.client.exchange_ended(self)


_MODE_PASS, _MODE_RECHUNK, _MODE_DONE = 1, 2, 3
#: methods a stale pooled connection may be retried for (RFC 9110 section 9.2.2; bodiless requests only)
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"})


def _half_close(transport) -> None:
    """Pass an end of stream on: a half-close on plain TCP, a close otherwise (TLS, UNIX sockets)."""
    if transport is None:
        return
    if isinstance(transport, tcp.Connection):
        transport.loseWriteConnection()
    else:
        transport.loseConnection()
