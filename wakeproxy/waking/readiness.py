# -*- test-case-name: tests.test_readiness -*-
"""
How wakeproxy tells that a woken app is ready, without waiting on slow timers: probes that start fast
(every 10 ms) and back off to 250 ms, each attempt with its own short timeout.

- L{poll_until}: the loop (cancellable; the waker cancels it on deadline or when the container dies);
- L{http_check}, L{tcp_check}: one attempt each;
- L{route_check}: one attempt at Traefik's C{/api/http/routers/<name>@docker}.
"""

from __future__ import annotations

import json
from typing import Callable, Iterable, Optional, Sequence

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.web.client import HTTPConnectionPool
from twisted.web.http_headers import Headers

from wakeproxy.httpclient import make_agent, read_body
from wakeproxy.waking.labels import DEFAULT_ALLOW_PORTS, Reach, health_check_ignored, health_check_url, reach, router_name
from wakeproxy.runtime.interface import Container

__all__ = ["Prober", "ReadinessPlan", "poll_until"]

FIRST_INTERVAL = 0.010
MAX_INTERVAL = 0.250
BACKOFF = 1.5
FAST_FOR = 3.0
ATTEMPT_TIMEOUT = 2.0

log = Logger()


def poll_until(clock, attempt: Callable[[], Deferred], first: float = FIRST_INTERVAL,
               ceiling: float = MAX_INTERVAL, factor: float = BACKOFF, fast_for: float = FAST_FOR) -> Deferred:
    """
    Call C{attempt()} (a Deferred firing True or False; an error counts as False) until it gives True,
    sleeping C{first} between attempts for the first C{fast_for} seconds, then backing off by C{factor}
    up to C{ceiling}. The result fires with the number of attempts; cancelling it stops the loop and
    cancels an attempt in flight. (Loopback connects to a closed port fail in microseconds, so probing
    every 10 ms costs little and keeps the detection lag near 10 ms for apps that start within seconds.)
    """
    began = clock.seconds()
    state = {"attempts": 0, "pending": None, "call": None, "done": False}

    def cancel(d: Deferred) -> None:
        state["done"] = True
        if state["call"] is not None and state["call"].active():
            state["call"].cancel()
        if state["pending"] is not None:
            state["pending"].cancel()

    result = Deferred(cancel)
    interval = [first]

    def run() -> None:
        state["call"] = None
        state["attempts"] += 1
        try:
            d = attempt()
        except Exception:
            log.failure("readiness attempt raised")
            d = succeed(False)
        state["pending"] = d
        d.addErrback(lambda f: False if not f.check(CancelledError) else None)
        d.addCallback(settle)

    def settle(ok) -> None:
        state["pending"] = None
        if state["done"]:
            return
        if ok:
            state["done"] = True
            result.callback(state["attempts"])
            return
        state["call"] = clock.callLater(interval[0], run)
        if clock.seconds() - began >= fast_for:
            interval[0] = min(interval[0] * factor, ceiling)

    run()
    return result


class _Connected(Protocol):
    def connectionMade(self) -> None:
        self.transport.loseConnection()


_CONNECTED = Factory.forProtocol(_Connected)
_CONNECTED.noisy = False


