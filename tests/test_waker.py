# -*- test-case-name: tests.test_waker -*-
"""
Tests for L{wakeproxy.waking.waker}: the per-instance wake state machine, driven by a L{MemoryRuntime}, a
L{Clock} and a readiness plan whose probes and route checks the test fires by hand.
"""

import gc

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from wakeproxy.runtime.memory import MemoryRuntime
from wakeproxy.waking.readiness import ReadinessPlan
from wakeproxy.runtime.interface import NoSuchInstance, RuntimeFailure
from wakeproxy.waking.labels import reach
from wakeproxy.waking.waker import RETRY_AFTER, Ticket, WakeFailure, WakeReport, Waker

APP = "app"
OTHER = "other"
TIMEOUT = 10.0


class FakePlan:
    """
    A stand-in for L{ReadinessPlan}: C{probe} and C{route} hand out Deferreds the test fires (or not)
    and that record their own cancellation.
    """

    def __init__(self, clock, ready_delay=0.0, docker_health=False, probing=True, routing=False):
        self.clock = clock
        self.ready_delay = ready_delay
        self.docker_health = docker_health
        self.probing = probing
        self.routing = routing
        #: Deferreds handed out by probe() and route(), in order.
        self.probes = []
        self.routes = []
        #: those of them that were cancelled.
        self.cancelled = []

    def docker_health_required(self, container):
        return self.docker_health

    def reach(self, container):
        return reach(container)

    def probe(self, container):
        if not self.probing:
            return None
        return self._hand_out(self.probes)

    def route(self, container):
        if not self.routing:
            return None
        return self._hand_out(self.routes)

    def _hand_out(self, into):
        d = Deferred(self.cancelled.append)
        into.append(d)
        return d

    def consume(self):
        """Swallow the CancelledError of cancelled probes so it is not reported as unhandled at GC."""
        for d in self.probes + self.routes:
            d.addErrback(lambda f: f.trap(CancelledError))


class WakerTestsMixin:
    """A waker on a Clock, a MemoryRuntime and a L{FakePlan}; C{waker()} builds it with options."""

    def setUp(self):
        self.clock = Clock()
        self.runtime = MemoryRuntime()
        self.plan = FakePlan(self.clock)
        self.addCleanup(self.plan.consume)

    def waker(self, **kw):
        kw.setdefault("wake_timeout", TIMEOUT)
        waker = Waker(self.clock, self.runtime, self.plan, **kw)
        self.addCleanup(waker.stop)
        return waker

    def waking(self, waker, name=APP):
        return waker.describe(name)["waking"]

    def last_outcome(self, waker, name=APP):
        return waker.describe(name)["last_wake"]["outcome"]

    def state(self, name=APP):
        return self.runtime.get(name).state

    def wake_failure(self, d, status):
        """The L{WakeFailure} C{d} failed with, checking its status."""
        error = self.failureResultOf(d, WakeFailure).value
        self.assertEqual(error.status, status, error.detail)
        return error

    def woken(self, waker, name=APP):
        """Wake C{name} completely (probe fired at once); return the report."""
        d = waker.wait_ready(name)
        if self.plan.probes and not self.plan.probes[-1].called:
            self.plan.probes[-1].callback(True)
        report = self.assertWoken(d)
        self.assertTrue(waker.is_ready(name))
        return report

    def assertWoken(self, d):
        """C{d} fired with a ticket from a wake: return the wake's report."""
        ticket = self.successResultOf(d)
        self.assertIsInstance(ticket, Ticket)
        self.assertIsInstance(ticket.report, WakeReport)
        return ticket.report

    def assertAlreadyReady(self, d):
        """C{d} fired with the ticket of an instance that was ready without a wake: return it."""
        ticket = self.successResultOf(d)
        self.assertIsInstance(ticket, Ticket)
        self.assertIsNone(ticket.report)
        return ticket


