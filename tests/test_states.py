# -*- test-case-name: tests.test_states -*-
"""
Tests for L{wakeproxy.waking.states}: the waker's transition table, cell by cell (every state × event,
legal and illegal), and the waker refusing (and logging) the illegal ones in each of its real states.
"""

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from tests.test_waker import APP, TIMEOUT, FakePlan
from wakeproxy.runtime.memory import MemoryRuntime
from wakeproxy.waking.states import TRANSITIONS, Event, State, Transition, transition
from wakeproxy.waking.waker import REFUSED, Waker

U, W, R, S, F = State.UNREADY, State.WAKING, State.READY, State.STOPPING, State.FENCED
(HOLD, WOKEN, WAKE_FAILED, EXPIRED, RUNNING, UNHEALTHY, EXITED, SLEEP, HALT, DOWN, FENCE, RESUME, RELEASE) = (
    Event.HOLD, Event.WOKEN, Event.WAKE_FAILED, Event.EXPIRED, Event.RUNNING, Event.UNHEALTHY, Event.EXITED,
    Event.SLEEP, Event.HALT, Event.DOWN, Event.FENCE, Event.RESUME, Event.RELEASE)

#: The specification, one row per event, one column per state (UNREADY, WAKING, READY, STOPPING, FENCED):
#: the next state, or None for an illegal pair.
EXPECTED = {
    HOLD:        (W, W, R, S, F),
    WOKEN:       (None, R, None, None, None),
    WAKE_FAILED: (None, U, None, None, None),
    EXPIRED:     (None, U, None, None, None),
    RUNNING:     (U, W, R, S, F),
    UNHEALTHY:   (U, W, U, S, F),
    EXITED:      (U, W, U, S, F),
    SLEEP:       (S, None, S, None, S),
    HALT:        (S, S, S, S, S),
    DOWN:        (None, None, None, U, None),
    FENCE:       (F, W, F, S, F),
    RESUME:      (None, None, None, None, R),
    RELEASE:     (None, None, None, None, U),
}
COLUMNS = (U, W, R, S, F)


class TableTests(SynchronousTestCase):
    """The table is exactly the specification above, and every action it names exists."""

    def test_every_cell(self):
        """Every state × event: legal with the expected next state, or illegal (absent)."""
        self.assertEqual(set(EXPECTED), set(Event))
        for event, row in EXPECTED.items():
            for state, expected in zip(COLUMNS, row):
                step = transition(state, event)
                if expected is None:
                    self.assertIsNone(step, (state, event))
                else:
                    self.assertIsInstance(step, Transition, (state, event))
                    self.assertEqual(step.next, expected, (state, event))

    def test_no_other_pairs(self):
        """The table holds nothing but state × event pairs."""
        for state, event in TRANSITIONS:
            self.assertIsInstance(state, State)
            self.assertIsInstance(event, Event)

    def test_actions_exist(self):
        """Every action the table names is a method of the waker."""
        for pair, step in TRANSITIONS.items():
            if step.action is not None:
                self.assertTrue(callable(getattr(Waker, step.action, None)), (pair, step.action))

    def test_every_state_has_a_way_out(self):
        """No state is a trap: from each one some event leads to another state."""
        for state in State:
            self.assertTrue(any(step.next is not state for (s, _), step in TRANSITIONS.items() if s is state), state)

    def test_ready_only_by_a_wake(self):
        """The only ways into READY: a finished wake, or the fences going from an instance that was ready."""
        into = {(s, e) for (s, e), step in TRANSITIONS.items() if step.next is R and s is not R}
        self.assertEqual(into, {(W, WOKEN), (F, RESUME)})


