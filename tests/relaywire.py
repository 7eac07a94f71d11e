"""
What the relay's wire-level tests share (L{tests.test_relay}, L{tests.test_relay_flow}):

  - L{World}: the relay as the proxy listener builds it (L{Dispatcher}, L{UpstreamPool}, L{RelayFactory}) on
    a C{MemoryReactorClock}, with the in-memory runtime and a real L{Waker} whose readiness probes the test
    fires (L{tests.test_waker.FakePlan}); client ends (L{ClientEnd}) and upstream ends (L{UpstreamEnd}) are
    protocols on C{StringTransport}s, and L{World.settle} plays the reactor's part when a side closes.
  - L{read_responses} / L{read_requests}: a small, strict HTTP/1.1 reader of what each side received,
    written apart from L{wakeproxy.http.wire} so the relay is not checked against itself.
"""

from __future__ import annotations

import json
import re
from typing import Optional

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from tests.test_waker import FakePlan
from wakeproxy.http.dispatch import Dispatcher
from wakeproxy.runtime.memory import MemoryRuntime
from wakeproxy.http.relay import RelayFactory, Timeouts
from wakeproxy.http.selector import parse_selector
from wakeproxy.http.upstreampool import UpstreamPool
from wakeproxy.waking.waker import Waker

__all__ = ["CLOSE", "RESET", "ClientEnd", "Incomplete", "Message", "UpstreamEnd", "World", "chunked",
           "read_requests", "read_responses", "request", "response"]

#: in an upstream script: the upstream closes its connection cleanly / resets it
CLOSE = "<close>"
RESET = "<reset>"

HOST = b"example.test"


def request(line: bytes = b"GET /", *fields: bytes, body: bytes = b"", version: bytes = b"HTTP/1.1",
            host: Optional[bytes] = HOST, cookie: Optional[bytes] = b"instance=app") -> bytes:
    """One request's bytes: C{line} is the method and target; Host and the selecting Cookie come first."""
    lines = [line + b" " + version]
    if host is not None:
        lines.append(b"Host: " + host)
    if cookie is not None:
        lines.append(b"Cookie: " + cookie)
    lines.extend(fields)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def response(status: bytes = b"200 OK", *fields: bytes, body: Optional[bytes] = None,
             version: bytes = b"HTTP/1.1") -> bytes:
    """One response's bytes; with C{body}, a Content-Length for it is added unless C{fields} frame it."""
    lines = [version + b" " + status]
    lines.extend(fields)
    framed = any(f.lower().startswith((b"content-length:", b"transfer-encoding:")) for f in fields)
    if body is not None and not framed:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def chunked(*pieces: bytes, trailers: tuple = ()) -> bytes:
    """A chunked body of C{pieces}, then the last chunk and C{trailers} (field lines)."""
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p)
    return out + b"0\r\n" + b"".join(t + b"\r\n" for t in trailers) + b"\r\n"


class Incomplete(AssertionError):
    """The bytes end inside a message that declared more."""


class Message:
    """One message as read: its start line's three parts, field lines, payload, bytes as framed, trailers."""

    def __init__(self, start: tuple, headers: list, body: bytes = b"", raw: bytes = b"", trailers: tuple = (),
                 complete: bool = True):
        self.start = start
        self.headers = headers
        self.body = body
        self.raw = raw
        self.trailers = trailers
        self.complete = complete

    @property
    def status(self) -> int:
        return int(self.start[1])

    @property
    def method(self) -> bytes:
        return self.start[0]

    @property
    def target(self) -> bytes:
        return self.start[1]

    def values(self, name: bytes) -> list:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header(self, name: bytes) -> Optional[bytes]:
        """The one value of C{name}, or None when absent (AssertionError when repeated)."""
        values = self.values(name)
        if len(values) > 1:
            raise AssertionError("{!r} appears {} times: {!r}".format(name, len(values), values))
        return values[0] if values else None

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        return "<Message {!r} {!r} body={!r}>".format(b" ".join(self.start), self.headers, self.body[:80])