class ReadyTests(WakerTestsMixin, SynchronousTestCase):
    """The fast path and single-flight wakes."""

    def test_ready_fast_path(self):
        """After a completed wake, C{wait_ready} fires synchronously with None and starts nothing."""
        self.runtime.add_managed(APP)
        waker = self.waker()
        self.assertFalse(waker.is_ready(APP))
        self.woken(waker)
        self.assertTrue(waker.is_ready(APP))
        self.assertAlreadyReady(waker.wait_ready(APP))
        self.assertEqual(self.runtime.calls["start"], 1)
        self.assertEqual(len(self.plan.probes), 1)
        self.assertEqual(waker.held, 0)
        self.assertFalse(self.waking(waker, APP))
        self.assertEqual(self.last_outcome(waker), "woken")

    def test_single_flight(self):
        """200 callers for a stopped instance share one start and one report."""
        self.runtime.add_managed(APP)
        waker = self.waker()
        waiters = [waker.wait_ready(APP) for _ in range(200)]
        self.assertEqual(self.runtime.calls["start"], 1)
        self.assertEqual(len(self.plan.probes), 1)
        self.assertEqual(waker.held, 200)
        self.assertTrue(self.waking(waker, APP))
        for d in waiters:
            self.assertNoResult(d)
        self.plan.probes[0].callback(True)
        tickets = [self.successResultOf(d) for d in waiters]
        self.assertIsInstance(tickets[0].report, WakeReport)
        for ticket in tickets:
            self.assertIs(ticket, tickets[0])
        self.assertEqual(waker.held, 0)
        self.assertFalse(self.waking(waker, APP))
        self.assertTrue(waker.is_ready(APP))
        self.assertEqual(self.runtime.calls["start"], 1)

    def test_paused_is_unpaused(self):
        """A paused instance is unpaused, not started."""
        self.runtime.add_managed(APP, state="paused")
        waker = self.waker()
        self.woken(waker)
        self.assertEqual(self.runtime.calls.get("unpause"), 1)
        self.assertNotIn("start", self.runtime.calls)
        self.assertEqual(self.state(), "running")

    def test_running_not_ready_is_not_started(self):
        """A container already running (but not known ready) is only checked for readiness."""
        self.runtime.add_managed(APP, state="running")
        waker = self.waker()
        self.woken(waker)
        self.assertNotIn("start", self.runtime.calls)

    def test_unknown_name(self):
        """A name the runtime does not manage fails with 404 at once and leaves nothing behind."""
        self.runtime.add_foreign("foreign")
        waker = self.waker()
        for name in ("nope", "foreign"):
            error = self.wake_failure(waker.wait_ready(name), 404)
            self.assertIn(repr(name), error.detail, name)
            self.assertFalse(waker.is_ready(name), name)
        self.assertEqual(waker.held, 0)
        self.assertNotIn("start", self.runtime.calls)

    def test_stopped_behind_our_back(self):
        """An instance that exits after its wake is no longer ready; the next caller wakes it again."""
        self.runtime.add_managed(APP)
        waker = self.waker()
        self.woken(waker)
        self.runtime.exit(APP, 0)
        self.assertFalse(waker.is_ready(APP))
        d = waker.wait_ready(APP)
        self.assertNoResult(d)
        self.assertEqual(self.runtime.calls["start"], 2)
        self.plan.probes[-1].callback(True)
        self.assertWoken(d)
        self.assertTrue(waker.is_ready(APP))

    def test_paused_behind_our_back(self):
        """An instance paused after its wake is not ready; the next caller unpauses it."""
        self.runtime.add_managed(APP)
        waker = self.waker()
        self.woken(waker)
        self.successResultOf(self.runtime.pause(APP))
        self.assertFalse(waker.is_ready(APP))
        self.woken(waker)
        self.assertEqual(self.runtime.calls["unpause"], 1)
        self.assertEqual(self.runtime.calls["start"], 1)

    def test_removed_after_wake(self):
        """A removed instance is forgotten: not ready, and 404 for the next caller."""
        self.runtime.add_managed(APP)
        waker = self.waker()
        self.woken(waker)
        self.successResultOf(self.runtime.remove(APP, force=True))
        self.assertFalse(waker.is_ready(APP))
        self.assertFalse(self.waking(waker, APP))
        self.assertNotIn(APP, waker._instances)
        self.wake_failure(waker.wait_ready(APP), 404)

    def test_removed_while_waking(self):
        """An instance removed during its wake fails its callers with 502 and is forgotten."""
        self.runtime.add_managed(APP)
        waker = self.waker()
        d = waker.wait_ready(APP)
        self.successResultOf(self.runtime.remove(APP, force=True))
        error = self.wake_failure(d, 502)
        self.assertIn("removed", error.detail)
        self.assertEqual(waker.held, 0)
        self.assertNotIn(APP, waker._instances)
        self.assertEqual(self.plan.cancelled, self.plan.probes)

    def test_stop_unwatches(self):
        """After C{stop}, runtime changes no longer reach the waker."""
        self.runtime.add_managed(APP)
        waker = self.waker()
        self.woken(waker)
        waker.stop()
        self.runtime.exit(APP)
        self.assertTrue(waker.is_ready(APP))