class IllegalTransitionTests(SynchronousTestCase):
    """An illegal event in each real state is logged and refused; the instance stays as it was."""

    def setUp(self):
        self.clock = Clock()
        self.runtime = MemoryRuntime()
        self.runtime.add_managed(APP, labels={"wakeproxy.port": "8080"})
        self.plan = FakePlan(self.clock)
        self.addCleanup(self.plan.consume)
        self.waker = Waker(self.clock, self.runtime, self.plan, wake_timeout=TIMEOUT)
        self.addCleanup(self.waker.stop)
        self.logged = []
        self.waker.log = Logger(observer=self.logged.append)

    def in_state(self, state):
        """Bring APP into C{state} through the waker's own API."""
        waker = self.waker
        if state in (R, S):
            d = waker.wait_ready(APP)
            self.plan.probes[-1].callback(True)
            self.successResultOf(d)
        if state is W:
            self.runtime.hold_next_start(APP)
            self.held = waker.wait_ready(APP)
        if state is S:
            stopping = Deferred()
            real_stop = self.runtime.stop
            self.runtime.stop = lambda name, timeout: stopping.addCallback(lambda _: real_stop(name, timeout))
            self.addCleanup(stopping.callback, None)
            waker.halt(APP, 1)
        if state is F:
            waker.fence(APP, "peer", 30)
            self.addCleanup(waker.release, APP, "peer")
        if state is U:
            waker._instance(APP)
        self.assertEqual(waker.state(APP), state)

    def test_illegal_pairs_are_refused(self):
        cells = 0
        for column, state in enumerate(COLUMNS):
            for event, row in EXPECTED.items():
                if row[column] is None:
                    self.refused_in(state, event)
                    cells += 1
        self.assertEqual(cells, 14 + 4 + 8)

    def refused_in(self, state, event):
        where = (state, event)
        self.setUp()
        self.in_state(state)
        instance = self.waker._instances[APP]
        before = dict(vars(instance))
        self.assertIs(self.waker._fire(instance, event), REFUSED, where)
        self.assertEqual(self.waker.state(APP), state, where)
        self.assertEqual(vars(instance), before, where)
        (warning,) = [e for e in self.logged if e["log_format"].startswith("refused")]
        self.assertEqual((warning["event"], warning["state"], warning["instance"]), (event.value, state.value, APP))
        self.assertEqual(warning["log_level"].name, "warn")
        if state is W:
            self.runtime.held_starts[APP].callback(None)
            self.plan.probes[-1].callback(True)
            self.successResultOf(self.held)

    def test_sleep_while_waking_is_refused_quietly(self):
        """The idle stopper's sleep of a waking instance is refused before the table (busy), with no warning."""
        self.in_state(W)
        self.assertIs(self.successResultOf(self.waker.sleep(APP)), False)
        self.assertEqual(self.waker.state(APP), W)
        self.assertEqual([e for e in self.logged if e["log_format"].startswith("refused")], [])
        self.runtime.held_starts[APP].callback(None)
        self.plan.probes[-1].callback(True)
        self.successResultOf(self.held)


