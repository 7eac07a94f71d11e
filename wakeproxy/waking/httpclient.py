# -*- test-case-name: tests.test_readiness -*-
"""
What wakeproxy's twisted.web HTTP clients (the readiness prober's Agent) share: a quiet
connection pool and an Agent that dials IPv4 literals directly. Twisted's default HostnameEndpoint
reports a refused connection only on its next 0.3 s attempt tick, which would make every failed probe
of a booting app cost 300 ms instead of microseconds.
"""

from __future__ import annotations

import ipaddress
from typing import Optional

from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.client import _StandardEndpointFactory
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

__all__ = ["QuietPool", "make_agent"]


class _QuietClientFactory(_HTTP11ClientFactory):
    noisy = False


class QuietPool(HTTPConnectionPool):
    """A connection pool that does not log every connection it opens and closes."""

    _factory = _QuietClientFactory


def _ipv4(host: bytes) -> bool:
    try:
        ipaddress.IPv4Address(host.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return False
    return True


@implementer(IAgentEndpointFactory)
class _DirectEndpointFactory:
    def __init__(self, reactor, tls_policy, connect_timeout: float):
        self._reactor = reactor
        self._timeout = connect_timeout
        self._standard = _StandardEndpointFactory(reactor, tls_policy, connect_timeout, None)

    def endpointForURI(self, uri):
        if uri.scheme == b"http" and _ipv4(uri.host):
            return TCP4ClientEndpoint(self._reactor, uri.host.decode("ascii"), uri.port, timeout=self._timeout)
        return self._standard.endpointForURI(uri)


def make_agent(reactor, pool: HTTPConnectionPool, connect_timeout: float,
               tls_policy: Optional[BrowserLikePolicyForHTTPS] = None) -> Agent:
    factory = _DirectEndpointFactory(reactor, tls_policy or BrowserLikePolicyForHTTPS(), connect_timeout)
    return Agent.usingEndpointFactory(reactor, factory, pool=pool)
