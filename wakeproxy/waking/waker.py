# -*- test-case-name: tests.test_waker -*-
"""
The waker: one state machine per instance (L{wakeproxy.waking.states}: its states and the one table of
its transitions), driven by callers, by the runtime's snapshots and by its own timers.

C{wait_ready(name)} answers at once with the instance's L{Ticket} when it is ready. Otherwise the caller
is held: the first caller begins a wake (L{wakeproxy.waking.wake}: dependencies first, then start or
unpause, readiness, the route check) and every caller waits on that same wake (single-flight). The wake
has one deadline; on expiry every held caller gets a 504 naming the phase that did not finish. A
container that exits or turns unhealthy while waking fails its callers at once (502/503) and is not
restarted in a loop. Held callers are bounded per instance and in total (503 with Retry-After beyond);
one that goes away is dropped from the queue while the wake goes on for the others.

The waker also owns the other direction, C{sleep(name)} (stop or pause) and C{halt(name)}, so the two
never race: a request arriving while an instance goes down is held and wakes it again once the stop
completes, and nothing is sent to a container that is going down. Activity (exchanges in flight, the
end of the last one) is counted here too, for the idle stopper.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from wakeproxy.metrics import WAKE_BUCKETS, CollectorRegistry, Counter, Histogram, ReadGauge
from wakeproxy.runtime.interface import Container, IContainerRuntime
from wakeproxy.waking.fences import FenceActions
from wakeproxy.waking.instance import UNKNOWN, Instance
from wakeproxy.waking.limits import RETRY_AFTER, HoldLimits
from wakeproxy.waking.outcomes import Ticket, WakeFailure, WakeReport, exited, no_such_instance, wake_failure_of
from wakeproxy.waking.readiness import ReadinessPlan
from wakeproxy.waking.states import Event, State, transition
from wakeproxy.waking.wake import Wake, WakeSequence

__all__ = ["REFUSED", "RETRY_AFTER", "Ticket", "WakeFailure", "WakeReport", "Waker"]

#: what L{Waker._fire} returns for an illegal transition
REFUSED = object()


class Waker(FenceActions):
    log = Logger()

    def __init__(self, clock, runtime: IContainerRuntime, plan: ReadinessPlan, wake_timeout: float = 60.0,
                 max_held: int = 10000, max_held_per_instance: int = 1000, stop_timeout: float = 10.0,
                 wake_rate: Optional[tuple[int, float]] = None, metrics: Optional[CollectorRegistry] = None):
        self._clock = clock
        self._runtime = runtime
        self._plan = plan
        self._sequence = WakeSequence(clock, runtime, plan, self.wait_ready)
        self._wake_timeout = wake_timeout
        self._stop_timeout = stop_timeout
        self._instances: dict[str, Instance] = {}
        self._before_sleep: list = []
        self.held = 0
        registry = metrics if metrics is not None else CollectorRegistry(auto_describe=True)
        self._wakes = Counter("wakeproxy_wakes_total", "Wakes by outcome.", ["outcome"], registry=registry)
        self._limits = HoldLimits(clock, max_held, max_held_per_instance, wake_rate,
                                  lambda: self._wakes.labels("rate_limited").inc())
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
        return instance is not None and instance.state is State.READY

    def ticket(self, name: str) -> Optional[Ticket]:
        """The ready instance's ticket (snapshot and address), or None when it is not ready."""
        instance = self._instances.get(name)
        return instance.ticket if instance is not None else None

    def state(self, name: str) -> State:
        instance = self._instances.get(name)
        return instance.state if instance is not None else State.UNREADY

    def describe(self, name: str) -> dict:
        """What the deploy API shows about an instance's activity and its last wake."""
        instance = self._instances.get(name)
        return dict(UNKNOWN) if instance is None else instance.describe(self._clock.seconds())

    def idle_since(self, name: str) -> Optional[float]:
        """When the instance's last exchange ended, or None while it is busy (in flight, waking, stopping)."""
        instance = self._instances.get(name)
        return None if instance is None else instance.idle_since()

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

    # the state table

    def _fire(self, instance: Instance, event: Event, *args):
        """
        Apply C{event} to C{instance} through the table: change state, then run the transition's action
        (with C{args}); return what the action returned, or L{REFUSED} (logged) for an illegal pair.
        """
        step = transition(instance.state, event)
        if step is None:
            self.log.warn("refused {event} for {instance}: not allowed when {state}", event=event.value,
                          instance=instance.name, state=instance.state.value)
            return REFUSED
        instance.state = step.next
        if step.action is not None:
            return getattr(self, step.action)(instance, *args)
        return None

    # waking

    def wait_ready(self, name: str) -> Deferred:
        """
        Fire with the instance's L{Ticket} once it is ready (its C{report} is the L{WakeReport} of the wake
        that made it so, or None when it already was), or fail with L{WakeFailure}. Cancelling the result
        drops the caller from the queue.
        """
        container = self._runtime.get(name)
        if container is None:
            return fail(no_such_instance(name))
        instance = self._instance(name)
        if instance.state is State.READY and not container.running:
            self._fire(instance, Event.EXITED, container)  # a snapshot the waker did not follow (stopped)
        if instance.state is not State.READY:
            refused = self._limits.refusal(name, len(instance.waiters), self.held,
                                           instance.wake_times if instance.state is State.UNREADY else None)
            if refused is not None:
                return fail(refused)
        waiter = Deferred(lambda d: self._drop(instance, d))
        instance.waiters.append(waiter)
        self.held += 1
        self._fire(instance, Event.HOLD)
        return waiter

    def _begin_wake(self, instance: Instance) -> None:
        """UNREADY -> WAKING: a wake with its deadline. Re-entry (groups, dependencies) finds WAKING and joins."""
        wake = instance.wake = Wake(instance.name, self._clock.seconds())
        instance.phase = wake.phase
        instance.wake_times.append(wake.began)
        wake.timer = self._clock.callLater(self._wake_timeout, self._deadline, instance, wake)
        self._sequence.run(wake).addCallbacks(self._sequence_done, self._sequence_failed,
                                              callbackArgs=(instance, wake), errbackArgs=(instance, wake))

    def _deadline(self, instance: Instance, wake: Wake) -> None:
        wake.timer = None
        if instance.wake is wake:
            self._fire(instance, Event.EXPIRED)

    def _sequence_done(self, report: WakeReport, instance: Instance, wake: Wake) -> None:
        if instance.wake is not wake:
            return  # expired or abandoned meanwhile: that end already happened
        container = self._runtime.get(instance.name)
        if container is None or not container.running:
            self._fire(instance, Event.WAKE_FAILED, exited(instance.name, container, "as it became ready", wake.phase))
            return
        self._fire(instance, Event.WOKEN, container, report)

    def _sequence_failed(self, failure: Failure, instance: Instance, wake: Wake) -> None:
        if instance.wake is not wake:
            return  # the deadline or a halt cancelled it: its callers were already answered or carried over
        self._fire(instance, Event.WAKE_FAILED, wake_failure_of(failure, instance.name, wake.phase))

    def _end_wake(self, instance: Instance) -> Wake:
        wake, instance.wake = instance.wake, None
        instance.phase = wake.phase
        wake.stop()
        return wake

    def _woken(self, instance: Instance, container: Container, report: WakeReport) -> None:
        """WAKING -> READY: the ticket, the report, and every held caller answered with both."""
        self._end_wake(instance)
        instance.ticket = Ticket(container, self._plan.reach(container))
        now = self._clock.seconds()
        instance.last_activity = now
        instance.last_wake = {"at": now - report.total, "outcome": "woken",
                              "phases": {k: round(v, 4) for k, v in report.phases.items()},
                              "total": round(report.total, 4)}
        for phase, seconds in report.phases.items():
            self._phase_seconds.labels(phase).observe(seconds)
        self._phase_seconds.labels("total").observe(report.total)
        self.log.info("woke {instance} in {total:.3f}s ({timing})", instance=instance.name, total=report.total,
                      timing=report.server_timing().decode())
        self._release(instance, replace(instance.ticket, report=report), "woken")

    def _wake_failed(self, instance: Instance, error: WakeFailure) -> None:
        self._end_wake(instance)
        self.log.warn("wake of {instance} failed: {detail}", instance=instance.name, detail=error.detail)
        self._release(instance, error, "failed")

    def _wake_expired(self, instance: Instance) -> None:
        phase = instance.wake.phase
        failure = WakeFailure(504, "instance {} did not become ready within {:g}s: the {} phase did not finish".format(
            instance.name, self._wake_timeout, phase), phase=phase)
        self.log.warn("wake of {instance} timed out in the {phase} phase", instance=instance.name, phase=phase)
        wake, instance.wake = instance.wake, None
        instance.phase = phase
        self._release(instance, failure, "timeout")
        wake.stop()

    def _serve_held(self, instance: Instance) -> None:
        """READY: callers get the ticket at once."""
        self._answer(instance, instance.ticket)

    def _release(self, instance: Instance, result, outcome: str) -> None:
        self._wakes.labels(outcome).inc()
        if outcome != "woken":
            instance.last_wake = {"at": self._clock.seconds(), "outcome": outcome, "phase": instance.phase,
                                  "detail": str(result)}
        self._answer(instance, result)

    def _answer(self, instance: Instance, result) -> int:
        """Every caller held for C{instance} gets C{result} (a ticket, or an exception); return how many."""
        waiters = instance.take_waiters()
        self.held -= len(waiters)
        for waiter in waiters:
            if isinstance(result, Exception):
                waiter.errback(result)
            else:
                waiter.callback(result)
        return len(waiters)

    def _drop(self, instance: Instance, waiter: Deferred) -> None:
        if waiter in instance.waiters:
            instance.waiters.remove(waiter)
            self.held -= 1

    # snapshots

    def _changed(self, name: str, container: Optional[Container]) -> None:
        instance = self._instances.get(name)
        if container is not None and container.running and (instance is None or not instance.last_activity):
            # first seen running (at start-up, or started behind our back): its idle clock starts now
            instance = self._instance(name)
            instance.last_activity = self._clock.seconds()
        if instance is None:
            return
        if container is None or not container.running:
            if container is not None and container.state == "exited":
                instance.last_activity = 0.0
            self._fire(instance, Event.EXITED, container)
        elif container.health == "unhealthy":
            self._fire(instance, Event.UNHEALTHY, container)
        else:
            self._fire(instance, Event.RUNNING, container)
        if container is None and instance.state is State.UNREADY and not instance.waiters:
            del self._instances[name]

    def _running_while_waking(self, instance: Instance, container: Container) -> None:
        if container.health == "healthy":
            instance.wake.healthy()

    def _unhealthy_while_waking(self, instance: Instance, container: Container) -> None:
        instance.wake.unhealthy()

    def _exited_while_waking(self, instance: Instance, container: Optional[Container]) -> None:
        instance.wake.exited(container)

    def _refresh_ticket(self, instance: Instance, container: Container) -> None:
        """READY, a new snapshot: the ticket follows it (the address is derived once per snapshot)."""
        if container is not instance.ticket.container:
            instance.ticket = Ticket(container, self._plan.reach(container))

    def _lost(self, instance: Instance, container: Optional[Container]) -> None:
        """READY -> UNREADY: exited, removed or unhealthy; the next caller wakes it again."""
        instance.ticket = None

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
        d = self._fire(self._instances[name], Event.SLEEP, method)
        if d is REFUSED:
            return succeed(False)

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
        return self._fire(self._instance(name), Event.HALT, timeout)

    def before_sleep(self, callback) -> None:
        """Call C{callback(name)} just before wakeproxy stops or pauses an instance (tunnels close then)."""
        self._before_sleep.append(callback)

    def _go_to_sleep(self, instance: Instance, method: str) -> Deferred:
        if method == "pause":
            return self._going_down(instance, lambda: self._runtime.pause(instance.name))
        return self._halt(instance, self._stop_timeout)

    def _halt(self, instance: Instance, timeout: float) -> Deferred:
        return self._going_down(instance, lambda: self._runtime.stop(instance.name, timeout))

    def _abandon_and_halt(self, instance: Instance, timeout: float) -> Deferred:
        """WAKING -> STOPPING: the wake is dropped; its held callers stay held and wake the instance once down."""
        self.log.info("{instance} is stopped while waking; held requests wake it again once it is down",
                      instance=instance.name)
        self._end_wake(instance)
        return self._halt(instance, timeout)

    def _going_down(self, instance: Instance, call) -> Deferred:
        for callback in self._before_sleep:
            callback(instance.name)
        instance.ticket = None
        self._drop_fences(instance)
        instance.stops += 1

        def finished(result):
            instance.stops -= 1
            if instance.stops == 0:
                self._fire(instance, Event.DOWN)
            return result

        return call().addBoth(finished)

    def _down(self, instance: Instance) -> None:
        """STOPPING -> UNREADY: callers held meanwhile wake it again; a name that was never there is forgotten."""
        if instance.waiters:
            self._fire(instance, Event.HOLD)
        elif self._runtime.get(instance.name) is None:
            self._instances.pop(instance.name, None)  # no such instance (an API call for a wrong name)

    # shutting down

    def stop(self) -> None:
        """Stop following the runtime (at shutdown)."""
        self._unwatch()

    def release_held(self, failure: WakeFailure) -> int:
        """Answer every held request with C{failure} now (shutting down); return how many there were."""
        return sum(self._answer(instance, failure) for instance in list(self._instances.values()))

    def _instance(self, name: str) -> Instance:
        instance = self._instances.get(name)
        if instance is None:
            instance = self._instances[name] = Instance(name)
        return instance