class ReadinessTests(WakerTestsMixin, SynchronousTestCase):
    """Which signal ends the health phase."""

    def test_probe(self):
        """The probe firing makes the instance ready; before that callers are held."""
        self.runtime.add_managed(APP)
        waker = self.waker()
        d = waker.wait_ready(APP)
        self.assertEqual(self.state(), "running")
        self.assertEqual(len(self.plan.probes), 1)
        self.clock.advance(1)
        self.assertNoResult(d)
        self.assertFalse(waker.is_ready(APP))
        self.plan.probes[0].callback(True)
        report = self.assertWoken(d)
        self.assertEqual(report.phases, {"start": 0.0, "health": 1.0})
        self.assertTrue(waker.is_ready(APP))

    def test_docker_healthy_before_probe(self):
        """Docker reporting healthy ends the health phase and cancels the probe."""
        self.runtime.add_managed(APP, healthcheck=True)
        waker = self.waker()
        d = waker.wait_ready(APP)
        self.assertEqual(self.runtime.get(APP).health, "starting")
        self.assertNoResult(d)
        probe = self.plan.probes[0]
        self.runtime.set_health(APP, "healthy")
        self.assertWoken(d)
        self.assertTrue(waker.is_ready(APP))
        self.assertEqual(self.plan.cancelled, [probe])

    def test_already_healthy(self):
        """A running container Docker already reports healthy is ready without probing."""
        self.runtime.add_managed(APP, state="running", healthcheck=True)
        self.runtime.set_health(APP, "healthy")
        waker = self.waker()
        self.assertWoken(waker.wait_ready(APP))
        self.assertEqual(self.plan.probes, [])

    def test_docker_health_required(self):
        """When the plan requires Docker health, no probe is asked for and only "healthy" counts."""
        self.plan.docker_health = True
        self.runtime.add_managed(APP, healthcheck=True)
        waker = self.waker()
        d = waker.wait_ready(APP)
        self.assertEqual(self.plan.probes, [])
        self.clock.advance(TIMEOUT / 2)
        self.assertNoResult(d)
        self.runtime.set_health(APP, "healthy")
        self.assertWoken(d)

    def test_ready_delay(self):
        """Nothing to probe and no HEALTHCHECK: ready C{ready_delay} seconds after the start."""
        self.plan.probing = False
        self.plan.ready_delay = 0.5
        self.runtime.add_managed(APP)
        waker = self.waker()
        d = waker.wait_ready(APP)
        self.clock.advance(0.25)
        self.assertNoResult(d)
        self.clock.advance(0.25)
        report = self.assertWoken(d)
        self.assertEqual(report.phases["health"], 0.5)

    def test_ready_delay_zero(self):
        """A zero C{ready_delay} still goes through the clock (one turn), never synchronously."""
        self.plan.probing = False
        self.runtime.add_managed(APP)
        waker = self.waker()
        d = waker.wait_ready(APP)
        self.assertNoResult(d)
        self.clock.advance(0)
        self.assertWoken(d)

    def test_no_probe_with_healthcheck_waits_for_docker(self):
        """Nothing to probe but a HEALTHCHECK: the delay does not apply, Docker's verdict does."""
        self.plan.probing = False
        self.runtime.add_managed(APP, healthcheck=True)
        waker = self.waker()
        d = waker.wait_ready(APP)
        self.clock.advance(TIMEOUT / 2)
        self.assertNoResult(d)
        self.runtime.set_health(APP, "healthy")
        self.assertWoken(d)