class Prober:
    """One-attempt checks wakeproxy's readiness loop uses; holds a non-persistent HTTP agent."""

    def __init__(self, reactor, attempt_timeout: float = ATTEMPT_TIMEOUT):
        self._reactor = reactor
        self._timeout = attempt_timeout
        self._agent = make_agent(reactor, HTTPConnectionPool(reactor, persistent=False), attempt_timeout)

    def tcp_check(self, host: str, port: int) -> Deferred:
        """True once something accepts a TCP connection on C{host:port}."""
        endpoint = TCP4ClientEndpoint(self._reactor, host, port, timeout=self._timeout)
        d = endpoint.connect(_CONNECTED)
        d.addCallback(lambda _: True)
        d.addTimeout(self._timeout, self._reactor)
        return d

    def http_check(self, url: str) -> Deferred:
        """True when C{GET url} answers 2xx or 3xx."""
        d = self._agent.request(b"GET", url.encode("utf-8"), Headers({b"user-agent": [b"wakeproxy-probe"]}))

        def check(response) -> Deferred:
            ok = 200 <= response.code < 400
            return read_body(response).addBoth(lambda _: ok)

        d.addCallback(check)
        d.addTimeout(self._timeout, self._reactor)
        return d

    def route_check(self, api: str, router: str) -> Deferred:
        """True when Traefik's API reports the router C{router@docker} and it is enabled."""
        url = "{}/api/http/routers/{}@docker".format(api.rstrip("/"), router)
        d = self._agent.request(b"GET", url.encode("utf-8"))

        def check(response) -> Deferred:
            return read_body(response).addCallback(lambda body: _router_enabled(response.code, body))

        d.addCallback(check)
        d.addTimeout(self._timeout, self._reactor)
        return d


def _router_enabled(code: int, body: bytes) -> bool:
    if code != 200:
        return False
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    status: Optional[str] = doc.get("status") if isinstance(doc, dict) else None
    return status == "enabled"


class ReadinessPlan:
    """
    Which signals say "ready" for a container, by upstream mode:

    - direct mode: wakeproxy's own probe (HTTP on the C{wakeproxy.health-check} label, else a TCP connect
      to the app's port) succeeding while Docker health is not unhealthy, or Docker saying healthy,
      whichever comes first (Docker 20.10 runs the first HEALTHCHECK only after its interval);
    - router mode (C{--upstream URL}): the router (Traefik) only routes to healthy containers, so a
      container with a HEALTHCHECK must be reported healthy by Docker; one without is probed as above;
    - then, with C{--traefik-api}, the router must report the instance's router enabled.

    A tenant's instance (label C{wakeproxy.owner}) is only probed on its own address, at a port it may
    use (C{allow_ports}, C{forbidden_ports}: see L{wakeproxy.waking.labels.port_allowed}) and at a health-check
    I{path}; a URL in its label is ignored (logged), and a port it may not use is not probed at all.
    """

    def __init__(self, clock, prober: Prober, direct: bool = True, traefik_api: Optional[str] = None,
                 ready_delay: float = 0.0, allow_ports: Sequence[tuple[int, int]] = DEFAULT_ALLOW_PORTS,
                 forbidden_ports: Iterable[int] = ()):
        self.clock = clock
        self.direct = direct
        self.ready_delay = ready_delay
        self.allow_ports = tuple(allow_ports)
        self.forbidden_ports = frozenset(forbidden_ports)
        self._prober = prober
        self._traefik_api = traefik_api

    def docker_health_required(self, container: Container) -> bool:
        return not self.direct and container.health != "none"

    def reach(self, container: Container) -> Reach:
        """Where the app listens and may be probed and forwarded to (see L{wakeproxy.waking.labels.reach})."""
        return reach(container, self.allow_ports, self.forbidden_ports)

    def probe(self, container: Container) -> Optional[Deferred]:
        """A running poll that fires once the app answers, or None when there is nothing to probe."""
        where = self.reach(container)
        if where.refused is not None:
            log.warn("not probing {instance}: {why}", instance=container.name, why=where.refused)
            return None
        address = where.address
        ignored = health_check_ignored(container)
        if ignored is not None:
            log.warn("instance {instance}: {why}; ignored, probing its own address instead", instance=container.name,
                     why=ignored)
        url = health_check_url(container, address)
        if url is not None:
            return poll_until(self.clock, lambda: self._prober.http_check(url))
        if address is not None:
            return poll_until(self.clock, lambda: self._prober.tcp_check(*address))
        return None

    def route(self, container: Container) -> Optional[Deferred]:
        if self._traefik_api is None:
            return None
        router = router_name(container)
        return poll_until(self.clock, lambda: self._prober.route_check(self._traefik_api, router))
