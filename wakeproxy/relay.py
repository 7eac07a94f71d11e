# -*- test-case-name: tests.test_relay -*-
"""
The proxy listener's HTTP/1.1 relay: one L{RelayProtocol} per client connection, one L{Exchange} per request.

A request head is found by its blank line and parsed (L{wire}); the L{Dispatcher} decides what happens to
it (answer it, hold it while its instance wakes, or forward it) and calls back the exchange. Bodies are
never buffered: the request body is read only once an upstream connection is attached and streams to it
with backpressure both ways (each side's transport pauses the other's reading). While a request is held or
connecting, its connection is not read at all (TCP flow control keeps the body in the client's buffers),
so a held upload of any size costs only its head. Requests on one connection are handled one at a time,
so pipelined responses come back in order; bytes of later requests wait in the buffer (bounded: reading
pauses beyond 64 KiB).

After an upstream's 101, both directions become a raw relay with half-close (a tunnel); WebSocket frame
headers are scanned so only data frames count as activity (L{wsframes}).

Timeouts run from one sweep a second over all connections (no timer per request): the whole request
head (408), body silence (408, or abort once the response started), idle keep-alive (close), the
upstream's response head (504, only if set). Upstream connect has its own timeout (502).
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol, IProtocolNegotiationFactory, IPushProducer, ISSLTransport
from twisted.internet import tcp
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from . import answers
from .headers import request_head, response_head
from .sockets import eager_writer, raw_socket, set_nodelay
from .wire import ChunkError, ChunkScanner, WireError, chunk, head_problem, parse_request_head
from .wsframes import FrameScanner, close_frame

__all__ = ["Exchange", "RelayFactory", "RelayProtocol", "Timeouts"]

#: bytes of pipelined requests buffered while an exchange is in progress, before reading pauses
PIPELINE_BUFFER = 64 * 1024


class Timeouts:
    """Seconds: whole request head, body silence, idle keep-alive, upstream response head (None: no limit)."""

    __slots__ = ("head", "body", "keepalive", "upstream")

    def __init__(self, head: float = 15, body: float = 60, keepalive: float = 75, upstream: Optional[float] = None):
        self.head = head
        self.body = body
        self.keepalive = keepalive
        self.upstream = upstream


@implementer(IPushProducer)
class _ClientFull:
    """
    Registered once, for the connection's lifetime, on the client's transport: while its write buffer is
    full, the upstream connection of the current exchange is not read (backpressure, response direction).
    """

    __slots__ = ("_protocol", "_paused")

    def __init__(self, protocol: "RelayProtocol"):
        self._protocol = protocol
        self._paused = None

    def pauseProducing(self) -> None:
        exchange = self._protocol.exchange
        conn = exchange.conn if exchange is not None else None
        if conn is not None and conn is not self._paused:
            self.resumeProducing()
            self._paused = conn
            conn.transport.pauseProducing()

    def resumeProducing(self) -> None:
        conn, self._paused = self._paused, None
        if conn is not None and conn.transport is not None:
            conn.transport.resumeProducing()

    def release(self, conn) -> None:
        """C{conn} leaves the exchange: it must read again (back in the pool, or to see its close)."""
        if self._paused is conn:
            self.resumeProducing()

    def stopProducing(self) -> None:
        self.resumeProducing()


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
    slot = False  # holds one of its instance's upstream slots (the dispatcher's)
    # for the access log
    status = None
    bytes_in = 0
    bytes_out = 0
    began = 0.0
    woke = None  # the wake's Server-Timing, when this request had to wake its instance

    def __init__(self, client: "RelayProtocol", head):
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
        head = request_head(self.head, self.uri, client.peer_ip, client.scheme, client.trusted, self.upstream)
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
        conn, self.conn = self.conn, None
        if conn is not None:
            self._detach(conn)
            conn.transport.abortConnection()
        self.close_after = True
        if self.started:
            self.client.abort()
            self._end()
        else:
            self.answer(answers.problem(status, detail))

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
        if not self.body_done:
            self.close_after = True  # answered before the whole body was read: this connection ends after it
        self.started = True
        self.status = head.status
        self.bytes_out += len(body)
        self.client.write(response_head(head, self.extra, framing or b"", self.close_after) + body)
        return head.chunked and not client11 and not no_body

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
            self.answer(answers.problem(502, "wakeproxy failed while handling this request (its log says why)"))

    def _who(self) -> str:
        """How answers name the upstream: the instance, never its internal address (that goes to the log)."""
        return "instance {}".format(self.instance) if self.instance else "the home site"

    def _fail(self, status: int, detail: str, why: str = "") -> None:
        self.waiting = False
        if self.done or self.gone:
            return
        self.client.relay.log.warn("{detail} (upstream {upstream}{why})", detail=detail, why=": " + why if why else "",
                                   upstream=self.upstream.base.decode() if self.upstream else "?")
        conn, self.conn = self.conn, None
        if conn is not None:
            self._detach(conn)
            conn.transport.abortConnection()
        self.close_after = True
        if self.started:
            self.client.abort()
            self._end()
        else:
            self.answer(answers.problem(status, detail))

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
            self.client.transport.write(close_frame(1001, b"going away"))
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


@implementer(IHalfCloseableProtocol)
class RelayProtocol(Protocol):
    """One client connection."""

    def __init__(self, relay: "RelayFactory"):
        self.relay = relay
        self.exchange: Optional[Exchange] = None
        self.write = None
        self.peer_ip = "unknown"
        self.scheme = "http"
        self.trusted = False
        self.ticks = 0
        self.head_age = 0
        self.full = _ClientFull(self)
        self._buf = b""
        self._searched = 0  # how far the current partial head was searched for its end
        self._paused: set = set()
        self._parsing = False
        self._closed = False
        self._read_ended = self._write_ended = False  # half-closes of a tunnel

    def connectionMade(self) -> None:
        transport = self.transport
        set_nodelay(raw_socket(transport))
        self.write = eager_writer(transport)
        peer = transport.getPeer()
        self.peer_ip = getattr(peer, "host", None) or "unknown"
        self.scheme = "https" if _is_tls(transport) else "http"
        self.trusted = self.relay.is_trusted(self.peer_ip)
        self.relay.connections.add(self)
        transport.registerProducer(self.full, True)

    # reading

    def dataReceived(self, data: bytes) -> None:
        self.ticks = 0
        exchange = self.exchange
        if exchange is None:
            if self._buf:
                if type(self._buf) is bytes:
                    self._buf = bytearray(self._buf)  # a head in pieces: append in place, never quadratic
                self._buf += data
            else:
                self._buf = data
            self._next()
        elif exchange.tunnel:
            exchange.tunnel_client_data(data)
        elif exchange.conn is not None and not exchange.body_done:
            exchange.body_in(data)
        else:
            self._buf += data
            if len(self._buf) > PIPELINE_BUFFER:
                self.pause("pipeline")

    def take_buffer(self) -> bytes:
        data, self._buf = self._buf, b""
        return data

    def body_finished(self, rest: bytes) -> None:
        """The request body is complete; C{rest} belongs to later requests."""
        if rest:
            self._buf = rest + self._buf
            if len(self._buf) > PIPELINE_BUFFER:
                self.pause("pipeline")

    def _next(self) -> None:
        """Parse and dispatch buffered requests, one at a time."""
        if self._parsing:
            return
        self._parsing = True
        try:
            while self.exchange is None and self._buf and not self._closed:
                if not self._one():
                    break
        finally:
            self._parsing = False

    def _one(self) -> bool:
        buf = self._buf
        relay = self.relay
        end = buf.find(b"\r\n\r\n", self._searched)
        if end < 0:
            if len(buf) > relay.max_head:
                self._refuse(431, "the request head is larger than {} bytes".format(relay.max_head))
            else:
                # a partial head: refuse garbage (a TLS hello, bare LFs) now rather than at the head timeout;
                # it shows within the first bytes, and looking further would make a trickled head quadratic
                problem = head_problem(bytes(buf[:1024])) if self._searched < 1024 else None
                if problem is not None:
                    self._refuse(problem.status, problem.detail)
                    return False
                self._searched = max(0, len(buf) - 3)
            return False
        self._searched = 0
        if end + 4 > relay.max_head:
            self._refuse(431, "the request head is larger than {} bytes".format(relay.max_head))
            return False
        try:
            head = parse_request_head(bytes(buf[:end + 4]))
        except WireError as e:
            self._refuse(e.status, e.detail)
            return False
        self._buf = bytes(buf[end + 4:])
        self.head_age = 0
        exchange = self.exchange = Exchange(self, head)
        limit = relay.max_body
        if limit and head.length > limit:
            exchange.answer(answers.problem(413, "the request body ({} bytes) is larger than the {} bytes wakeproxy "
                                                 "accepts".format(head.length, limit)))
            return True
        if not exchange.body_done:
            self.pause("wait")  # read the body only once it has somewhere to go
        try:
            relay.dispatcher.dispatch(exchange)
        except Exception:
            # a bug, not bad input: logged once; the client is answered and the slot and activity released
            exchange.crashed("dispatching a request")
        return True

    def _refuse(self, status: int, detail: str) -> None:
        """Bad input before any exchange: answer and close (nothing after it can be trusted)."""
        self._buf = b""
        self.write(answers.problem(status, detail).encode(close=True))
        self._closed = True
        self.transport.loseConnection()

    def exchange_ended(self, exchange: Exchange) -> None:
        if exchange is not self.exchange:
            return
        self.exchange = None
        self.ticks = 0
        if exchange.close_after or exchange.tunnel:
            self._closed = True
            if exchange.tunnel:
                return
            self.transport.loseConnection()
            return
        if self._paused:
            self.resume("pipeline")
            self.resume("wait")
        if self._buf:
            self._next()

    # flow control: one set of reasons; reading pauses while any holds

    def pause(self, reason: str) -> None:
        if not self._paused:
            self.transport.pauseProducing()
        self._paused.add(reason)

    def resume(self, reason: str) -> None:
        paused = self._paused
        if reason in paused:
            paused.discard(reason)
            if not paused and not self._closed:
                self.transport.resumeProducing()

    @property
    def reading(self) -> bool:
        return not self._paused

    def drain(self) -> None:
        """Shutting down: close now if idle, else after the exchange in flight."""
        exchange = self.exchange
        if exchange is None:
            self._closed = True
            self.transport.loseConnection()
        else:
            exchange.close_after = True

    def close_now(self) -> None:
        """The drain deadline passed: WebSocket clients get close 1001, everything is closed."""
        exchange = self.exchange
        if exchange is not None and exchange.tunnel:
            exchange.going_away()
        self._closed = True
        self.transport.abortConnection() if exchange is not None and not exchange.tunnel else \
            self.transport.loseConnection()

    def abort(self) -> None:
        """Response bytes were sent and the rest cannot follow: never a clean-looking truncated response."""
        self._closed = True
        self.transport.abortConnection()

    # timeouts (L{RelayFactory.sweep}, once a second)

    def tick(self) -> None:
        self.ticks += 1
        timeouts = self.relay.timeouts
        exchange = self.exchange
        if exchange is None:
            if self._buf:
                self.head_age += 1
                if self.head_age >= timeouts.head and not self._closed:
                    self._refuse(408, "the request head did not arrive within {:g}s".format(timeouts.head))
            elif self.ticks >= timeouts.keepalive and not self._closed:
                self._closed = True
                self.transport.loseConnection()
            return
        if exchange.tunnel:
            return
        if exchange.conn is not None and not exchange.body_done and not self._paused:
            if self.ticks >= timeouts.body:
                exchange._refuse_body(408, "no request body bytes arrived for {:g}s".format(timeouts.body))
                return
        if exchange.waiting and exchange.body_done and timeouts.upstream:
            exchange.wait_ticks += 1
            if exchange.wait_ticks >= timeouts.upstream:
                exchange.timed_out()

    # ends

    def readConnectionLost(self) -> None:
        exchange = self.exchange
        if exchange is not None and exchange.tunnel:
            exchange.tunnel_client_eof()
            self._read_ended = True
            if self._write_ended:
                self.transport.loseConnection()  # both directions of the tunnel are over
            return
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        self._write_ended = True
        if self._read_ended:
            self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        self._closed = True
        self.relay.connections.discard(self)
        exchange = self.exchange
        if exchange is not None:
            exchange.client_gone()
        self.exchange = None


def _is_tls(transport) -> bool:
    return ISSLTransport.providedBy(transport)


@implementer(IProtocolNegotiationFactory)
class RelayFactory(Factory):
    """The proxy listener's factory: shared settings, the upstream pool, the timeout sweep."""

    log = Logger()
    noisy = False

    def __init__(self, dispatcher, pool, clock, timeouts: Optional[Timeouts] = None, max_head: int = 64 * 1024,
                 max_body: int = 0, trusted=None, access_log=None):
        self.dispatcher = dispatcher
        self.pool = pool
        self.timeouts = timeouts or Timeouts()
        self.max_head = max_head
        self.max_body = max_body
        self._trusted = trusted
        self._trust_cache: dict = {}
        self.connections: set = set()
        self.draining = False
        self.access_log = access_log  # accesslog.AccessLog, or None
        self.clock = self._clock = clock
        self._sweep = LoopingCall(self.sweep)
        self._sweep.clock = clock

    def buildProtocol(self, addr):
        return RelayProtocol(self)

    def acceptableProtocols(self) -> list:
        """ALPN on TLS listeners: HTTP/1.1 only."""
        return [b"http/1.1"]

    def is_trusted(self, ip: str) -> bool:
        if self._trusted is None:
            return False
        known = self._trust_cache.get(ip)
        if known is None:
            if len(self._trust_cache) > 10000:
                self._trust_cache.clear()
            known = self._trust_cache[ip] = self._trusted(ip)
        return known

    def start(self) -> None:
        self._sweep.start(1.0, now=False)

    def stop(self) -> None:
        if self._sweep.running:
            self._sweep.stop()

    def drain(self, timeout: float) -> Deferred:
        """
        Shutting down (the listeners are closed already): idle connections close now, exchanges in flight
        and tunnels get up to C{timeout} seconds to finish (their connections close after them), then the
        rest is aborted. Fires when no client connection is left.
        """
        self.draining = True
        for protocol in list(self.connections):
            protocol.drain()
        done = Deferred()
        deadline = self._clock.seconds() + timeout

        def check() -> None:
            if not self.connections:
                done.callback(None)
            elif self._clock.seconds() >= deadline:
                self.log.info("drain: {count} connections still busy after {timeout:g}s: closed",
                              count=len(self.connections), timeout=timeout)
                for protocol in list(self.connections):
                    protocol.close_now()
                done.callback(None)
            else:
                self._clock.callLater(0.05, check)

        check()
        return done

    def sweep(self) -> None:
        for protocol in list(self.connections):
            protocol.tick()
