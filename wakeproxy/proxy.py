# -*- test-case-name: tests.test_relay -*-
"""
The proxy listener's parts, built from the options: the waker, the idle stopper, the dispatcher (which
instance, wake or not, answer or forward), the upstream connection pool and the relay factory that the
listeners serve (L{relay}). Stopping it stops the timers and closes the pooled upstream connections.
"""

from __future__ import annotations

import ipaddress
from typing import Optional

from twisted.application.service import Service
from twisted.logger import Logger
from twisted.internet.ssl import Certificate
from twisted.web.client import BrowserLikePolicyForHTTPS

from wakeproxy.http.access import COOKIE
from wakeproxy.http.accesslog import AccessLog
from wakeproxy.api.deployspec import CreatePolicy
from wakeproxy.http.dispatch import Dispatcher
from wakeproxy.http.gate import ForwardAuthGate, SignedGate
from wakeproxy.waking.idle import IdleStopper
from wakeproxy.waking.peers import CALL_TIMEOUT, Peers, http_caller
from wakeproxy.waking.labels import OWNER
from wakeproxy.metrics import Registry
from wakeproxy.waking.readiness import Prober, ReadinessPlan
from wakeproxy.http.relay import RelayFactory, Timeouts
from wakeproxy.runtime.interface import IContainerRuntime
from wakeproxy.http.upstreampool import UpstreamPool, upstream_from_url
from wakeproxy.waking.waker import WakeFailure, Waker
from wakeproxy.waking.wakepolicy import WakePolicy

__all__ = ["ProxyService"]


class ProxyService(Service):
    """Builds the proxy's parts from the options; stopping it drains the relay, then closes the pool."""

    log = Logger()

    def __init__(self, options, runtime: IContainerRuntime, reactor, metrics: Registry):
        direct = options["upstream"] == "direct"
        tls_policy = None
        if options["upstream-ca"]:
            with open(options["upstream-ca"], "rb") as f:
                tls_policy = BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(f.read()))
        ports = CreatePolicy.from_options(options)  # tenants' ports: the same policy as at create
        allow_ports, own_ports = ports.allow_ports, ports.forbidden_ports
        plan = ReadinessPlan(reactor, Prober(reactor), direct=direct, traefik_api=options["traefik-api"],
                             ready_delay=options["ready-delay"], allow_ports=allow_ports, forbidden_ports=own_ports)
        self.metrics = metrics
        self._drain_timeout = options.get("drain-timeout", 10.0)
        self.waker = Waker(reactor, runtime, plan, wake_timeout=options["wake-timeout"],
                           max_held=options["max-held"], max_held_per_instance=options["max-held-per-instance"],
                           stop_timeout=options["stop-timeout"], wake_rate=options["wake-rate"], metrics=metrics)
        self.idle = IdleStopper(reactor, runtime, self.waker, options["idle-timeout"], peers=_peers(options, reactor))
        self.dispatcher = Dispatcher(
            options["selector"], runtime, self.waker,
            upstream=None if direct else upstream_from_url(options["upstream"]),
            home_url=options["home-url"], max_upstream_per_instance=options["max-upstream-per-instance"],
            policy=WakePolicy(options["no-wake-path"], options["no-wake-user-agent"]),
            loading_page=bool(options["loading-page"]), home_path=options["home-path"],
            home_upstream=upstream_from_url(options["home-upstream"] or options["upstream"])
            if (options["home-upstream"] or not direct) else None,
            idle_tunnel=options["idle-tunnel"], clock=reactor,
            gate=_gate(options, reactor, tls_policy, runtime))
        self.pool = UpstreamPool(reactor, connect_timeout=options["connect-timeout"],
                                 idle_timeout=options["upstream-idle-timeout"], tls_policy=tls_policy)
        self.relay = RelayFactory(
            self.dispatcher, self.pool, reactor,
            Timeouts(options["head-timeout"], options["body-timeout"], options["keepalive-timeout"],
                     options["upstream-timeout"]),
            max_head=options["max-head-bytes"], max_body=options["max-body"],
            trusted=_trust(options["trusted-proxy"]),
            access_log=AccessLog.open(options["access-log"], options.get("access-log-format") or "json")
            if options.get("access-log") else None)

    def activity(self, container) -> dict:
        """What the deploy API shows of an instance's activity (see L{Waker.describe})."""
        doc = self.waker.describe(container.name)
        doc["idle_deadline"] = self.idle.deadline(container)
        return doc

    def startService(self):
        Service.startService(self)
        self.idle.startService()
        self.relay.start()
        self.pool.start()

    def stopService(self):
        """
        Graceful stop (the listeners closed before this): held requests get 503 with Retry-After now,
        exchanges in flight and tunnels get up to C{--drain-timeout} to finish, then the pool closes.
        """
        Service.stopService(self)
        self.idle.stopService()
        held = self.waker.release_held(WakeFailure(503, "wakeproxy is shutting down; try again shortly",
                                                   retry_after=2))
        if held:
            self.log.info("shutting down: {held} held requests answered 503", held=held)
        self.waker.stop()
        self.relay.stop()

        def closed(_):
            self.pool.stop()

        return self.relay.drain(self._drain_timeout).addCallback(closed)


def _gate(options, reactor, tls_policy, runtime):
    """C{--access}: who may use an instance through the proxy (gate.py); None when everyone may."""
    access = options.get("access") or "open"
    if access == "signed":
        def owner_of(name: str):
            container = runtime.get(name)
            return None if container is None else container.labels.get(OWNER, "")

        return SignedGate(options["access-keys"], reactor, options.get("access-cookie") or COOKIE, owner_of)
    if access == "forward-auth":
        from wakeproxy.waking.httpclient import QuietPool, make_agent

        agent = make_agent(reactor, QuietPool(reactor, persistent=True), 5.0, tls_policy)
        return ForwardAuthGate(options["forward-auth-url"], agent, reactor,
                               copy_headers=options.get("forward-auth-headers") or (),
                               cache_seconds=options.get("forward-auth-cache") or 0.0)
    return None


def _peers(options, reactor) -> Optional[Peers]:
    """C{--peer}: the replicas asked before an instance is stopped (None without any)."""
    if not options.get("peer"):
        return None
    from wakeproxy.waking.httpclient import QuietPool, make_agent

    agent = make_agent(reactor, QuietPool(reactor, persistent=False), CALL_TIMEOUT)
    return Peers(options["peer"], http_caller(reactor, agent, options["peer-secret"]),
                 fence_seconds=options["peer-fence-timeout"])


def _trust(networks):
    """C{--trusted-proxy} ranges -> C{trusted(ip)}, or None when there are none."""
    if not networks:
        return None

    def trusted(ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in networks)

    return trusted
