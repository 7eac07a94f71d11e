# -*- test-case-name: tests.test_waker -*-
"""
One wake of one instance, as a sequence: its dependencies first (and, without waiting, the rest of its
group), then start or unpause, readiness (wakeproxy's probe or Docker's health), then the route check.

L{Wake} is the record of a wake under way (its phase, deadline timer, pending readiness verdict and
route check); the waker settles or fails those from snapshot changes. L{WakeSequence.run} drives one
wake and fires with a L{WakeReport}. Whether a wake runs at all, and what its end does, is the waker's
state table's business (L{wakeproxy.waking.states}).
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger

from wakeproxy.runtime.interface import Container, IContainerRuntime
from wakeproxy.waking.labels import depends_on, group
from wakeproxy.waking.outcomes import WakeFailure, WakeReport, exited, no_such_instance
from wakeproxy.waking.readiness import ReadinessPlan

__all__ = ["Wake", "WakeSequence"]


class Wake:
    """A wake under way: what the waker needs to time it out, report its phase and end it early."""

    def __init__(self, name: str, began: float):
        self.name = name
        self.began = began
        self.phase = "start"
        #: the deadline (an IDelayedCall), and the running sequence (cancelled at the deadline)
        self.timer = None
        self.running: Optional[Deferred] = None
        #: the pending readiness decision, settled by a probe or by a snapshot change
        self.verdict: Optional[Deferred] = None
        #: the pending route check, failed by a snapshot change if the container goes away
        self.gate: Optional[Deferred] = None
        #: False after an unpause: health checks fail while a container is frozen, so Docker's health is stale
        self.trust_health = True

    def healthy(self) -> None:
        """Docker says healthy: the readiness phase is over."""
        if self.verdict is not None:
            _settle(self.verdict)

    def unhealthy(self) -> None:
        """Docker says unhealthy: the readiness phase fails (unless Docker's health is stale, see above)."""
        if self.trust_health and self.verdict is not None and not self.verdict.called:
            self.verdict.errback(WakeFailure(
                503, "instance {} turned unhealthy while it was starting".format(self.name), phase="health"))

    def exited(self, container: Optional[Container]) -> None:
        """The container stopped or was removed: the readiness or route phase fails at once."""
        for pending in (self.verdict, self.gate):
            if pending is not None and not pending.called:
                pending.errback(exited(self.name, container, "while it was starting", self.phase))

    def stop(self) -> None:
        """Cancel the deadline and the running sequence (its end is then no longer this wake's)."""
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        if self.running is not None and not self.running.called:
            self.running.cancel()


class WakeSequence:
    """Runs wakes against a runtime and a readiness plan; C{wait_ready} is the waker's (dependencies, groups)."""

    log = Logger()

    def __init__(self, clock, runtime: IContainerRuntime, plan: ReadinessPlan,
                 wait_ready: Callable[[str], Deferred]):
        self._clock = clock
        self._runtime = runtime
        self._plan = plan
        self._wait_ready = wait_ready

    def run(self, wake: Wake) -> Deferred:
        """Drive C{wake}; fires with a L{WakeReport}. It may re-enter C{wait_ready} before returning."""
        wake.running = Deferred.fromCoroutine(self._run(wake))
        return wake.running

    async def _run(self, wake: Wake) -> WakeReport:
        name = wake.name
        began = phase_began = self._clock.seconds()
        phases: dict[str, float] = {}
        container = self._runtime.get(name)
        if container is None:
            raise no_such_instance(name)
        self._wake_group(container)
        needs = depends_on(container, self._runtime.get)
        if needs:
            wake.phase = "dependencies"
            for dependency in needs:
                try:
                    await self._wait_ready(dependency)
                except WakeFailure as e:
                    raise WakeFailure(e.status if e.status != 404 else 502, "dependency {} of {}: {}".format(
                        dependency, name, e.detail), phase="dependencies", retry_after=e.retry_after)
            now = self._clock.seconds()
            phases["dependencies"], phase_began = now - phase_began, now
            container = self._runtime.get(name) or container
        wake.phase = "start"
        wake.trust_health = container.state != "paused"
        if container.state == "paused":
            self.log.info("unpausing {instance}", instance=name)
            await self._runtime.unpause(name)
        elif not container.running:
            self.log.info("starting {instance}", instance=name)
            await self._runtime.start(name)
        container = self._runtime.get(name)
        if container is None or not container.running:
            raise exited(name, container, "right after it was started", "start")
        now = self._clock.seconds()
        phases["start"], phase_began = now - phase_began, now

        wake.phase = "health"
        await self._readiness(wake, container)
        now = self._clock.seconds()
        phases["health"], phase_began = now - phase_began, now

        route = self._plan.route(container)
        if route is not None:
            wake.phase = "route"
            await self._gated(wake, route)
            now = self._clock.seconds()
            phases["route"] = now - phase_began
        return WakeReport(phases, self._clock.seconds() - began)

    def _gated(self, wake: Wake, check: Deferred) -> Deferred:
        """Wait for C{check}, unless the container exits or is removed meanwhile (then fail at once)."""
        gate = wake.gate = Deferred()
        check.addCallback(lambda _: _settle(gate))
        check.addErrback(lambda f: None if f.check(CancelledError) else (gate.called or gate.errback(f)))

        def done(result):
            wake.gate = None
            if not check.called:
                check.cancel()
            return result

        return gate.addBoth(done)

    def _wake_group(self, container: Container) -> None:
        """Waking one member of a C{wakeproxy.group} wakes the others too (without waiting for them)."""
        name = group(container)
        if name is None:
            return
        for member in self._runtime.list():
            if member.name != container.name and group(member) == name:
                self._wait_ready(member.name).addErrback(self._member_failed, member.name)

    def _member_failed(self, failure, member: str) -> None:
        if not failure.check(CancelledError):
            self.log.warn("waking group member {instance} failed: {why}", instance=member,
                          why=failure.getErrorMessage())

    def _readiness(self, wake: Wake, container: Container) -> Deferred:
        verdict = wake.verdict = Deferred()
        health = container.health if wake.trust_health else "none"
        if health == "unhealthy":
            verdict.errback(WakeFailure(503, "instance {} is unhealthy".format(wake.name), phase="health"))
            return verdict
        if health == "healthy":
            verdict.callback(None)
            return verdict
        probe = None
        if not (wake.trust_health and self._plan.docker_health_required(container)):
            probe = self._plan.probe(container)
            if probe is not None:
                probe.addCallback(lambda _: _settle(verdict))
                probe.addErrback(lambda f: f.trap(CancelledError))
            elif health == "none":
                self._clock.callLater(self._plan.ready_delay, _settle, verdict)

        def done(result):
            wake.verdict = None
            if probe is not None and not probe.called:
                probe.cancel()
            return result

        return verdict.addBoth(done)


def _settle(verdict: Deferred) -> None:
    if not verdict.called:
        verdict.callback(None)
