# -*- test-case-name: tests.test_forwarder -*-
"""
Forwarding one request upstream and streaming the response back, behind a small interface
(L{IForwarder}) so a faster forwarder can replace this one without touching the waker.

L{AgentForwarder} uses a pooled persistent twisted.web Agent. The response body is streamed with
backpressure: the upstream transport is registered as a streaming producer on the client request, so a
slow client pauses the upstream read. A client that goes away stops the upstream transfer; an upstream
that fails mid-body aborts the client connection (never a clean-looking truncated response).
Request bodies arrive buffered by twisted.web (in memory, or a temp file beyond 100 KB) and are streamed
upstream from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectError, ConnectionRefusedError, DNSLookupError, TimeoutError
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.client import (
    BrowserLikePolicyForHTTPS,
    FileBodyProducer,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH
from zope.interface import Interface, implementer

from .headers import request_headers, response_headers
from .httpclient import QuietPool, make_agent
from .problem import write_problem

__all__ = ["AgentForwarder", "IForwarder", "Upstream"]

VIA = b"wakeproxy"


@dataclass(frozen=True)
class Upstream:
    """Where to send a request: C{scheme://host:port}."""

    scheme: str
    host: str
    port: int

    @property
    def base(self) -> bytes:
        host = "[{}]".format(self.host) if ":" in self.host else self.host
        return "{}://{}:{}".format(self.scheme, host, self.port).encode("ascii")


class IForwarder(Interface):
    def forward(request, upstream: Upstream, uri: bytes, extra_headers: Sequence[tuple[bytes, bytes]] = ()):
        """
        Send C{request} (a twisted.web request whose body has been received) to C{upstream} with target
        C{uri}, and stream the response to the client, adding C{extra_headers}. The Deferred fires when
        the exchange is over (whatever its outcome: errors are answered, never raised).
        """


class _Relay(Protocol):
    """Streams an upstream response body into the client request."""

    def __init__(self, request, done: Deferred):
        self.request = request
        self.done = done
        self.client_gone = False
        self.bytes = 0

    def connectionMade(self) -> None:
        if self.client_gone:
            self.transport.stopProducing()
            return
        self.request.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes) -> None:
        if not self.client_gone:
            self.bytes += len(data)
            self.request.write(data)

    def connectionLost(self, reason) -> None:
        if not self.client_gone:
            self.request.unregisterProducer()
            if reason.check(ResponseDone, PotentialDataLoss):
                self.request.finish()
            else:
                # The upstream broke mid-body: the client must not mistake this for a complete response.
                _abort(self.request)
        self.done.callback(self.bytes)

    def stop(self) -> None:
        """The client went away: stop reading the upstream (closes that connection)."""
        self.client_gone = True
        if self.transport is not None:
            self.transport.stopProducing()


@implementer(IForwarder)
class AgentForwarder:
    log = Logger()

    def __init__(self, reactor, max_per_host: int = 64, cached_timeout: float = 30.0,
                 connect_timeout: float = 5.0, tls_policy: Optional[BrowserLikePolicyForHTTPS] = None):
        self._reactor = reactor
        self.pool = QuietPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = max_per_host
        self.pool.cachedConnectionTimeout = cached_timeout
        self.pool.retryAutomatically = True
        self._agent = make_agent(reactor, self.pool, connect_timeout, tls_policy)

    def close(self) -> Deferred:
        return self.pool.closeCachedConnections()

    def forward(self, request, upstream: Upstream, uri: bytes,
                extra_headers: Sequence[tuple[bytes, bytes]] = ()) -> Deferred:
        done = Deferred()
        state = {"relay": None, "gone": False}
        peer = request.getClientAddress()
        client_ip = getattr(peer, "host", "unknown")
        proto = "https" if request.isSecure() else "http"
        headers = Headers()
        for name, value in request_headers(_pairs(request.requestHeaders), client_ip, proto, VIA):
            if name.lower() != b"content-length":
                headers.addRawHeader(name, value)
        body = _body_producer(request)
        d = self._agent.request(request.method, upstream.base + uri, headers, body)

        def client_gone(_failure) -> None:
            state["gone"] = True
            relay = state["relay"]
            if relay is not None:
                relay.stop()
            elif not d.called:
                d.cancel()

        request.notifyFinish().addErrback(client_gone)

        def respond(response) -> Deferred:
            if state["gone"]:
                response.deliverBody(_Discard())
                return None
            request.setResponseCode(response.code, response.phrase)
            out = request.responseHeaders
            for name, _ in list(out.getAllRawHeaders()):
                out.removeHeader(name)
            for name, value in response_headers(_pairs(response.headers), VIA):
                out.addRawHeader(name, value)
            for name, value in extra_headers:
                out.addRawHeader(name, value)
            if request.method == b"HEAD":
                length = response.headers.getRawHeaders(b"content-length")
                if length:
                    out.setRawHeaders(b"content-length", length[-1:])
            elif response.length is not UNKNOWN_LENGTH:
                out.setRawHeaders(b"content-length", [str(response.length).encode("ascii")])
            request.defaultContentType = None
            relayed = Deferred()
            relay = state["relay"] = _Relay(request, relayed)
            response.deliverBody(relay)
            return relayed

        def failed(failure) -> None:
            if state["gone"] or failure.check(CancelledError):
                return
            if request.startedWriting:
                _abort(request)
                return
            if failure.check(ConnectionRefusedError, ConnectError, DNSLookupError, TimeoutError):
                detail = "the upstream at {} did not accept the connection ({})".format(
                    upstream.base.decode(), failure.getErrorMessage() or failure.type.__name__)
                self.log.warn("{detail}", detail=detail)
            elif failure.check(ResponseNeverReceived, ResponseFailed, RequestTransmissionFailed):
                detail = "the upstream at {} failed: {}".format(upstream.base.decode(), _reasons(failure))
                self.log.warn("{detail}", detail=detail)
            else:
                self.log.failure("forwarding to {upstream} failed", failure, upstream=upstream.base.decode())
                detail = "the upstream at {} failed: {}".format(upstream.base.decode(),
                                                                failure.getErrorMessage() or failure.type.__name__)
            write_problem(request, 502, detail)

        d.addCallback(respond)
        d.addErrback(failed)
        d.addBoth(lambda _: done.callback(None))
        return done


class _Discard(Protocol):
    def connectionMade(self) -> None:
        self.transport.stopProducing()


def _reasons(failure) -> str:
    """The underlying errors of a twisted.web client failure, as one line."""
    reasons = getattr(failure.value, "reasons", None) or [failure]
    return "; ".join(str(r.value) or r.type.__name__ for r in reasons)


def _abort(request) -> None:
    channel = request.channel
    if channel is not None and channel.transport is not None:
        channel.transport.abortConnection()


def _pairs(headers: Headers) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, values in headers.getAllRawHeaders() for value in values]


def _body_producer(request) -> Optional[FileBodyProducer]:
    content = request.content
    if content is None:
        return None
    content.seek(0, 2)
    length = content.tell()
    content.seek(0, 0)
    has_body = length > 0 or request.requestHeaders.hasHeader(b"content-length") or \
        request.requestHeaders.hasHeader(b"transfer-encoding")
    if not has_body:
        return None
    return FileBodyProducer(content, readSize=65536)