class RouteTests(WakerTestsMixin, SynchronousTestCase):
    """The route phase and the report."""

    def test_phases_and_server_timing(self):
        """A wake with a route check reports start, health and route, timed on the clock."""
        self.plan.routing = True
        self.runtime.add_managed(APP)
        self.runtime.hold_next_start(APP)
        waker = self.waker()
        d = waker.wait_ready(APP)
        self.clock.advance(1.0)
        self.runtime.held_starts[APP].callback(None)
        self.clock.advance(0.25)
        self.assertEqual(self.plan.routes, [])
        self.plan.probes[0].callback(True)
        self.assertEqual(len(self.plan.routes), 1)
        self.clock.advance(0.125)
        self.assertNoResult(d)
        self.assertFalse(waker.is_ready(APP))
        self.plan.routes[0].callback(True)
        report = self.assertWoken(d)
        self.assertEqual(list(report.phases), ["start", "health", "route"])
        self.assertEqual(report.phases, {"start": 1.0, "health": 0.25, "route": 0.125})
        self.assertEqual(report.total, 1.375)
        self.assertEqual(report.server_timing(),
                         b"start;dur=1000.0, health;dur=250.0, route;dur=125.0, total;dur=1375.0")
        self.assertTrue(waker.is_ready(APP))

    def test_server_timing_without_route(self):
        """Without a route check there are two phases and the total."""
        report = WakeReport({"start": 0.0123, "health": 0.00049}, 0.01279)
        self.assertEqual(report.server_timing(), b"start;dur=12.3, health;dur=0.5, total;dur=12.8")

    def test_exit_during_route(self):
        """A container that exits during the route phase fails its callers at once with 502."""
        self.plan.routing = True
        self.runtime.add_managed(APP)
        waker = self.waker()
        d = waker.wait_ready(APP)
        self.plan.probes[0].callback(True)
        self.runtime.exit(APP, 3)
        error = self.wake_failure(d, 502)
        self.assertIn("3", error.detail)
        self.assertEqual(self.plan.cancelled, self.plan.routes)