class TicketAndHaltTests(SynchronousTestCase):
    """The cells that are new with the table: tickets in READY, a halt while waking or while stopping."""

    def setUp(self):
        self.clock = Clock()
        self.runtime = MemoryRuntime()
        self.plan = FakePlan(self.clock)
        self.addCleanup(self.plan.consume)

    def waker(self):
        waker = Waker(self.clock, self.runtime, self.plan, wake_timeout=TIMEOUT)
        self.addCleanup(waker.stop)
        return waker

    def woken(self, waker):
        d = waker.wait_ready(APP)
        self.plan.probes[-1].callback(True)
        return self.successResultOf(d)

    def held_stops(self):
        """Make every runtime stop wait for a Deferred the test fires; return the list of them."""
        held = []
        real_stop = self.runtime.stop

        def stop(name, timeout):
            d = Deferred()
            held.append(d)
            return d.addCallback(lambda _: real_stop(name, timeout))

        self.runtime.stop = stop
        return held

    def test_ticket_carries_snapshot_and_address(self):
        """The wake's ticket names the snapshot it was ready in and the app's address; later ones no report."""
        self.runtime.add_managed(APP, labels={"wakeproxy.port": "8080"})
        waker = self.waker()
        woken = self.woken(waker)
        self.assertIs(woken.container, self.runtime.get(APP))
        self.assertEqual(woken.reach.address, ("127.0.0.1", 8080))
        self.assertIsNotNone(woken.report)
        again = self.successResultOf(waker.wait_ready(APP))
        self.assertIs(again, waker.ticket(APP))
        self.assertIsNone(again.report)
        self.assertEqual((again.container, again.reach), (woken.container, woken.reach))

    def test_ticket_says_why_there_is_no_address(self):
        """A tenant's port outside the policy, or no port label: the ticket says which, with no address."""
        self.runtime.add_managed(APP, labels={"wakeproxy.port": "22", "wakeproxy.owner": "bob"})
        self.runtime.add_managed("bare")
        waker = self.waker()
        self.plan.probing = False
        d = waker.wait_ready(APP)
        self.clock.advance(0)
        refused = self.successResultOf(d).reach
        self.assertIsNone(refused.address)
        self.assertIn("outside the allowed ports", refused.refused)
        d = waker.wait_ready("bare")
        self.clock.advance(0)
        unknown = self.successResultOf(d).reach
        self.assertEqual((unknown.address, unknown.refused), (None, None))
        self.assertIn("wakeproxy.port", unknown.unknown)

    def test_ticket_follows_the_snapshot(self):
        """READY and a new snapshot (health): the ticket is renewed; no ticket once it is not ready."""
        self.runtime.add_managed(APP, labels={"wakeproxy.port": "8080"}, healthcheck=True)
        waker = self.waker()
        first = self.woken(waker)
        self.runtime.set_health(APP, "healthy")
        self.assertEqual(waker.state(APP), R)
        self.assertIs(waker.ticket(APP).container, self.runtime.get(APP))
        self.assertIsNot(waker.ticket(APP).container, first.container)
        self.runtime.exit(APP)
        self.assertEqual(waker.state(APP), U)
        self.assertIsNone(waker.ticket(APP))

    def test_halt_while_waking(self):
        """A halt during a wake drops the wake; its held callers stay held and wake the instance once down."""
        self.runtime.add_managed(APP)
        self.runtime.hold_next_start(APP)
        waker = self.waker()
        held = [waker.wait_ready(APP) for _ in range(2)]
        start = self.runtime.held_starts[APP]
        stops = self.held_stops()
        halted = waker.halt(APP, 5)
        self.assertTrue(start.called, "the wake's start was not cancelled")
        self.assertEqual(waker.state(APP), S)
        self.assertTrue(waker.describe(APP)["stopping"])
        self.assertFalse(waker.describe(APP)["waking"])
        for d in held:
            self.assertNoResult(d)
        stops[0].callback(None)
        self.successResultOf(halted)
        self.assertEqual(waker.state(APP), W)
        self.assertEqual(self.runtime.calls["start"], 2)
        self.plan.probes[-1].callback(True)
        tickets = [self.successResultOf(d) for d in held]
        self.assertIsNotNone(tickets[0].report)
        self.assertEqual(waker.state(APP), R)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_halt_while_stopping(self):
        """A second halt during a stop: the instance is down only once both stops finished."""
        self.runtime.add_managed(APP)
        waker = self.waker()
        self.woken(waker)
        stops = self.held_stops()
        first = waker.halt(APP, 5)
        second = waker.halt(APP, 5)
        held = waker.wait_ready(APP)
        stops[0].callback(None)
        self.successResultOf(first)
        self.assertEqual(waker.state(APP), S)
        self.assertNoResult(held)
        self.assertEqual(self.runtime.calls["start"], 1)
        stops[1].callback(None)
        self.successResultOf(second)
        self.assertEqual(self.runtime.calls["start"], 2)
        self.plan.probes[-1].callback(True)
        self.assertIsNotNone(self.successResultOf(held).report)

    def test_failed_stop_is_down_too(self):
        """A stop that fails still ends STOPPING: the failure goes to the caller, held requests wake it."""
        self.runtime.add_managed(APP)
        waker = self.waker()
        self.woken(waker)
        stops = self.held_stops()
        halted = waker.halt(APP, 5)
        held = waker.wait_ready(APP)
        stops[0].errback(ZeroDivisionError())
        self.failureResultOf(halted, ZeroDivisionError)
        self.assertEqual(waker.state(APP), W)
        self.plan.probes[-1].callback(True)
        self.successResultOf(held)
