# -*- test-case-name: tests.test_relay -*-
"""
The proxy listener's HTTP/1.1 relay: one L{RelayProtocol} per client connection, one L{Exchange} per request.

A request head is found by its blank line and parsed (L{wire}); the L{Dispatcher} decides what happens to
it (answer it, hold it while its instance wakes, or forward it) and calls back the exchange. Bodies are
never buffered: the request body is read only once an upstream connection is attached and streams to it
with backpressure both ways (each side's transport pauses the other's reading). While a request is held or
connecting, its connection is not read at all (TCP flow control keeps the body in the client's buffers),
so a held upload of any size costs only its head; the sweep peeks at such a connection once a second, so
that a client that resets or closes it while held is dropped (L{sockets.peer_gone}). Requests on one
connection are handled one at a time, so pipelined responses come back in order; bytes of later requests
wait in the buffer (bounded: reading pauses beyond 64 KiB).

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
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from wakeproxy import answers
from wakeproxy.http.exchange import Exchange
from wakeproxy.http.sockets import HalfClose, eager_writer, peer_gone, raw_socket, set_nodelay
from wakeproxy.http.wire import RequestReader, WireError, head_problem

__all__ = ["RelayFactory", "RelayProtocol", "Timeouts"]

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
            exchange.pressed = True
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


@implementer(IHalfCloseableProtocol)
class RelayProtocol(HalfClose, Protocol):
    """One client connection."""

    def __init__(self, relay: "RelayFactory"):
        self.relay = relay
        self.exchange: Optional[Exchange] = None
        self.write = None
        self.peer_ip = "unknown"
        self.scheme = "http"
        self.peer_ip_b = b"unknown"  # the same as ASCII bytes, for each request's forwarding headers
        self.scheme_b = b"http"
        self.trusted = False
        self.ticks = 0
        self.head_age = 0
        self.full = _ClientFull(self)
        self._buf = b""
        self._reader = RequestReader()
        self._searched = 0  # how far the current partial head was searched for its end
        self._paused: set = set()
        self._parsing = False
        self._closed = False

    def connectionMade(self) -> None:
        transport = self.transport
        set_nodelay(raw_socket(transport))
        self.write = eager_writer(transport)
        peer = transport.getPeer()
        self.peer_ip = getattr(peer, "host", None) or "unknown"
        self.scheme = "https" if _is_tls(transport) else "http"
        self.peer_ip_b = self.peer_ip.encode("ascii")
        self.scheme_b = self.scheme.encode("ascii")
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
        if type(buf) is not bytes:
            buf = bytes(buf)  # a head that came in pieces; slices of bytes are bytes
        try:
            head = self._reader.read(buf[:end + 4])
        except WireError as e:
            self._refuse(e.status, e.detail)
            return False
        self._buf = buf[end + 4:]
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
                if self.head_age > timeouts.head and not self._closed:
                    self._refuse(408, "the request head did not arrive within {:g}s".format(timeouts.head))
            elif self.ticks > timeouts.keepalive and not self._closed:
                self._closed = True
                self.transport.loseConnection()
            return
        if exchange.tunnel:
            return
        if exchange.conn is None and "wait" in self._paused and peer_gone(self.transport):
            # held (or queued) with its body unread: a reset or close is only seen by looking
            self.abort()
            return
        if exchange.conn is not None and not exchange.body_done and not self._paused:
            if self.ticks > timeouts.body:
                exchange._refuse_body(408, "no request body bytes arrived for {:g}s".format(timeouts.body))
                return
        if exchange.waiting and exchange.body_done and timeouts.upstream:
            exchange.wait_ticks += 1
            if exchange.wait_ticks > timeouts.upstream:
                exchange.timed_out()

    # ends

    def readConnectionLost(self) -> None:
        exchange = self.exchange
        if exchange is not None and exchange.tunnel:
            exchange.tunnel_client_eof()
            self.read_ended()
            return
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