class TimeoutTests(WakerTestsMixin, SynchronousTestCase):
    """The wake deadline: 504 naming the phase that did not finish."""

    def expire(self, waiters, phase):
        """Advance to the deadline and check every waiter got a 504 for C{phase}."""
        self.clock.advance(TIMEOUT - 0.5)
        for d in waiters:
            self.assertNoResult(d)
        self.clock.advance(0.5)
        for d in waiters:
            error = self.wake_failure(d, 504)
            self.assertEqual(error.phase, phase)
            self.assertIn(phase, error.detail)
            self.assertIsNone(error.retry_after)

    def test_start_phase(self):
        """A start that does not finish in time: 504 "start"; the next caller starts again."""
        self.runtime.add_managed(APP)
        self.runtime.hold_next_start(APP)
        waker = self.waker()
        waiters = [waker.wait_ready(APP) for _ in range(3)]
        held = self.runtime.held_starts[APP]
        self.expire(waiters, "start")
        self.assertTrue(held.called, "the held start was not cancelled")
        self.assertEqual(self.state(), "exited")
        self.assertEqual(waker.held, 0)
        self.assertFalse(self.waking(waker, APP))
        self.assertEqual(self.last_outcome(waker), "timeout")
        self.assertEqual(waker.describe(APP)["last_wake"]["phase"], "start")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.woken(waker)
        self.assertEqual(self.runtime.calls["start"], 2)

    def test_health_phase(self):
        """A probe that never fires: 504 "health", the probe is cancelled; the next wake does not start."""
        self.runtime.add_managed(APP)
        waker = self.waker()
        waiters = [waker.wait_ready(APP) for _ in range(3)]
        self.expire(waiters, "health")
        self.assertEqual(self.plan.cancelled, self.plan.probes)
        self.assertEqual(len(self.plan.probes), 1)
        self.assertEqual(waker.held, 0)
        self.assertFalse(self.waking(waker, APP))
        self.assertFalse(waker.is_ready(APP))
        self.assertEqual(self.state(), "running")
        d = waker.wait_ready(APP)
        self.assertTrue(self.waking(waker, APP))
        self.assertEqual(len(self.plan.probes), 2)
        self.plan.probes[1].callback(True)
        self.assertWoken(d)
        self.assertEqual(self.runtime.calls["start"], 1)
        self.assertEqual(self.last_outcome(waker), "woken")

    def test_route_phase(self):
        """A route check that never succeeds: 504 "route", the route check is cancelled."""
        self.plan.routing = True
        self.runtime.add_managed(APP)
        waker = self.waker()
        waiters = [waker.wait_ready(APP) for _ in range(3)]
        self.plan.probes[0].callback(True)
        self.expire(waiters, "route")
        self.assertEqual(self.plan.cancelled, self.plan.routes)
        self.assertEqual(len(self.plan.routes), 1)
        self.assertFalse(waker.is_ready(APP))
        d = waker.wait_ready(APP)
        self.plan.probes[1].callback(True)
        self.plan.routes[1].callback(True)
        self.assertWoken(d)
        self.assertEqual(self.runtime.calls["start"], 1)

    def test_deadline_counts_from_first_caller(self):
        """Late callers join the running wake and share its deadline."""
        self.runtime.add_managed(APP)
        waker = self.waker()
        first = waker.wait_ready(APP)
        self.clock.advance(TIMEOUT - 1)
        late = waker.wait_ready(APP)
        self.clock.advance(1)
        self.wake_failure(first, 504)
        self.wake_failure(late, 504)

    def test_no_timer_after_wake(self):
        """A completed wake leaves no deadline pending on the clock."""
        self.runtime.add_managed(APP)
        waker = self.waker()
        self.woken(waker)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class FailureTests(WakerTestsMixin, SynchronousTestCase):
    """Exits, crashes, unhealthy containers and runtime failures fail callers at once."""

    def test_exit_while_waking(self):
        """An exit during the health phase: 502 with the exit code, probe cancelled, no restart."""
        self.runtime.add_managed(APP)
        waker = self.waker()
        waiters = [waker.wait_ready(APP) for _ in range(2)]
        self.runtime.exit(APP, 3)
        for d in waiters:
            error = self.wake_failure(d, 502)
            self.assertIn("exited with code 3", error.detail)
            self.assertEqual(error.phase, "health")
        self.assertEqual(self.plan.cancelled, self.plan.probes)
        self.assertEqual(self.runtime.calls["start"], 1)
        self.assertEqual(self.state(), "exited")
        self.assertEqual(waker.held, 0)
        self.assertFalse(self.waking(waker, APP))
        self.assertEqual(self.last_outcome(waker), "failed")

    def test_exit_with_healthcheck_while_waking(self):
        """An exit reported together with "unhealthy" is still an exit (502 with the code), not a 503."""
        self.runtime.add_managed(APP, healthcheck=True)
        waker = self.waker()
        d = waker.wait_ready(APP)
        self.runtime.exit(APP, 137)
        self.assertIn("exited with code 137", self.wake_failure(d, 502).detail)

    def test_crash_on_start(self):
        """A container that exits as soon as it is started: 502 with the exit code, no probe."""
        self.runtime.add_managed(APP)
        self.runtime.crash_on_start[APP] = 7
        waker = self.waker()
        error = self.wake_failure(waker.wait_ready(APP), 502)
        self.assertIn("exited with code 7", error.detail)
        self.assertEqual(self.plan.probes, [])
        self.assertEqual(self.runtime.calls["start"], 1)
        self.assertEqual(waker.held, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unhealthy_while_waking(self):
        """A container that turns unhealthy during the health phase: 503, probe cancelled."""
        self.runtime.add_managed(APP, healthcheck=True)
        waker = self.waker()
        d = waker.wait_ready(APP)
        self.runtime.set_health(APP, "unhealthy")
        error = self.wake_failure(d, 503)
        self.assertIn("unhealthy", error.detail)
        self.assertEqual(error.phase, "health")
        self.assertEqual(self.plan.cancelled, self.plan.probes)
        self.assertFalse(waker.is_ready(APP))

    def test_running_unhealthy(self):
        """A running container Docker reports unhealthy: 503 at once, nothing started or probed."""
        self.runtime.add_managed(APP, state="running", healthcheck=True)
        self.runtime.set_health(APP, "unhealthy")
        waker = self.waker()
        error = self.wake_failure(waker.wait_ready(APP), 503)
        self.assertIn("unhealthy", error.detail)
        self.assertNotIn("start", self.runtime.calls)
        self.assertEqual(self.plan.probes, [])
        self.assertEqual(waker.held, 0)

    def test_unhealthy_after_wake(self):
        """A ready instance that turns unhealthy is no longer ready."""
        self.runtime.add_managed(APP, healthcheck=True)
        waker = self.waker()
        d = waker.wait_ready(APP)
        self.runtime.set_health(APP, "healthy")
        self.successResultOf(d)
        self.runtime.set_health(APP, "unhealthy")
        self.assertFalse(waker.is_ready(APP))
        self.wake_failure(waker.wait_ready(APP), 503)

    def test_unhealthy_after_unpause_wake(self):
        """A ready instance woken by an unpause that later turns unhealthy is no longer ready."""
        self.runtime.add_managed(APP, state="running", healthcheck=True)
        self.runtime.set_health(APP, "healthy")
        self.successResultOf(self.runtime.pause(APP))
        waker = self.waker()
        self.woken(waker)
        self.assertEqual(self.runtime.calls["unpause"], 1)
        self.runtime.set_health(APP, "unhealthy")
        self.assertFalse(waker.is_ready(APP))

    def test_start_fails(self):
        """The runtime failing to start the container: 502 naming the failure, phase "start"."""
        self.runtime.add_managed(APP)
        self.runtime.start = lambda name: fail(RuntimeFailure("boom"))
        waker = self.waker()
        error = self.wake_failure(waker.wait_ready(APP), 502)
        self.assertIn("boom", error.detail)
        self.assertIn(APP, error.detail)
        self.assertEqual(error.phase, "start")
        self.assertEqual(waker.held, 0)
        self.assertFalse(self.waking(waker, APP))

    def test_start_fails_later(self):
        """A start that fails after a while fails every held caller."""
        self.runtime.add_managed(APP)
        started = Deferred()
        self.runtime.start = lambda name: started
        waker = self.waker()
        waiters = [waker.wait_ready(APP) for _ in range(3)]
        self.clock.advance(1)
        started.errback(RuntimeFailure("no space left on device"))
        for d in waiters:
            self.assertIn("no space left on device", self.wake_failure(d, 502).detail)

    def test_start_no_such_instance(self):
        """The container vanishing under the start: 404."""
        self.runtime.add_managed(APP)
        self.runtime.start = lambda name: fail(NoSuchInstance("gone"))
        waker = self.waker()
        self.wake_failure(waker.wait_ready(APP), 404)

    def test_start_unexpected_error(self):
        """A bug below the waker: 502 for the callers, the traceback logged."""
        self.runtime.add_managed(APP)
        self.runtime.start = lambda name: fail(ZeroDivisionError())
        waker = self.waker()
        error = self.wake_failure(waker.wait_ready(APP), 502)
        self.assertIn("unexpectedly", error.detail)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_failure_then_retry(self):
        """After a failed wake the next caller begins a new one."""
        self.runtime.add_managed(APP)
        self.runtime.crash_on_start[APP] = 1
        waker = self.waker()
        self.wake_failure(waker.wait_ready(APP), 502)
        del self.runtime.crash_on_start[APP]
        self.woken(waker)
        self.assertEqual(self.runtime.calls["start"], 2)


class BoundsTests(WakerTestsMixin, SynchronousTestCase):
    """Held callers are bounded per instance and in total."""

    def test_per_instance(self):
        """The fourth caller for one instance with max_held_per_instance=3 gets 503 and Retry-After."""
        self.runtime.add_managed(APP)
        self.runtime.add_managed(OTHER)
        waker = self.waker(max_held_per_instance=3)
        held = [waker.wait_ready(APP) for _ in range(3)]
        error = self.wake_failure(waker.wait_ready(APP), 503)
        self.assertEqual(error.retry_after, RETRY_AFTER)
        self.assertIsNotNone(error.retry_after)
        self.assertEqual(waker.held, 3)
        self.assertNoResult(waker.wait_ready(OTHER))
        self.assertEqual(waker.held, 4)
        for d in held:
            self.assertNoResult(d)
        self.plan.probes[0].callback(True)
        for d in held:
            self.successResultOf(d)
        self.assertEqual(waker.held, 1)

    def test_global(self):
        """max_held counts callers of every instance together."""
        self.runtime.add_managed(APP)
        self.runtime.add_managed(OTHER)
        waker = self.waker(max_held=4, max_held_per_instance=3)
        apps = [waker.wait_ready(APP) for _ in range(3)]
        others = [waker.wait_ready(OTHER)]
        self.assertEqual(waker.held, 4)
        error = self.wake_failure(waker.wait_ready(OTHER), 503)
        self.assertEqual(error.retry_after, RETRY_AFTER)
        self.assertIn("4", error.detail)
        self.assertEqual(waker.held, 4)
        self.plan.probes[0].callback(True)
        for d in apps:
            self.successResultOf(d)
        self.assertEqual(waker.held, 1)
        others.append(waker.wait_ready(OTHER))
        self.assertEqual(waker.held, 2)
        self.plan.probes[1].callback(True)
        for d in others:
            self.successResultOf(d)
        self.assertEqual(waker.held, 0)

    def test_ready_is_not_bounded(self):
        """Callers of a ready instance are not held, so the bounds do not apply to them."""
        self.runtime.add_managed(APP)
        waker = self.waker(max_held=1, max_held_per_instance=1)
        self.woken(waker)
        for _ in range(5):
            self.assertAlreadyReady(waker.wait_ready(APP))


class CancellationTests(WakerTestsMixin, SynchronousTestCase):
    """A caller that goes away is dropped; the wake goes on."""

    def test_cancel_one(self):
        """Cancelling one waiter drops it; the others are woken."""
        self.runtime.add_managed(APP)
        waker = self.waker()
        waiters = [waker.wait_ready(APP) for _ in range(3)]
        waiters[1].cancel()
        self.failureResultOf(waiters[1], CancelledError)
        self.assertEqual(waker.held, 2)
        self.assertTrue(self.waking(waker, APP))
        self.assertEqual(self.plan.cancelled, [])
        self.plan.probes[0].callback(True)
        self.assertWoken(waiters[0])
        self.assertWoken(waiters[2])
        self.assertEqual(waker.held, 0)

    def test_cancel_all(self):
        """Cancelling every waiter does not cancel the wake: the instance still becomes ready."""
        self.runtime.add_managed(APP)
        self.runtime.hold_next_start(APP)
        waker = self.waker()
        waiters = [waker.wait_ready(APP) for _ in range(3)]
        for d in waiters:
            d.cancel()
            self.failureResultOf(d, CancelledError)
        self.assertEqual(waker.held, 0)
        self.assertTrue(self.waking(waker, APP))
        self.runtime.held_starts[APP].callback(None)
        self.plan.probes[0].callback(True)
        self.assertTrue(waker.is_ready(APP))
        self.assertFalse(self.waking(waker, APP))
        self.assertEqual(self.runtime.calls["start"], 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel_frees_bound(self):
        """A cancelled waiter frees its place under max_held_per_instance."""
        self.runtime.add_managed(APP)
        waker = self.waker(max_held_per_instance=1)
        first = waker.wait_ready(APP)
        self.wake_failure(waker.wait_ready(APP), 503)
        first.cancel()
        self.failureResultOf(first, CancelledError)
        second = waker.wait_ready(APP)
        self.plan.probes[0].callback(True)
        self.assertWoken(second)

    def test_cancel_after_release(self):
        """Cancelling a waiter that already fired changes nothing."""
        self.runtime.add_managed(APP)
        waker = self.waker()
        d = waker.wait_ready(APP)
        self.plan.probes[0].callback(True)
        d.cancel()
        self.assertWoken(d)
        self.assertEqual(waker.held, 0)


class _SilentProber:
    """A prober whose TCP attempts stay in flight until cancelled."""

    def tcp_check(self, host, port):
        return Deferred()


class RealPlanTests(SynchronousTestCase):
    """The waker with the real L{ReadinessPlan} (its probe is a L{poll_until} loop)."""

    def test_cancelled_probe_not_logged(self):
        """Docker's healthy event beating the probe logs no error for the cancelled probe."""
        clock = Clock()
        runtime = MemoryRuntime()
        runtime.add_managed(APP, labels={"wakeproxy.port": "8080"}, healthcheck=True)
        waker = Waker(clock, runtime, ReadinessPlan(clock, _SilentProber()), wake_timeout=TIMEOUT)
        self.addCleanup(waker.stop)
        d = waker.wait_ready(APP)
        clock.advance(0.05)
        runtime.set_health(APP, "healthy")
        self.assertIsInstance(self.successResultOf(d).report, WakeReport)
        del d
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(CancelledError), [])


class SleepAndHaltTests(WakerTestsMixin, SynchronousTestCase):
    """Going down (idle sleep, the API's halt) and coming back never race."""

    def setUp(self):
        WakerTestsMixin.setUp(self)
        self.runtime.add_managed(APP)

    def hold_stop(self):
        """Make the runtime's next stop wait for the returned Deferred."""
        stopping = Deferred()
        real_stop = self.runtime.stop

        def stop(name, timeout):
            return stopping.addCallback(lambda _: real_stop(name, timeout))

        self.runtime.stop = stop
        return stopping

    def test_sleep_stops_an_idle_instance(self):
        waker = self.waker()
        self.woken(waker)
        self.assertIs(self.successResultOf(waker.sleep(APP)), True)
        self.assertEqual(self.state(), "exited")
        self.assertFalse(waker.is_ready(APP))

    def test_sleep_refused_while_busy(self):
        waker = self.waker()
        self.woken(waker)
        waker.exchange_began(APP)
        self.assertIs(self.successResultOf(waker.sleep(APP)), False)
        self.assertEqual(self.state(), "running")
        waker.exchange_ended(APP)
        self.assertIs(self.successResultOf(waker.sleep(APP, "pause")), True)
        self.assertEqual(self.state(), "paused")

    def test_request_during_a_stop_is_held_and_wakes_it_again(self):
        waker = self.waker()
        self.woken(waker)
        stopping = self.hold_stop()
        halted = waker.halt(APP, 5)
        self.assertFalse(waker.is_ready(APP))
        held = waker.wait_ready(APP)
        self.assertNoResult(held)
        self.assertEqual(self.runtime.calls["start"], 1)  # nothing starts while it goes down
        stopping.callback(None)
        self.successResultOf(halted)
        self.assertEqual(self.runtime.calls["start"], 2)  # then it is woken again for the held request
        self.plan.probes[-1].callback(True)
        self.assertWoken(held)

    def test_halt_of_an_unknown_name_fails_and_keeps_nothing(self):
        waker = self.waker()
        self.failureResultOf(waker.halt("nope", 5), NoSuchInstance)
        self.assertEqual(waker.describe("nope")["inflight"], 0)
        self.assertNotIn("nope", waker._instances)