_FIELD = re.compile(rb"^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*$")


def _head(data: bytes, pos: int):
    end = data.find(b"\r\n\r\n", pos)
    if end < 0:
        raise Incomplete("no complete head at {}: {!r}".format(pos, data[pos:pos + 200]))
    lines = data[pos:end].split(b"\r\n")
    start = tuple(lines[0].split(b" ", 2))
    if len(start) == 2:
        start += (b"",)
    headers = []
    for line in lines[1:]:
        match = _FIELD.match(line)
        if match is None:
            raise AssertionError("not a field line: {!r}".format(line))
        headers.append((match.group(1), match.group(2)))
    return start, headers, end + 4


def _chunked(data: bytes, pos: int):
    """Read a chunked body at C{pos}: (payload, raw, trailers, end)."""
    begin = pos
    payload = []
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            raise Incomplete("chunked body ends inside a size line")
        size_text = data[pos:eol].split(b";", 1)[0].strip()
        if not re.fullmatch(rb"[0-9a-fA-F]+", size_text):
            raise AssertionError("bad chunk size line {!r}".format(data[pos:eol]))
        size = int(size_text, 16)
        pos = eol + 2
        if size == 0:
            break
        if len(data) < pos + size + 2:
            payload.append(data[pos:pos + size])
            raise Incomplete("chunked body ends inside a chunk")
        payload.append(data[pos:pos + size])
        if data[pos + size:pos + size + 2] != b"\r\n":
            raise AssertionError("chunk data not followed by CRLF")
        pos += size + 2
    trailers = []
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            raise Incomplete("chunked body ends inside its trailers")
        line = data[pos:eol]
        pos = eol + 2
        if not line:
            break
        trailers.append(line)
    return b"".join(payload), data[begin:pos], tuple(trailers), pos


def _is_chunked(headers) -> bool:
    codings = b",".join(v for k, v in headers if k.lower() == b"transfer-encoding")
    return bool(codings) and codings.split(b",")[-1].strip().lower() == b"chunked"


def _length(headers) -> Optional[int]:
    values = [v for k, v in headers if k.lower() == b"content-length"]
    if not values:
        return None
    if len(values) > 1:
        raise AssertionError("several Content-Length fields: {!r}".format(values))
    return int(values[0])


def _body(data: bytes, pos: int, headers, until_close: bool):
    """(payload, raw, trailers, end, complete) of the body at C{pos}."""
    if _is_chunked(headers):
        try:
            payload, raw, trailers, end = _chunked(data, pos)
        except Incomplete:
            return b"", data[pos:], (), len(data), False
        return payload, raw, trailers, end, True
    length = _length(headers)
    if length is not None:
        raw = data[pos:pos + length]
        return raw, raw, (), pos + len(raw), len(raw) == length
    if until_close:
        return data[pos:], data[pos:], (), len(data), True
    return b"", b"", (), pos, True


def read_responses(data: bytes, methods=()) -> tuple:
    """
    The responses in C{data} (what a client received), with the request methods in order (HEAD changes
    the framing; missing ones are GET). 1xx responses are messages of their own; after a 101 the rest is
    returned as the tunnel's bytes. Return C{(responses, tunnel bytes)}; a truncated last response has
    C{complete} false.
    """
    out = []
    pos = 0
    index = 0
    while pos < len(data):
        start, headers, pos = _head(data, pos)
        status = int(start[1])
        if status == 101:
            out.append(Message(start, headers))
            return out, data[pos:]
        if 100 <= status < 200:
            out.append(Message(start, headers))
            continue
        method = methods[index] if index < len(methods) else b"GET"
        index += 1
        if method == b"HEAD" or status in (204, 304):
            out.append(Message(start, headers))
            continue
        body, raw, trailers, pos, complete = _body(data, pos, headers, until_close=True)
        out.append(Message(start, headers, body, raw, trailers, complete))
        if not complete:
            break
    return out, b""


