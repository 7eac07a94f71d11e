# -*- test-case-name: tests.test_peers -*-
"""
Tests for replicas acting as one without Docker: the waker's fences (L{wakeproxy.waking.fences}) on a
Clock, the fence protocol's decision (L{wakeproxy.waking.peers}), two replicas' idle stoppers over one
L{MemoryRuntime} asking each other in memory, the first process of C{--workers} answering for its group
(L{GroupFences}), and the C{/peer} resource.
"""

import json
import os
import tempfile
from io import BytesIO

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from tests.test_waker import APP, TIMEOUT, FakePlan
from wakeproxy.settings import PeerSettings
from wakeproxy.api.peer import PeerResource
from wakeproxy.runtime.memory import MemoryRuntime
from wakeproxy.waking.idle import PEER_RETRY, IdleStopper
from wakeproxy.waking.peers import GroupFences, PeerError, Peers, group_report, peer_idle
from wakeproxy.waking.states import State
from wakeproxy.waking.waker import Waker

IDLE = 5.0


class _Replica:
    """One replica: a waker and an idle stopper on a shared runtime and clock."""

    def __init__(self, case, clock, runtime, peers=None):
        self.plan = FakePlan(clock)
        case.addCleanup(self.plan.consume)
        self.waker = Waker(clock, runtime, self.plan, wake_timeout=TIMEOUT)
        case.addCleanup(self.waker.stop)
        self.logged = []
        self.stopper = IdleStopper(clock, runtime, self.waker, IDLE, peers=peers)
        self.stopper.log = Logger(observer=self.logged.append)

    def wake(self, name=APP):
        d = self.waker.wait_ready(name)
        if self.plan.probes and not self.plan.probes[-1].called:
            self.plan.probes[-1].callback(True)
        return self.successful(d)

    @staticmethod
    def successful(d):
        results = []
        d.addBoth(results.append)
        (result,) = results
        if isinstance(result, Exception) or hasattr(result, "raiseException"):
            result.raiseException()
        return result


def in_memory(wakers):
    """A peer caller that reaches C{wakers[i]} directly (URL http://peer<i>), as the /peer resource would."""

    def call(method, url, doc):
        _, _, rest = url.partition("//peer")
        index, _, path = rest.partition("/")
        _, verb, name = path.split("/")
        waker = wakers[int(index)]
        if waker is None:
            return fail(ConnectionRefusedError("connection refused"))
        if verb == "fence":
            return succeed((200, json.dumps(waker.fence(name, doc["token"], doc["seconds"])).encode()))
        return succeed((200, json.dumps({"released": waker.release(name, doc["token"])}).encode()))

    return call


