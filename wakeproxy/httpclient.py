# -*- test-case-name: tests.test_httpclient -*-
"""
What wakeproxy's twisted.web HTTP clients (the readiness prober, the forward-auth gate) share, on
Twisted's public API only:

- L{make_agent}: an C{Agent} that dials IPv4 literals directly and keeps its connection factories quiet.
  Twisted's default C{HostnameEndpoint} reports a refused connection only on its next 0.3 s attempt tick,
  which would make every failed probe of a booting app cost 300 ms instead of microseconds.
- L{read_body}: a response's body, capped. (Not C{twisted.web.client.readBody}: it warns on every Agent
  response, whose transport has no C{abortConnection} — Twisted #8227 — and cancelling it aborts the
  connection, then fires its Deferred a second time if the body completes in the same turn.)
"""

from __future__ import annotations

import ipaddress
from typing import Optional

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, ResponseDone
from twisted.web.error import SchemeNotSupported
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

__all__ = ["BodyTooLarge", "MAX_BODY", "make_agent", "read_body"]

#: the most of a body L{read_body} holds (a probe's page, Traefik's router document, a denial page).
MAX_BODY = 1 << 20


def _ipv4(host: bytes) -> bool:
    try:
        ipaddress.IPv4Address(host.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return False
    return True


@implementer(IStreamClientEndpoint)
class _Quiet:
    """An endpoint whose factories do not log "Starting factory" for every connection the pool opens."""

    def __init__(self, endpoint):
        self._endpoint = endpoint

    def connect(self, factory) -> Deferred:
        factory.noisy = False
        return self._endpoint.connect(factory)


@implementer(IAgentEndpointFactory)
class _DirectEndpointFactory:
    def __init__(self, reactor, tls_policy: IPolicyForHTTPS, connect_timeout: float):
        self._reactor = reactor
        self._tls_policy = tls_policy
        self._timeout = connect_timeout

    def endpointForURI(self, uri):
        if uri.scheme not in (b"http", b"https"):
            raise SchemeNotSupported("unsupported scheme: {!r}".format(uri.scheme))
        if uri.scheme == b"http" and _ipv4(uri.host):
            return _Quiet(TCP4ClientEndpoint(self._reactor, uri.host.decode("ascii"), uri.port,
                                             timeout=self._timeout))
        try:
            host = uri.host.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("the host of {!r} is not ASCII".format(uri.toBytes()))
        endpoint = HostnameEndpoint(self._reactor, host, uri.port, timeout=self._timeout)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(self._tls_policy.creatorForNetloc(uri.host, uri.port), endpoint)
        return _Quiet(endpoint)


def make_agent(reactor, pool: HTTPConnectionPool, connect_timeout: float,
               tls_policy: Optional[IPolicyForHTTPS] = None) -> Agent:
    factory = _DirectEndpointFactory(reactor, tls_policy or BrowserLikePolicyForHTTPS(), connect_timeout)
    return Agent.usingEndpointFactory(reactor, factory, pool=pool)


class BodyTooLarge(Exception):
    """A response body longer than L{read_body}'s limit (the connection is closed)."""


class _Collect(Protocol):
    def __init__(self, done: Deferred, limit: int):
        self._done = done
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        if self._done.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._done.errback(BodyTooLarge("more than {} bytes".format(self._limit)))
            self.transport.stopProducing()
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure) -> None:
        if self._done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self._done.callback(b"".join(self._parts))
        else:
            self._done.errback(reason)


def read_body(response, limit: int = MAX_BODY) -> Deferred:
    """
    Fire with C{response}'s body (a close-delimited one too), or fail with the connection's error or
    L{BodyTooLarge}. Cancelling the Deferred leaves the read alone (the body is drained and dropped).
    """
    done = Deferred()
    response.deliverBody(_Collect(done, limit))
    return done