def read_requests(data: bytes) -> tuple:
    """The requests in C{data} (what an upstream received); after an upgrade request, the rest is returned."""
    out = []
    pos = 0
    while pos < len(data):
        start, headers, pos = _head(data, pos)
        body, raw, trailers, pos, complete = _body(data, pos, headers, until_close=False)
        message = Message(start, headers, body, raw, trailers, complete)
        out.append(message)
        if message.header(b"upgrade") is not None:
            return out, data[pos:]
    return out, b""


def _state(transport: StringTransport) -> str:
    if transport.disconnected:
        return "aborted"
    if transport.disconnecting:
        return "closed"
    return "open"


class _End:
    world: "World"
    transport: StringTransport
    protocol = None

    def __init__(self):
        self.lost = False

    @property
    def state(self) -> str:
        """C{open}, C{closed} (loseConnection) or C{aborted} (abortConnection) by the relay, or C{gone}."""
        return _state(self.transport)

    def received(self) -> bytes:
        return self.transport.value()

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)
        self.world.settle()

    def lose(self, reason=None) -> None:
        """The peer closed (or reset) the connection."""
        if self.lost:
            return
        self.lost = True
        self.transport.connected = False
        self.protocol.connectionLost(Failure(reason or ConnectionDone()))
        self.world.settle()


class ClientEnd(_End):
    """A client connection to the relay."""

    def __init__(self, world: "World", peer: str):
        _End.__init__(self)
        self.world = world
        address = IPv4Address("TCP", peer, 5555)
        self.protocol = world.factory.buildProtocol(address)
        # lenient: a real transport ignores resumeProducing after loseConnection, so may the relay
        self.transport = StringTransport(peerAddress=address, lenient=True)
        self.protocol.makeConnection(self.transport)

    @property
    def paused(self) -> bool:
        return self.transport.producerState == "paused"

    def responses(self, *methods: bytes) -> list:
        return read_responses(self.received(), methods)[0]

    def response(self, method: bytes = b"GET") -> Message:
        """The one response this client received."""
        responses = self.responses(method)
        if len(responses) != 1:
            raise AssertionError("{} responses: {!r}".format(len(responses), self.received()[:500]))
        return responses[0]


class UpstreamEnd(_End):
    """One connection the relay opened to an upstream (C{reactor.connectTCP}), connected."""

    def __init__(self, world: "World", entry: tuple):
        _End.__init__(self)
        self.world = world
        self.host, self.port, self.factory, self.timeout, self.bind = entry
        address = IPv4Address("TCP", self.host, self.port)
        self.protocol = self.factory.buildProtocol(address)
        self.transport = StringTransport(peerAddress=address, lenient=True)
        self.protocol.makeConnection(self.transport)
        world.settle()

    def requests(self) -> list:
        return read_requests(self.received())[0]

    @property
    def bound(self) -> bool:
        """Is an exchange reading its response from this connection?"""
        return getattr(self.protocol, "exchange", None) is not None

    def close(self) -> None:
        self.lose(ConnectionDone())

    def reset(self) -> None:
        self.lose(ConnectionLost())


