# -*- test-case-name: tests.test_waker -*-
"""
The waker: one state machine per instance, driven by the runtime's snapshots.

C{wait_ready(name)} answers at once for an instance known to be ready. Otherwise the caller is held: the
first caller begins a wake (dependencies first, then start or unpause, readiness, the route check) and
every caller waits on that same wake (single-flight). The wake has one deadline; on expiry every held
caller gets a 504 naming the phase that did not finish. A container that exits or turns unhealthy while
waking fails its callers at once (502/503) and is not restarted in a loop. Held callers are bounded per
instance and in total (503 with Retry-After beyond); one that goes away is dropped from the queue while
the wake goes on for the others.

The waker also owns the other direction, C{sleep(name)} (stop or pause), so the two never race: a request
arriving while an instance goes down is held and wakes it again once the stop completes, and nothing is
sent to a container that is going down. Activity (exchanges in flight, the end of the last one) is
counted here too, for the idle stopper.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Optional

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from wakeproxy.waking.labels import depends_on, group
from wakeproxy.metrics import WAKE_BUCKETS, CollectorRegistry, Counter, Histogram, ReadGauge
from wakeproxy.waking.readiness import ReadinessPlan
from wakeproxy.runtime.interface import Container, EngineFailure, IContainerRuntime, NoSuchInstance, RuntimeFailure

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
    #: the pending route check of a wake, failed by a snapshot change if the container goes away.
    gate: Optional[Deferred] = None
    expired: bool = False
    #: False after an unpause: health checks fail while a container is frozen, so Docker's health is stale.
    trust_health: bool = True
    #: the stop or pause in progress, if any.
    stopping: Optional[Deferred] = None
    inflight: int = 0
    last_activity: float = 0.0
    wake_times: deque = field(default_factory=deque)
    last_wake: Optional[dict] = None
    wake_began: float = 0.0


class Waker:
    log = Logger()

    def __init__(self, clock, runtime: IContainerRuntime, plan: ReadinessPlan, wake_timeout: float = 60.0,
                 max_held: int = 10000, max_held_per_instance: int = 1000, stop_timeout: float = 10.0,
                 wake_rate: Optional[tuple[int, float]] = None, metrics: Optional[CollectorRegistry] = None):
        self._clock = clock
        self._runtime = runtime
        self._plan = plan
        self._wake_timeout = wake_timeout
        self._max_held = max_held
        self._max_held_per_instance = max_held_per_instance
        self._stop_timeout = stop_timeout
        self._wake_rate = wake_rate
        self._instances: dict[str, _Instance] = {}
        self._before_sleep: list = []
        self.held = 0
        registry = metrics if metrics is not None else CollectorRegistry(auto_describe=True)
        self._wakes = Counter("wakeproxy_wakes_total", "Wakes by outcome.", ["outcome"], registry=registry)
        self._phase_seconds = Histogram("wakeproxy_wake_phase_seconds", "Wake duration by phase.", ["phase"],
                                        buckets=WAKE_BUCKETS, registry=registry)
        self._sleeps = Counter("wakeproxy_idle_stops_total", "Instances put to sleep, by method.", ["method"],
                               registry=registry)
        ReadGauge("wakeproxy_held_requests", "Requests held while instances wake.", lambda: {(): self.held},
                  registry=registry)
        ReadGauge("wakeproxy_inflight_requests", "Exchanges in flight per instance.",
                  lambda: {(i.name,): i.inflight for i in self._instances.values() if i.inflight}, ["instance"],
                  registry=registry)
        self._unwatch = runtime.watch(self._changed)
        for container in runtime.list():
            self._changed(container.name, container)

    # reads

    def is_ready(self, name: str) -> bool:
        """True when requests for C{name} may go straight upstream (the hot path: two lookups)."""
        instance = self._instances.get(name)
        return instance is not None and instance.ready

    def describe(self, name: str) -> dict:
        """What the deploy API shows about an instance's activity and its last wake."""
        instance = self._instances.get(name)
        if instance is None:
            return {"inflight": 0, "last_activity": None, "waking": False, "stopping": False, "held": 0,
                    "last_wake": None, "phase": None, "waking_for": None}
        waking = instance.wake is not None
        return {"inflight": instance.inflight, "last_activity": instance.last_activity or None,
                "waking": waking, "stopping": instance.stopping is not None,
                "held": len(instance.waiters), "last_wake": instance.last_wake,
                "phase": instance.phase if waking else None,
                "waking_for": round(self._clock.seconds() - instance.wake_began, 3) if waking else None}

    def idle_since(self, name: str) -> Optional[float]:
        """When the instance's last exchange ended, or None while it is busy (in flight, waking, stopping)."""
        instance = self._instances.get(name)
        if instance is None:
            return None
        if instance.inflight or instance.waiters or instance.wake is not None or instance.stopping is not None:
            return None
        return instance.last_activity

    # activity

    def exchange_began(self, name: str) -> None:
        """An exchange is in flight (it keeps the instance busy; its end is the activity that counts)."""
        instance = self._instances.get(name) or self._instance(name)
        instance.inflight += 1

    def touch(self, name: str) -> None:
        """Activity without an exchange in flight (a WebSocket data frame through an open tunnel)."""
        instance = self._instances.get(name)
        if instance is not None:
            instance.last_activity = self._clock.seconds()

    def exchange_ended(self, name: str) -> None:
        instance = self._instances.get(name) or self._instance(name)
        instance.inflight = max(0, instance.inflight - 1)
        instance.last_activity = self._clock.seconds()

    # waking

    def wait_ready(self, name: str) -> Deferred:
        """
        Fire with None when C{name} is ready without a wake, with a L{WakeReport} after a wake, or fail
        with L{WakeFailure}. Cancelling the result drops the caller from the queue.
        """
        container = self._runtime.get(name)
        if container is None:
            return fail(WakeFailure(404, "no managed instance named {!r}".format(name)))
        instance = self._instance(name)
        if instance.ready and container.running:
            return succeed(None)
        if len(instance.waiters) >= self._max_held_per_instance:
            return fail(WakeFailure(503, "too many requests are already waiting for instance {} to wake ({})".format(
                name, self._max_held_per_instance), retry_after=RETRY_AFTER))
        if self.held >= self._max_held:
            return fail(WakeFailure(503, "too many requests are already waiting for instances to wake ({})".format(
                self._max_held), retry_after=RETRY_AFTER))
        if instance.wake is None and instance.stopping is None:
            refused = self._rate_refusal(instance)
            if refused is not None:
                return fail(refused)
        waiter = Deferred(lambda d: self._drop(instance, d))
        instance.waiters.append(waiter)
        self.held += 1
        if instance.wake is None and instance.stopping is None:
            self._begin(instance)
        return waiter

    def _rate_refusal(self, instance: _Instance) -> Optional[WakeFailure]:
        if self._wake_rate is None:
            return None
        count, period = self._wake_rate
        now = self._clock.seconds()
        while instance.wake_times and instance.wake_times[0] <= now - period:
            instance.wake_times.popleft()
        if len(instance.wake_times) < count:
            return None
        retry = int(instance.wake_times[0] + period - now) + 1
        self._wakes.labels("rate_limited").inc()
        return WakeFailure(503, "instance {} was woken {} times in the last {:g}s (--wake-rate); not waking it "
                                "again yet".format(instance.name, count, period), retry_after=retry)

    def _begin(self, instance: _Instance) -> None:
        instance.expired = False
        instance.phase = "start"
        instance.wake_began = self._clock.seconds()
        instance.wake_times.append(instance.wake_began)
        instance.timer = self._clock.callLater(self._wake_timeout, self._expire, instance)
        # The coroutine runs synchronously up to its first await and may re-enter wait_ready (groups,
        # dependencies): mark the wake as begun first, so that re-entry joins it instead of starting another.
        marker = instance.wake = Deferred()
        wake = Deferred.fromCoroutine(self._wake(instance))
        if instance.wake is marker:
            instance.wake = wake
        wake.addCallbacks(self._woke, self._failed, callbackArgs=(instance,), errbackArgs=(instance,))

    async def _wake(self, instance: _Instance) -> WakeReport:
        name = instance.name
        began = phase_began = self._clock.seconds()
        phases: dict[str, float] = {}
        container = self._runtime.get(name)
        if container is None:
            raise WakeFailure(404, "no managed instance named {!r}".format(name))
        self._wake_group(container)
        needs = depends_on(container, self._runtime.get)
        if needs:
            instance.phase = "dependencies"
            for dependency in needs:
                try:
                    await self.wait_ready(dependency)
                except WakeFailure as e:
                    raise WakeFailure(e.status if e.status != 404 else 502, "dependency {} of {}: {}".format(
                        dependency, name, e.detail), phase="dependencies", retry_after=e.retry_after)
            now = self._clock.seconds()
            phases["dependencies"], phase_began = now - phase_began, now
            container = self._runtime.get(name) or container
        instance.phase = "start"
        instance.trust_health = container.state != "paused"
        if container.state == "paused":
            self.log.info("unpausing {instance}", instance=name)
            await self._runtime.unpause(name)
        elif not container.running:
            self.log.info("starting {instance}", instance=name)
            await self._runtime.start(name)
        container = self._runtime.get(name)
        if container is None or not container.running:
            raise _exited(name, container, "right after it was started", "start")
        now = self._clock.seconds()
        phases["start"], phase_began = now - phase_began, now

        instance.phase = "health"
        await self._readiness(instance, container)
        now = self._clock.seconds()
        phases["health"], phase_began = now - phase_began, now

        route = self._plan.route(container)
        if route is not None:
            instance.phase = "route"
            await self._gated(instance, route)
            now = self._clock.seconds()
            phases["route"] = now - phase_began
        return WakeReport(phases, self._clock.seconds() - began)

    def _gated(self, instance: _Instance, check: Deferred) -> Deferred:
        """Wait for C{check}, unless the container exits or is removed meanwhile (then fail at once)."""
        gate = instance.gate = Deferred()
        check.addCallback(lambda _: _settle(gate))
        check.addErrback(lambda f: None if f.check(CancelledError) else (gate.called or gate.errback(f)))

        def done(result):
            instance.gate = None
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
            if member.name != container.name and group(member) == name and not self.is_ready(member.name):
                self.wait_ready(member.name).addErrback(self._member_failed, member.name)

    def _member_failed(self, failure, member: str) -> None:
        if not failure.check(CancelledError):
            self.log.warn("waking group member {instance} failed: {why}", instance=member,
                          why=failure.getErrorMessage())

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
                probe.addErrback(lambda f: f.trap(CancelledError))
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
        if container is not None and container.running and (instance is None or not instance.last_activity):
            # first seen running (at start-up, or started behind our back): its idle clock starts now
            instance = self._instance(name)
            instance.last_activity = self._clock.seconds()
        if instance is None:
            return
        if container is None or not container.running:
            instance.ready = False
            if container is not None and container.state == "exited":
                instance.last_activity = 0.0
            for pending in (instance.verdict, instance.gate):
                if pending is not None and not pending.called:
                    pending.errback(_exited(name, container, "while it was starting", instance.phase))
        elif container.health == "unhealthy" and instance.trust_health:
            instance.ready = False
            if instance.verdict is not None and not instance.verdict.called:
                instance.verdict.errback(WakeFailure(
                    503, "instance {} turned unhealthy while it was starting".format(name), phase="health"))
        elif container.health == "healthy" and instance.verdict is not None:
            _settle(instance.verdict)
        if container is None and instance.wake is None and not instance.waiters and instance.stopping is None:
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
        instance.trust_health = True
        instance.last_activity = self._clock.seconds()
        instance.last_wake = {"at": self._clock.seconds() - report.total, "outcome": "woken",
                              "phases": {k: round(v, 4) for k, v in report.phases.items()},
                              "total": round(report.total, 4)}
        for phase, seconds in report.phases.items():
            self._phase_seconds.labels(phase).observe(seconds)
        self._phase_seconds.labels("total").observe(report.total)
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
        elif failure.check(EngineFailure):
            error = WakeFailure(503, "could not start instance {}: {}".format(instance.name, failure.value),
                                phase=instance.phase, retry_after=failure.value.retry_after)
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
        self._wakes.labels(outcome).inc()
        if outcome != "woken":
            instance.last_wake = {"at": self._clock.seconds(), "outcome": outcome, "phase": instance.phase,
                                  "detail": str(result)}
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

    # sleeping

    def sleep(self, name: str, method: str = "stop") -> Deferred:
        """
        Stop (or pause) an idle instance. Refused (fires False) while it is busy; requests that arrive
        meanwhile are held and wake it again once it is down.
        """
        container = self._runtime.get(name)
        if container is None or not container.running or self.idle_since(name) is None:
            return succeed(False)
        self.log.info("{instance} is idle: {method}", instance=name, method=method)
        d = self._going_down(name, self._runtime.pause(name) if method == "pause"
                             else self._runtime.stop(name, self._stop_timeout))

        def finished(result):
            if isinstance(result, Failure):
                self.log.warn("could not {method} {instance}: {why}", method=method, instance=name,
                              why=result.getErrorMessage())
                return False
            self._sleeps.labels(method).inc()
            return True

        return d.addBoth(finished)

    def halt(self, name: str, timeout: float) -> Deferred:
        """
        Stop an instance now, busy or not (the deploy API's stop). As with an idle stop, nothing new is
        sent to it meanwhile: requests are held and wake it again once it is down. Failures propagate.
        """
        return self._going_down(name, self._runtime.stop(name, timeout))

    def before_sleep(self, callback) -> None:
        """Call C{callback(name)} just before wakeproxy stops or pauses an instance (tunnels close then)."""
        self._before_sleep.append(callback)

    def _going_down(self, name: str, d: Deferred) -> Deferred:
        for callback in self._before_sleep:
            callback(name)
        instance = self._instance(name)
        instance.ready = False
        instance.stopping = d

        def down(result):
            instance.stopping = None
            if instance.waiters and instance.wake is None:
                self._begin(instance)
            elif self._runtime.get(name) is None and instance.wake is None and not instance.waiters:
                self._instances.pop(name, None)  # no such instance (an API call for a wrong name)
            return result

        return d.addBoth(down)

    def stop(self) -> None:
        """Stop following the runtime (at shutdown)."""
        self._unwatch()

    def release_held(self, failure: WakeFailure) -> int:
        """Answer every held request with C{failure} now (shutting down); return how many there were."""
        count = 0
        for instance in list(self._instances.values()):
            waiters, instance.waiters = instance.waiters, []
            self.held -= len(waiters)
            count += len(waiters)
            for waiter in waiters:
                waiter.errback(failure)
        return count

    def _instance(self, name: str) -> _Instance:
        instance = self._instances.get(name)
        if instance is None:
            instance = self._instances[name] = _Instance(name)
        return instance


def _settle(verdict: Deferred) -> None:
    if not verdict.called:
        verdict.callback(None)


def _exited(name: str, container: Optional[Container], when: str, phase: str) -> WakeFailure:
    if container is None:
        return WakeFailure(502, "instance {} was removed {}".format(name, when), phase=phase)
    return WakeFailure(502, "instance {} exited with code {} {}".format(name, container.exit_code, when),
                       phase=phase)
