# -*- test-case-name: tests.test_tap -*-
"""
The proxy listener's lifetime (its parts are built by L{wakeproxy.tap.makeService}): starting runs the
relay's timeout sweep and the upstream pool's; stopping, after the listeners have closed, answers held
requests 503, lets exchanges in flight and tunnels drain, then closes the pooled upstream connections.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from wakeproxy.http.relay import RelayFactory
from wakeproxy.http.upstreampool import UpstreamPool
from wakeproxy.waking.waker import WakeFailure, Waker

__all__ = ["ProxyService"]


class ProxyService(Service):
    """Starts the relay and the pool; stopping drains the relay (at most C{drain_timeout}), then closes the pool."""

    log = Logger()

    def __init__(self, relay: RelayFactory, pool: UpstreamPool, waker: Waker, drain_timeout: float = 10.0):
        self.relay = relay
        self.pool = pool
        self.waker = waker
        self.drain_timeout = drain_timeout

    def startService(self) -> None:
        Service.startService(self)
        self.relay.start()
        self.pool.start()

    def stopService(self) -> Deferred:
        """
        Graceful stop (the listeners closed before this): held requests get 503 with Retry-After now,
        exchanges in flight and tunnels get up to C{--drain-timeout} to finish, then the pool closes.
        """
        Service.stopService(self)
        held = self.waker.release_held(WakeFailure(503, "wakeproxy is shutting down; try again shortly",
                                                   retry_after=2))
        if held:
            self.log.info("shutting down: {held} held requests answered 503", held=held)
        self.waker.stop()
        self.relay.stop()

        def closed(_):
            self.pool.stop()

        return self.relay.drain(self.drain_timeout).addCallback(closed)