class World:
    """
    The relay on a C{MemoryReactorClock} (reactor and clock), with one managed instance C{app} (host
    networking, C{wakeproxy.port} 9001) in C{state}, made ready beforehand unless C{ready} is false.
    """

    def __init__(self, state: str = "running", ready: bool = True, labels: Optional[dict] = None,
                 max_body: int = 0, max_head: int = 64 * 1024, trusted=None, timeouts: Optional[Timeouts] = None,
                 max_upstream: int = 64, idle_tunnel: str = "data", wake_timeout: float = 60.0,
                 instance: str = "app"):
        self.reactor = MemoryReactorClock()
        self.runtime = MemoryRuntime()
        if instance is not None:
            self.runtime.add_managed(instance, labels=dict({"wakeproxy.port": "9001"}, **(labels or {})),
                                     state=state)
        self.plan = FakePlan(self.reactor)
        self.waker = Waker(self.reactor, self.runtime, self.plan, wake_timeout=wake_timeout)
        self.reactor.advance(100)  # activity times are never 0 (describe() shows 0 as None)
        if ready and instance is not None:
            self.make_ready(instance)
        self.dispatcher = Dispatcher(parse_selector("cookie:instance"), self.runtime, self.waker,
                                     home_url="/home", max_upstream_per_instance=max_upstream,
                                     idle_tunnel=idle_tunnel, clock=self.reactor)
        self.pool = UpstreamPool(self.reactor)
        self.factory = RelayFactory(self.dispatcher, self.pool, self.reactor, timeouts=timeouts, max_head=max_head,
                                    max_body=max_body, trusted=trusted)
        self.clients: list = []
        self.upstreams: list = []

    def cleanup(self) -> None:
        self.plan.consume()
        self.waker.stop()

    def make_ready(self, name: str = "app") -> None:
        ready = self.waker.wait_ready(name)
        if self.plan.probes and not self.plan.probes[-1].called:
            self.plan.probes[-1].callback(True)
        results = []
        ready.addBoth(results.append)
        if not self.waker.is_ready(name):
            raise AssertionError("{} is not ready: {!r}".format(name, results))

    def client(self, peer: str = "127.0.0.1") -> ClientEnd:
        end = ClientEnd(self, peer)
        self.clients.append(end)
        return end

    @property
    def connects(self) -> int:
        """How many times the relay called C{reactor.connectTCP}."""
        return len(self.reactor.tcpClients)

    def connect(self) -> list:
        """Accept the connections the relay asked for since the last call; return their ends."""
        new = []
        while len(self.upstreams) < len(self.reactor.tcpClients):
            end = UpstreamEnd(self, self.reactor.tcpClients[len(self.upstreams)])
            self.upstreams.append(end)
            new.append(end)
        return new

    def upstream(self) -> UpstreamEnd:
        """The one connection the relay asked for since the last call, accepted."""
        new = self.connect()
        if len(new) != 1:
            raise AssertionError("the relay opened {} upstream connections, not 1".format(len(new)))
        return new[0]

    def tunnel(self, upgrade: bytes, switching: bytes) -> tuple:
        """
        A new client sends the C{upgrade} request, the upstream answers C{switching} (a 101): return
        C{(client, upstream)} with what each received so far cleared.
        """
        client = self.client()
        client.send(upgrade)
        upstream = self.upstream()
        upstream.send(switching)
        if not client.received().startswith(b"HTTP/1.1 101 "):
            raise AssertionError("no 101 for the client: {!r}".format(client.received()[:200]))
        client.transport.clear()
        upstream.transport.clear()
        return client, upstream

    def refuse(self, index: int = -1, reason=None) -> None:
        """The upstream connection attempt C{index} fails."""
        host, port, factory, _, _ = self.reactor.tcpClients[index]
        self.upstreams.append(None)  # never connected
        factory.clientConnectionFailed(self.reactor.connectors[index], Failure(reason or ConnectionRefusedError()))
        self.settle()

    def active(self) -> UpstreamEnd:
        """The upstream connection an exchange is waiting on (the newest one)."""
        self.connect()
        bound = [end for end in self.upstreams if end is not None and end.bound and not end.lost]
        if not bound:
            raise AssertionError("no upstream connection is waiting for a response")
        return bound[-1]

    def sent(self) -> list:
        """Every request the upstreams received, in the order their connections were opened."""
        return [message for end in self.upstreams if end is not None for message in end.requests()]

    def settle(self) -> None:
        """What the reactor does after a loseConnection/abortConnection: connectionLost on that protocol."""
        changed = True
        while changed:
            changed = False
            for end in self.clients + [e for e in self.upstreams if e is not None]:
                if not end.lost and end.transport.disconnecting:
                    end.lost = True
                    end.transport.connected = False
                    reason = ConnectionAborted() if end.transport.disconnected else ConnectionDone()
                    end.protocol.connectionLost(Failure(reason))
                    changed = True

    def tick(self, seconds: int = 1) -> None:
        """C{seconds} of the relay's once-a-second sweep."""
        for _ in range(seconds):
            self.reactor.advance(1)
            self.factory.sweep()
            self.settle()