class FenceTests(SynchronousTestCase):
    """The waker fenced by a peer: requests held, released or expired, stopped meanwhile."""

    def setUp(self):
        self.clock = Clock()
        self.runtime = MemoryRuntime()
        self.runtime.add_managed(APP, labels={"wakeproxy.port": "8080"})
        self.replica = _Replica(self, self.clock, self.runtime)
        self.waker = self.replica.waker
        self.replica.wake()
        self.waker.log = Logger(observer=self.replica.logged.append)

    def test_fence_holds_and_release_resumes(self):
        report = self.waker.fence(APP, "t1", 30)
        self.assertEqual((report["fenced"], report["state"], report["inflight"], report["held"]),
                         (True, "fenced", 0, 0))
        self.assertIsNone(self.waker.ticket(APP))
        held = self.waker.wait_ready(APP)
        self.assertNoResult(held)
        self.assertTrue(self.waker.release(APP, "t1"))
        ticket = self.successResultOf(held)
        self.assertIsNone(ticket.report)
        self.assertIs(self.waker.ticket(APP), ticket)
        self.assertEqual(self.runtime.calls["start"], 1)
        self.assertFalse(self.waker.release(APP, "t1"))

    def test_reports_activity(self):
        self.waker.exchange_began(APP)
        self.clock.advance(2)
        report = self.waker.fence(APP, "t1", 30)
        self.assertEqual(report["inflight"], 1)
        self.waker.exchange_ended(APP)
        self.clock.advance(3)
        self.assertEqual(self.waker.fence(APP, "t1", 30)["idle_for"], 3.0)
        self.waker.release(APP, "t1")

    def test_two_fences_both_must_go(self):
        self.waker.fence(APP, "a", 30)
        self.waker.fence(APP, "b", 30)
        self.waker.release(APP, "a")
        self.assertEqual(self.waker.state(APP), State.FENCED)
        self.waker.release(APP, "b")
        self.assertEqual(self.waker.state(APP), State.READY)

    def test_fence_expires(self):
        self.waker.fence(APP, "t1", 30)
        held = self.waker.wait_ready(APP)
        self.clock.advance(29.9)
        self.assertNoResult(held)
        self.clock.advance(0.1)
        self.successResultOf(held)
        self.assertEqual(self.waker.state(APP), State.READY)
        self.assertTrue(any("expired" in e["log_format"] for e in self.replica.logged))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopped_while_fenced_wakes_held_callers(self):
        """The peer stopped it: when the fence goes, callers held meanwhile wake it again."""
        self.waker.fence(APP, "t1", 30)
        held = self.waker.wait_ready(APP)
        self.successResultOf(self.runtime.stop(APP, 1))
        self.assertEqual(self.waker.state(APP), State.FENCED)
        self.waker.release(APP, "t1")
        self.assertEqual(self.waker.state(APP), State.WAKING)
        self.assertEqual(self.runtime.calls["start"], 2)
        self.replica.plan.probes[-1].callback(True)
        self.assertIsNotNone(self.successResultOf(held).report)

    def test_waking_is_not_fenced(self):
        self.successResultOf(self.runtime.stop(APP, 1))
        self.runtime.hold_next_start(APP)
        waiting = self.waker.wait_ready(APP)
        report = self.waker.fence(APP, "t1", 30)
        self.assertEqual((report["fenced"], report["state"], report["held"]), (False, "waking", 1))
        self.assertIsNone(peer_idle(report, IDLE) and None)
        self.assertIsNotNone(peer_idle(report, IDLE))
        self.runtime.held_starts[APP].callback(None)
        self.replica.plan.probes[-1].callback(True)
        self.successResultOf(waiting)

    def test_own_stop_drops_fences(self):
        self.waker.fence(APP, "t1", 30)
        self.assertIs(self.successResultOf(self.waker.sleep(APP)), True)
        self.assertFalse(self.waker.release(APP, "t1"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unknown_instance(self):
        report = self.waker.fence("nope", "t1", 30)
        self.assertEqual(report["known"], False)
        self.assertIsNone(peer_idle(report, IDLE))


class DecisionTests(SynchronousTestCase):
    """L{peer_idle}: what a peer's fence report means."""

    def test_table(self):
        base = {"known": True, "fenced": True, "state": "fenced", "inflight": 0, "held": 0, "idle_for": None}
        cases = [
            ({}, None),
            ({"idle_for": 5.0}, None),
            ({"idle_for": 4.9}, "last activity"),
            ({"inflight": 1}, "in flight"),
            ({"held": 2}, "held"),
            ({"fenced": False, "state": "waking"}, "did not fence"),
            ({"idle_for": "x"}, "not a number"),
            ({"known": False, "fenced": False}, None),
        ]
        for change, expected in cases:
            reason = peer_idle(dict(base, **change), IDLE)
            if expected is None:
                self.assertIsNone(reason, change)
            else:
                self.assertIn(expected, reason, change)
        self.assertIn("JSON object", peer_idle([], IDLE))


class PeersTests(SynchronousTestCase):
    """L{Peers.fence} over every peer: all idle, one busy, one unreachable, one answering an error."""

    def setUp(self):
        self.clock = Clock()
        self.runtime = MemoryRuntime()
        self.runtime.add_managed(APP, labels={"wakeproxy.port": "8080"})
        self.others = [_Replica(self, self.clock, self.runtime) for _ in range(2)]
        for other in self.others:
            other.wake()
        self.clock.advance(IDLE)

    def peers(self, call):
        return Peers(["http://peer0", "http://peer1"], call, fence_seconds=30)

    def test_all_idle(self):
        peers = self.peers(in_memory([o.waker for o in self.others]))
        token, reason, unreachable = self.successResultOf(peers.fence(APP, IDLE))
        self.assertEqual((reason, unreachable), (None, False))
        for other in self.others:
            self.assertEqual(other.waker.state(APP), State.FENCED)
        self.successResultOf(peers.release(APP, token))
        for other in self.others:
            self.assertEqual(other.waker.state(APP), State.READY)

    def test_one_busy(self):
        self.others[1].waker.exchange_began(APP)
        peers = self.peers(in_memory([o.waker for o in self.others]))
        token, reason, unreachable = self.successResultOf(peers.fence(APP, IDLE))
        self.assertIn("peer1", reason)
        self.assertIn("in flight", reason)
        self.assertFalse(unreachable)
        self.successResultOf(peers.release(APP, token))
        self.assertEqual(self.others[0].waker.state(APP), State.READY)

    def test_unreachable(self):
        peers = self.peers(in_memory([self.others[0].waker, None]))
        token, reason, unreachable = self.successResultOf(peers.fence(APP, IDLE))
        self.assertTrue(unreachable)
        self.assertIn("peer1 could not be asked", reason)
        self.assertIn("refused", reason)
        self.successResultOf(peers.release(APP, token))
        self.assertEqual(self.others[0].waker.state(APP), State.READY)

    def test_error_answer(self):
        def call(method, url, doc):
            return succeed((401, b'{"title": "Unauthorized"}'))

        token, reason, unreachable = self.successResultOf(self.peers(call).fence(APP, IDLE))
        self.assertTrue(unreachable)
        self.assertIn("answered 401", reason)

    def test_slow_peer_is_not_idle(self):
        """A call that never answers fails by its own deadline (the http caller's addTimeout): not idle."""
        pending = Deferred()
        d = self.peers(lambda method, url, doc: pending).fence(APP, IDLE)
        self.assertNoResult(d)
        pending.errback(PeerError("timed out"))
        self.assertTrue(self.successResultOf(d)[2])


class TwoReplicasTests(SynchronousTestCase):
    """Two idle stoppers over one runtime, each the other's peer."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(100)  # activity times are never 0 (0 reads as "never")
        self.runtime = MemoryRuntime()
        self.runtime.add_managed(APP, labels={"wakeproxy.port": "8080"})
        wakers = [None, None]
        self.alive = [True, True]
        call = in_memory(wakers)

        def routed(method, url, doc):
            index = int(url.partition("//peer")[2][0])
            if not self.alive[index]:
                return fail(ConnectionRefusedError("connection refused"))
            return call(method, url, doc)

        self.a = _Replica(self, self.clock, self.runtime, Peers(["http://peer1"], routed))
        self.b = _Replica(self, self.clock, self.runtime, Peers(["http://peer0"], routed))
        wakers[:] = [self.a.waker, self.b.waker]
        self.a.wake()

    def sweep(self, seconds):
        for _ in range(int(seconds)):
            self.clock.advance(1)
            for replica, alive in zip((self.a, self.b), self.alive):
                if alive:  # a replica that is down neither answers nor sweeps
                    replica.stopper.sweep()

    def test_busy_through_a_not_stopped_by_b(self):
        for _ in range(3):
            self.a.waker.exchange_began(APP)
            self.sweep(IDLE)
            self.a.waker.exchange_ended(APP)
            self.sweep(1)
        self.assertEqual(self.runtime.get(APP).state, "running")
        self.assertNotIn("stop", self.runtime.calls)
        self.assertEqual(self.a.waker.state(APP), State.READY)
        self.assertEqual(self.b.waker.state(APP), State.UNREADY)

    def test_both_quiet_stopped_once(self):
        self.sweep(IDLE + 2)
        self.assertEqual(self.runtime.get(APP).state, "exited")
        self.assertEqual(self.runtime.calls["stop"], 1)
        self.assertEqual([w.state(APP) for w in (self.a.waker, self.b.waker)], [State.UNREADY, State.UNREADY])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_peer_down_nothing_stopped(self):
        self.alive[1] = False
        self.sweep(IDLE + 2 * PEER_RETRY)
        self.assertEqual(self.runtime.get(APP).state, "running")
        self.assertNotIn("stop", self.runtime.calls)
        warnings = [e for e in self.a.logged if e["log_level"].name == "warn"]
        self.assertTrue(warnings)
        self.assertIn("could not be asked", warnings[0]["reason"])
        self.assertLessEqual(len(warnings), 3)  # retried every PEER_RETRY seconds, not every sweep
        self.alive[1] = True
        self.sweep(PEER_RETRY + 1)
        self.assertEqual(self.runtime.get(APP).state, "exited")


class GroupFencesTests(SynchronousTestCase):
    """A peer on another host fences the first process of a C{--workers} group: the fence goes to every worker."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(100)
        self.runtime = MemoryRuntime()
        self.runtime.add_managed(APP, labels={"wakeproxy.port": "8080"})
        self.first, *self.workers = [_Replica(self, self.clock, self.runtime) for _ in range(3)]
        for replica in [self.first] + self.workers:
            replica.wake()
        self.wakers = [w.waker for w in self.workers]
        self.calls = []
        call = in_memory(self.wakers)

        def counted(method, url, doc):
            self.calls.append(url)
            return call(method, url, doc)

        self.group = GroupFences(self.first.waker, Peers(["http://peer0", "http://peer1"], counted))

    def states(self):
        return [r.waker.state(APP) for r in [self.first] + self.workers]

    def test_all_idle_fenced_everywhere_then_released_everywhere(self):
        self.clock.advance(IDLE)
        report = self.successResultOf(self.group.fence(APP, "t", 30))
        self.assertEqual(report, {"known": True, "fenced": True, "state": "fenced", "inflight": 0, "held": 0,
                                  "idle_for": IDLE})
        self.assertIsNone(peer_idle(report, IDLE))
        self.assertEqual(self.states(), [State.FENCED] * 3)
        self.assertIs(self.successResultOf(self.group.release(APP, "t")), True)
        self.assertEqual(self.states(), [State.READY] * 3)
        self.assertEqual(self.calls, ["http://peer0/peer/fence/" + APP, "http://peer1/peer/fence/" + APP,
                                      "http://peer0/peer/release/" + APP, "http://peer1/peer/release/" + APP])

    def test_busy_only_in_a_worker_sums_and_most_recent_activity(self):
        self.clock.advance(IDLE)
        self.wakers[1].exchange_began(APP)
        self.wakers[1].exchange_began(APP)
        self.wakers[0].exchange_ended(APP)  # activity at the worker 0 just now
        self.clock.advance(1)
        report = self.successResultOf(self.group.fence(APP, "t", 30))
        self.assertEqual((report["fenced"], report["inflight"], report["held"], report["idle_for"]), (True, 2, 0, 1.0))
        self.assertIn("2 requests in flight", peer_idle(report, IDLE))
        self.successResultOf(self.group.release(APP, "t"))

    def test_worker_refusing_is_not_idle(self):
        """Worker 1 is waking another instance: it does not take the fence, so neither does the group."""
        self.runtime.add_managed("other", labels={"wakeproxy.port": "8081"})
        self.runtime.hold_next_start("other")
        waiting = self.wakers[1].wait_ready("other")
        report = self.successResultOf(self.group.fence("other", "t", 30))
        self.assertEqual((report["fenced"], report["held"]), (False, 1))
        self.assertIn("worker http://peer1 did not fence the instance (it is waking)", peer_idle(report, IDLE))
        self.assertEqual([self.first.waker.state("other"), self.wakers[0].state("other")], [State.FENCED] * 2)
        self.successResultOf(self.group.release("other", "t"))
        self.assertEqual([self.first.waker.state("other"), self.wakers[0].state("other")], [State.UNREADY] * 2)
        self.runtime.held_starts["other"].callback(None)
        self.workers[1].plan.probes[-1].callback(True)
        self.successResultOf(waiting)

    def test_unreachable_worker_is_not_idle_and_the_others_are_released(self):
        self.wakers[1] = None
        self.clock.advance(IDLE)
        report = self.successResultOf(self.group.fence(APP, "t", 30))
        self.assertFalse(report["fenced"])
        self.assertIn("worker http://peer1 could not be asked (connection refused)", peer_idle(report, IDLE))
        self.assertEqual(self.states()[:2], [State.FENCED] * 2)  # until the peer's release, or their expiry
        self.assertIs(self.successResultOf(self.group.release(APP, "t")), True)
        self.assertEqual(self.states()[:2], [State.READY] * 2)

    def test_unknown_everywhere(self):
        report = self.successResultOf(self.group.fence("nope", "t", 30))
        self.assertEqual((report["known"], report["fenced"]), (False, False))
        self.assertIsNone(peer_idle(report, IDLE))
        self.assertIs(self.successResultOf(self.group.release("nope", "t")), False)

    def test_group_report_table(self):
        idle = {"known": True, "fenced": True, "state": "fenced", "inflight": 0, "held": 0, "idle_for": 9.0}
        unknown = {"known": False, "fenced": False, "state": None, "inflight": 0, "held": 0, "idle_for": None}
        cases = [  # (here, workers' answers, fenced, idle_for, reason)
            (idle, [dict(idle, idle_for=None)], True, 9.0, None),
            (dict(idle, idle_for=None), [dict(idle, idle_for=None)], True, None, None),
            (unknown, [dict(idle, idle_for=3.0)], True, 3.0, None),  # a process that has not read the engine yet
            (idle, [unknown], True, 9.0, None),
            (dict(idle, fenced=False, state="stopping"), [idle], False, 9.0, None),
            (idle, [[1, 2]], False, 9.0, "JSON object"),
            (unknown, [unknown], False, None, None),
        ]
        for here, answers, fenced, idle_for, reason in cases:
            report = group_report(here, [("http://w{}".format(i), True, a) for i, a in enumerate(answers)])
            self.assertEqual((report["fenced"], report["idle_for"]), (fenced, idle_for), (here, answers))
            self.assertIn(reason or "", report.get("reason", ""), (here, answers))


class ResourceTests(SynchronousTestCase):
    """C{/peer/fence|release/<name>}: the shared secret, the body, problem+json for every error."""

    SECRET = "s" * 20

    def setUp(self):
        self.clock = Clock()
        self.runtime = MemoryRuntime()
        self.runtime.add_managed(APP, labels={"wakeproxy.port": "8080"})
        self.replica = _Replica(self, self.clock, self.runtime)
        self.replica.wake()
        self.resource = PeerResource(self.replica.waker, self.SECRET)

    def call(self, verb, name=APP, body=None, secret=SECRET, method=b"POST"):
        request = DummyRequest([verb.encode(), name.encode()] if verb else [])
        request.method = method
        request.content = BytesIO(json.dumps(body).encode() if body is not None else b"")
        if secret is not None:
            request.requestHeaders.setRawHeaders(b"authorization", [b"Bearer " + secret.encode()])
        self.resource.render(request)
        self.assertTrue(request.finished)
        code = request.responseCode or 200
        doc = json.loads(b"".join(request.written))
        if code != 200:
            self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [b"application/problem+json"])
            self.assertEqual(doc["status"], code)
        return code, doc

    def test_fence_and_release(self):
        code, doc = self.call("fence", body={"token": "t", "seconds": 10})
        self.assertEqual((code, doc["fenced"]), (200, True))
        self.assertEqual(self.call("release", body={"token": "t"}), (200, {"released": True}))
        self.assertEqual(self.replica.waker.state(APP), State.READY)

    def test_errors(self):
        self.assertEqual(self.call("fence", body={"token": "t", "seconds": 1}, secret=None)[0], 401)
        self.assertEqual(self.call("fence", body={"token": "t", "seconds": 1}, secret="x" * 20)[0], 401)
        self.assertEqual(self.call("nope", body={"token": "t"})[0], 404)
        self.assertEqual(self.call(None)[0], 404)
        self.assertEqual(self.call("fence", body={"token": "t", "seconds": 1}, method=b"GET")[0], 405)
        for body in (None, [], {"token": ""}, {"token": 3, "seconds": 1}, {"token": "t"},
                     {"token": "t", "seconds": 0}, {"token": "t", "seconds": 10000}, {"token": "t", "seconds": True}):
            self.assertEqual(self.call("fence", body=body)[0], 400, body)
        self.assertEqual(self.replica.waker.state(APP), State.READY)


class LaterResourceTests(SynchronousTestCase):
    """C{/peer} on fences that answer later (L{GroupFences}): written when they do, not after the client left."""

    def setUp(self):
        self.pending = Deferred()
        self.resource = PeerResource(self, ResourceTests.SECRET)

    def fence(self, name, token, seconds):
        return self.pending

    def request(self):
        request = DummyRequest([b"fence", APP.encode()])
        request.method = b"POST"
        request.content = BytesIO(json.dumps({"token": "t", "seconds": 10}).encode())
        request.requestHeaders.setRawHeaders(b"authorization", [b"Bearer " + ResourceTests.SECRET.encode()])
        self.resource.render(request)
        return request

    def test_written_when_it_fires(self):
        request = self.request()
        self.assertFalse(request.finished)
        self.pending.callback({"fenced": True})
        self.assertEqual(json.loads(b"".join(request.written)), {"fenced": True})

    def test_client_gone_nothing_written(self):
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        request = self.request()
        request.processingFailed(Failure(ConnectionLost()))
        self.pending.callback({"fenced": True})
        self.assertEqual(request.written, [])


class OptionsTests(SynchronousTestCase):
    """C{--peer}, C{--peer-secret-file}, C{--peer-fence-timeout}: refused with a sentence when wrong."""

    def secret(self, text):
        fd, path = tempfile.mkstemp(prefix="wakeproxy-peer-secret-")
        os.close(fd)
        self.addCleanup(os.remove, path)
        with open(path, "w") as f:
            f.write(text + "\n")
        return path

    def parse(self, *argv):
        from wakeproxy.tap import Options

        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_accepted(self):
        options = self.parse("--peer", "http://127.0.0.1:8009", "--peer", "http://127.0.0.1:8010",
                             "--peer-secret-file", self.secret("x" * 16), "--peer-fence-timeout", "20s")
        self.assertEqual(options.settings.peers,
                         PeerSettings(("http://127.0.0.1:8009", "http://127.0.0.1:8010"), "x" * 16, 20.0))
        self.assertEqual(self.parse().settings.peers, PeerSettings())

    def test_refused(self):
        from twisted.python.usage import UsageError

        for argv, says in [
            (["--peer", "http://127.0.0.1:8009"], "--peer-secret-file"),
            (["--peer", "127.0.0.1:8009"], "http://"),
            (["--peer-secret-file", self.secret("short")], "16 characters"),
            (["--peer-secret-file", os.path.join(tempfile.gettempdir(), "wakeproxy-no-such-secret")], "cannot read"),
            (["--peer-fence-timeout", "soon"], "--peer-fence-timeout"),
            (["--peer", "http://127.0.0.1:8009", "--peer-secret-file", self.secret("x" * 16),
              "--peer-fence-timeout", "14s", "--stop-timeout", "10s"], "outlast the stop"),
        ]:
            with self.assertRaises(UsageError) as raised:
                self.parse(*argv)
            self.assertIn(says, str(raised.exception), argv)
