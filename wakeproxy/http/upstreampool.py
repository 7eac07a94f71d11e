# -*- test-case-name: tests.test_relay -*-
"""
Upstream connections for the relay: a keep-alive pool per upstream, and the protocol that reads one
response at a time off a pooled connection.

L{UpstreamConnection} finds the response head, parses it (L{wire.parse_response_head}) and frames the body
itself (Content-Length, chunked, or until close; none after HEAD, 1xx, 204, 304), passing the body bytes to
its exchange untouched (chunk framing and trailers included) unless the exchange asks for the payload
only. Interim responses (100, 103) are passed on as they come; a 101 turns the connection into a tunnel.

L{UpstreamPool} hands out an idle connection for an upstream (C{scheme, host, port}) or connects a new one
(TCP, or TLS verified by the pool's policy; C{--upstream-ca}), keeps at most C{max_idle} idle connections
per upstream and closes those idle for longer than C{idle_timeout} seconds.
"""

from __future__ import annotations

from typing import NamedTuple, Optional
from urllib.parse import urlsplit

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web.client import BrowserLikePolicyForHTTPS
from zope.interface import implementer

from wakeproxy.http.chunked import ChunkScanner
from wakeproxy.http.sockets import HalfClose, eager_writer, quickack, raw_socket, set_nodelay
from wakeproxy.http.wire import WireError, parse_response_head

__all__ = ["Upstream", "UpstreamConnection", "UpstreamPool", "upstream_from_url"]

class Upstream(NamedTuple):
    """Where to send a request: C{scheme://host:port} (a tuple: the pool's cheap dictionary key)."""

    scheme: str
    host: str
    port: int

    @property
    def base(self) -> bytes:
        host = "[{}]".format(self.host) if ":" in self.host else self.host
        return "{}://{}:{}".format(self.scheme, host, self.port).encode("ascii")


def upstream_from_url(url: str) -> Upstream:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Upstream(parts.scheme, parts.hostname or "", port)


_HEAD, _LENGTH, _CHUNKED, _UNTIL_CLOSE, _TUNNEL, _DONE = range(6)
_MAX_RESPONSE_HEAD = 64 * 1024


