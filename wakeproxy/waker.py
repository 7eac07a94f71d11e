# -*- test-case-name: tests.test_waker -*-
"""
The waker: one state machine per instance, driven by the runtime's snapshots.

C{wait_ready(name)} answers at once for an instance known to be ready. Otherwise the caller is held: the
first caller begins a wake (start or unpause, then readiness, then the route check) and every caller
waits on that same wake (single-flight). The wake has one deadline; on expiry every held caller gets a
504 naming the phase that did not finish. A container that exits or turns unhealthy while waking fails
its callers at once (502/503) and is not restarted in a loop. Held callers are bounded per instance and
in total (503 with Retry-After beyond); a caller that goes away is dropped from the queue while the wake
goes on for the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.logger import Logger

from .readiness import ReadinessPlan
from .runtime import Container, IContainerRuntime, NoSuchInstance, RuntimeFailure

__all__ = ["WakeFailure", "WakeReport", "Waker"]

RETRY_AFTER = 2


class WakeFailure(Exception):
    """Why held requests could not be served: an HTTP status, a sentence, maybe a phase and Retry-After."""

    def __init__(self, status: int, detail: str, phase: Optional[str] = None, retry_after: Optional[int] = None):
        Exception.__init__(self, detail)
        self.status = status
        self.detail = detail
        self.phase = phase
        self.retry_after = retry_after


@dataclass(frozen=True)
class WakeReport:
    """How long each phase of a wake took, in seconds."""

    phases: dict[str, float]
    total: float

    def server_timing(self) -> bytes:
        parts = ["{};dur={:.1f}".format(name, seconds * 1000) for name, seconds in self.phases.items()]
        parts.append("total;dur={:.1f}".format(self.total * 1000))
        return ", ".join(parts).encode("ascii")


@dataclass(eq=False)
class _Instance:
    name: str
    ready: bool = False
    waiters: list[Deferred] = field(default_factory=list)
    wake: Optional[Deferred] = None
    timer: object = None
    phase: str = "start"
    #: the pending readiness decision of a wake, settled by a probe or by a snapshot change.
    verdict: Optional[Deferred] = None
    expired: bool = False
    #: False after an unpause: health checks fail while a container is frozen, so Docker's health is stale.
    trust_health: bool = True


class Waker:
    log = Logger()

    def __init__(self, clock, runtime: IContainerRuntime, plan: ReadinessPlan, wake_timeout: float = 60.0,
                 max_held: int = 10000, max_held_per_instance: int = 1000):
        self._clock = clock
        self._runtime = runtime
        self._plan = plan
        self._wake_timeout = wake_timeout
        self._max_held = max_held
        self._max_held_per_instance = max_held_per_instance
        self._instances: dict[str, _Instance] = {}
        self.held = 0
        #: completed wakes by outcome, for metrics and tests.
        self.outcomes: dict[str, int] = {}
        self._unwatch = runtime.watch(self._changed)

    def is_ready(self, name: str) -> bool:
        """True when requests for C{name} may go straight upstream (the hot path: two lookups)."""
        instance = self._instances.get(name)
        return instance is not None and instance.ready

    def waking(self, name: str) -> bool:
        instance = self._instances.get(name)
        return instance is not None and instance.wake is not None

    def wait_ready(self, name: str) -> Deferred:
        """
        Fire with None when C{name} is ready without a wake, with a L{WakeReport} after a wake, or fail
        with L{WakeFailure}. Cancelling the result drops the caller from the queue.
        """
        container = self._runtime.get(name)
        if container is None:
            return fail(WakeFailure(404, "no managed instance named {!r}".format(name)))
        instance = self._instances.get(name)
        if instance is None:
            instance = self._instances[name] = _Instance(name)
        if instance.ready and container.running:
            return succeed(None)
        if len(instance.waiters) >= self._max_held_per_instance:
            return fail(WakeFailure(503, "too many requests are already waiting for instance {} to wake ({})".format(
                name, self._max_held_per_instance), retry_after=RETRY_AFTER))
        if self.held >= self._max_held:
            return fail(WakeFailure(503, "too many requests are already waiting for instances to wake ({})".format(
                self._max_held), retry_after=RETRY_AFTER))
        waiter = Deferred(lambda d: self._drop(instance, d))
        instance.waiters.append(waiter)
        self.held += 1
        if instance.wake is None:
            self._begin(instance)
        return waiter

    def stop(self) -> None:
        """Stop following the runtime (at shutdown)."""
        self._unwatch()

    # the wake

    def _begin(self, instance: _Instance) -> None:
        instance.expired = False
        instance.phase = "start"
        instance.timer = self._clock.callLater(self._wake_timeout, self._expire, instance)
        instance.wake = Deferred.fromCoroutine(self._wake(instance))
        instance.wake.addCallbacks(self._woke, self._failed, callbackArgs=(instance,), errbackArgs=(instance,))

    async def _wake(self, instance: _Instance) -> WakeReport:
        name = instance.name
        began = phase_began = self._clock.seconds()
        phases: dict[str, float] = {}
        container = self._runtime.get(name)
        if container is None:
            raise WakeFailure(404, "no managed instance named {!r}".format(name))
        instance.trust_health = container.state != "paused"
        if container.state == "paused":
            self.log.info("unpausing {instance}", instance=name)
            await self._runtime.unpause(name)
        elif not container.running:
            self.log.info("starting {instance}", instance=name)
            await self._runtime.start(name)
        container = self._runtime.get(name)
        if container is None or not container.running:
            raise _exited(name, container, "right after it was started")
        now = self._clock.seconds()
        phases["start"], phase_began = now - phase_began, now

        instance.phase = "health"
        await self._readiness(instance, container)
        now = self._clock.seconds()
        phases["health"], phase_began = now - phase_began, now

        route = self._plan.route(container)
        if route is not None:
            instance.phase = "route"
            await route
            now = self._clock.seconds()
            phases["route"] = now - phase_began
        return WakeReport(phases, self._clock.seconds() - began)

    def _readiness(self, instance: _Instance, container: Container) -> Deferred:
        verdict = instance.verdict = Deferred()
        health = container.health if instance.trust_health else "none"
        if health == "unhealthy":
            verdict.errback(WakeFailure(503, "instance {} is unhealthy".format(instance.name), phase="health"))
            return verdict
        if health == "healthy":
            verdict.callback(None)
            return verdict
        probe = None
        if not (instance.trust_health and self._plan.docker_health_required(container)):
            probe = self._plan.probe(container)
            if probe is not None:
                probe.addCallback(lambda _: _settle(verdict))
            elif health == "none":
                self._clock.callLater(self._plan.ready_delay, _settle, verdict)

        def done(result):
            instance.verdict = None
            if probe is not None and not probe.called:
                probe.cancel()
            return result

        return verdict.addBoth(done)

    def _changed(self, name: str, container: Optional[Container]) -> None:
        instance = self._instances.get(name)
        if instance is None:
            return
        if container is None or not container.running:
            instance.ready = False
            if instance.verdict is not None and not instance.verdict.called:
                instance.verdict.errback(_exited(name, container, "while it was starting"))
        elif container.health == "unhealthy" and instance.trust_health:
            instance.ready = False
            if instance.verdict is not None and not instance.verdict.called:
                instance.verdict.errback(WakeFailure(
                    503, "instance {} turned unhealthy while it was starting".format(name), phase="health"))
        elif container.health == "healthy" and instance.verdict is not None:
            _settle(instance.verdict)
        if container is None and instance.wake is None and not instance.waiters:
            del self._instances[name]

    def _expire(self, instance: _Instance) -> None:
        instance.timer = None
        instance.expired = True
        failure = WakeFailure(504, "instance {} did not become ready within {:g}s: the {} phase did not finish".format(
            instance.name, self._wake_timeout, instance.phase), phase=instance.phase)
        self.log.warn("wake of {instance} timed out in the {phase} phase", instance=instance.name,
                      phase=instance.phase)
        wake, instance.wake = instance.wake, None
        self._release(instance, failure, "timeout")
        if wake is not None:
            wake.cancel()

    def _woke(self, report: WakeReport, instance: _Instance) -> None:
        self._cancel_timer(instance)
        instance.wake = None
        container = self._runtime.get(instance.name)
        instance.ready = container is not None and container.running
        self.log.info("woke {instance} in {total:.3f}s ({timing})", instance=instance.name, total=report.total,
                      timing=report.server_timing().decode())
        self._release(instance, report, "woken")

    def _failed(self, failure, instance: _Instance) -> None:
        if instance.expired and failure.check(CancelledError):
            return
        self._cancel_timer(instance)
        instance.wake = None
        if failure.check(WakeFailure):
            error = failure.value
        elif failure.check(NoSuchInstance):
            error = WakeFailure(404, "no managed instance named {!r}".format(instance.name))
        elif failure.check(RuntimeFailure):
            error = WakeFailure(502, "could not start instance {}: {}".format(instance.name, failure.value),
                                phase=instance.phase)
        else:
            self.log.failure("wake of {instance} failed", failure, instance=instance.name)
            error = WakeFailure(502, "waking instance {} failed unexpectedly".format(instance.name),
                                phase=instance.phase)
        self.log.warn("wake of {instance} failed: {detail}", instance=instance.name, detail=error.detail)
        self._release(instance, error, "failed")

    def _release(self, instance: _Instance, result, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        waiters, instance.waiters = instance.waiters, []
        self.held -= len(waiters)
        for waiter in waiters:
            if isinstance(result, Exception):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def _drop(self, instance: _Instance, waiter: Deferred) -> None:
        if waiter in instance.waiters:
            instance.waiters.remove(waiter)
            self.held -= 1

    def _cancel_timer(self, instance: _Instance) -> None:
        if instance.timer is not None and instance.timer.active():
            instance.timer.cancel()
        instance.timer = None


def _settle(verdict: Deferred) -> None:
    if not verdict.called:
        verdict.callback(None)


def _exited(name: str, container: Optional[Container], when: str) -> WakeFailure:
    if container is None:
        return WakeFailure(502, "instance {} was removed {}".format(name, when), phase="start")
    return WakeFailure(502, "instance {} exited with code {} {}".format(name, container.exit_code, when),
                       phase="health")