@implementer(IHalfCloseableProtocol, IPushProducer)
class UpstreamConnection(HalfClose, Protocol):
    """One connection to an upstream; bound to at most one exchange at a time."""

    def __init__(self, pool: "UpstreamPool", upstream):
        self.pool = pool
        self.upstream = upstream
        self.exchange = None
        self._paused_client = None
        self.on_made = None
        self.reused = False
        self.idle_since = 0.0
        self.write = None
        self.sent_body = False
        self._sock = None
        self._buf = b""
        self._state = _DONE
        self._left = 0
        self._scanner: Optional[ChunkScanner] = None
        self._decode = False
        self._head_request = False
        self._keep_alive = True

    def connectionMade(self) -> None:
        self._sock = raw_socket(self.transport)
        set_nodelay(self._sock)
        self.write = eager_writer(self.transport)
        self.transport.registerProducer(self, True)  # for its lifetime: see pauseProducing
        if self.on_made is not None:
            made, self.on_made = self.on_made, None
            made(self)

    def expect(self, head_request: bool) -> None:
        """A request is on its way: read its response (no body after a HEAD request)."""
        self._state = _HEAD
        self._buf = b""
        self._head_request = head_request
        self.sent_body = False

    # While this connection's write buffer is full, the current exchange's client is not read
    # (backpressure, request direction). Registered once as the transport's producer.

    def pauseProducing(self) -> None:
        exchange = self.exchange
        if exchange is not None and self._paused_client is None:
            self._paused_client = exchange.client
            exchange.pressed = True
            exchange.client.pause("upstream")

    def resumeProducing(self) -> None:
        self.release_client()

    def stopProducing(self) -> None:
        self.release_client()

    def release_client(self) -> None:
        client, self._paused_client = self._paused_client, None
        if client is not None:
            client.resume("upstream")

    def dataReceived(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            self.transport.loseConnection()  # bytes nobody asked for: the connection is out of step
            return
        state = self._state
        try:
            if state == _HEAD:
                self._head(data)
            elif state == _LENGTH:
                self._length(data)
            elif state == _TUNNEL:
                exchange.tunnel_upstream_data(data)
            elif state == _CHUNKED:
                self._chunked(data)
            elif state == _UNTIL_CLOSE:
                exchange.response_body(data)
            else:
                self.transport.loseConnection()
        except Exception:
            self._state = _DONE
            exchange.crashed("relaying a response")
            return
        if self._state != _DONE:
            # More of this response is due. An app that wrote its head and body separately waits for our
            # ACK of the head before sending the body (Nagle); acknowledge now, not after the delayed-ACK
            # timer (~40 ms). Setting TCP_QUICKACK sends a pending ACK at once; Linux clears it by itself.
            quickack(self._sock)

    def _length(self, data: bytes) -> None:
        left = self._left
        if len(data) < left:
            self._left = left - len(data)
            self.exchange.response_body(data)
            return
        self.exchange.response_body(data[:left] if len(data) > left else data)
        self._finish(len(data) == left)

    def _head(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_RESPONSE_HEAD:
                    self._broken("the upstream's response head is longer than {} bytes".format(_MAX_RESPONSE_HEAD))
                else:
                    self._buf = buf
                return
            raw, buf = buf[:end + 4], buf[end + 4:]
            try:
                head = parse_response_head(raw)
            except WireError as e:
                self._broken(e.detail)
                return
            status = head.status
            if status >= 200:
                break
            if status == 101:
                self._state = _TUNNEL
                self._buf = b""
                self.exchange.tunnel_open(head, buf)
                return
            self.exchange.response_interim(raw)
            if self.exchange is None:
                return
        if self._buf:
            self._buf = b""
        length = head.length  # None when chunked
        if length is not None and 0 < length <= len(buf) and status != 204 and status != 304 \
                and not self._head_request:
            # the whole body came with the head (the common small response): one write to the client, and
            # the exchange ends at once
            self._state = _DONE
            whole = len(buf) == length
            self.exchange.response_whole(head, buf if whole else buf[:length], whole and head.keep_alive)
            return
        self._keep_alive = head.keep_alive
        self._decode = self.exchange.response_head(head)
        if self.exchange is None:
            return
        if self._head_request or status in (204, 304):
            self._finish(not buf)
        elif head.chunked:
            self._state = _CHUNKED
            self._scanner = ChunkScanner(decode=self._decode)
            if buf:
                self._chunked(buf)
        elif head.length is not None:
            self._state = _LENGTH
            self._left = head.length
            if head.length == 0:
                self._finish(not buf)
            elif buf:
                self._length(buf)
        else:
            self._state = _UNTIL_CLOSE
            self._keep_alive = False
            if buf:
                self.exchange.response_body(buf)

    def _chunked(self, data: bytes) -> None:
        scanner = self._scanner
        try:
            used = scanner.feed(data)
        except WireError as e:
            self._broken(e.detail)
            return
        if self._decode:
            for piece in scanner.payload:
                self.exchange.response_body(piece)
            scanner.payload.clear()
        else:
            self.exchange.response_body(data if used == len(data) else data[:used])
        if scanner.done:
            self._finish(used == len(data))

    def _finish(self, clean: bool) -> None:
        self._state = _DONE
        self._scanner = None
        exchange = self.exchange
        exchange.response_done(clean and self._keep_alive)

    def _broken(self, detail: str) -> None:
        self._state = _DONE
        exchange = self.exchange
        self.transport.abortConnection()
        if exchange is not None:
            exchange.upstream_broken(detail)

    def readConnectionLost(self) -> None:
        if self._state == _TUNNEL and self.exchange is not None:
            self.exchange.tunnel_upstream_eof()
            self.read_ended()
        else:
            self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        self.pool.forget(self)
        exchange = self.exchange
        if exchange is None:
            return
        if self._state == _UNTIL_CLOSE and reason.check(ConnectionDone):
            self._state = _DONE
            exchange.response_done(False)
        elif self._state != _DONE or exchange.conn is self:
            exchange.upstream_lost(self, reason)


class _ConnectFactory(ClientFactory):
    noisy = False

    def __init__(self, pool: "UpstreamPool", upstream, exchange):
        self.pool = pool
        self.upstream = upstream
        self.exchange = exchange

    def buildProtocol(self, addr):
        conn = UpstreamConnection(self.pool, self.upstream)
        conn.on_made = self._made
        return conn

    def _made(self, conn: UpstreamConnection) -> None:
        """Connected: hand the connection to the exchange that asked for it (or to the pool if it left)."""
        exchange, self.exchange = self.exchange, None
        if exchange is None or exchange.gone:
            self.pool.release(conn)
        else:
            exchange.attached(conn)

    def clientConnectionFailed(self, connector, reason) -> None:
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.connect_failed(reason)


class UpstreamPool:
    log = Logger()

    def __init__(self, reactor, connect_timeout: float = 5.0, idle_timeout: float = 30.0, max_idle: int = 256,
                 tls_policy: Optional[BrowserLikePolicyForHTTPS] = None):
        self._reactor = reactor
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self._tls = tls_policy or BrowserLikePolicyForHTTPS()
        self._idle: dict = {}
        #: the time, refreshed by the sweep: idle stamps need no better than its period
        self._now = reactor.seconds()
        self._sweep = LoopingCall(self.close_idle)
        self._sweep.clock = reactor

    def start(self) -> None:
        self._sweep.start(min(5.0, self.idle_timeout), now=False)

    def stop(self) -> None:
        if self._sweep.running:
            self._sweep.stop()
        for conns in list(self._idle.values()):
            for conn in conns:
                conn.transport.loseConnection()
        self._idle.clear()

    def acquire(self, upstream, exchange, fresh: bool = False) -> None:
        """Give C{exchange} a connection: C{exchange.attached(conn)} now or later, or C{connect_failed}."""
        if not fresh:
            idle = self._idle.get(upstream)
            while idle:
                conn = idle.pop()
                if conn.transport.connected and not conn.transport.disconnecting:
                    conn.reused = True
                    exchange.attached(conn)
                    return
        factory = _ConnectFactory(self, upstream, exchange)
        if upstream.scheme == "https":
            creator = self._tls.creatorForNetloc(upstream.host.encode("idna"), upstream.port)
            factory = TLSMemoryBIOFactory(creator, True, factory)
        self._reactor.connectTCP(upstream.host, upstream.port, factory, timeout=self.connect_timeout)

    def release(self, conn: UpstreamConnection) -> None:
        conn.exchange = None
        transport = conn.transport
        if transport is None or not transport.connected or transport.disconnecting:
            return
        idle = self._idle.setdefault(conn.upstream, [])
        if len(idle) >= self.max_idle:
            transport.loseConnection()
            return
        conn.idle_since = self._now  # with no exchange, any byte that arrives closes it (out of step)
        idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        idle = self._idle.get(conn.upstream)
        if idle and conn in idle:
            idle.remove(conn)

    def close_idle(self, older_than: Optional[float] = None) -> None:
        self._now = self._reactor.seconds()
        limit = self._now - (self.idle_timeout if older_than is None else older_than)
        for conns in list(self._idle.values()):
            for conn in [c for c in conns if c.idle_since <= limit]:
                conns.remove(conn)
                conn.transport.loseConnection()

    def idle_count(self) -> int:
        return sum(len(c) for c in self._idle.values())
