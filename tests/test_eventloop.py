"""L{wakeproxy.eventloop.lean_poll} on a real epoll reactor of its own (not the one trial runs)."""

from __future__ import annotations

import socket
import struct

from twisted.internet import abstract, protocol
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.testing import MemoryReactor
from twisted.python import context, log
from twisted.trial.unittest import SynchronousTestCase

from wakeproxy.eventloop import at_end_of_pass, lean_poll
from wakeproxy.http.sockets import _Batch


class _Reader(abstract.FileDescriptor):
    """Reads one end of a socketpair; C{fail} makes its next read raise."""

    def __init__(self, sock: socket.socket, reactor) -> None:
        abstract.FileDescriptor.__init__(self, reactor)
        self.sock = sock
        self.got = b""
        self.fail = False
        self.lost = None
        self.system = None

    def logPrefix(self) -> str:
        return "reader-prefix"

    def fileno(self) -> int:
        return self.sock.fileno()

    def doRead(self):
        if self.fail:
            raise RuntimeError("boom")
        self.system = (context.get(log.ILogContext) or {}).get("system")
        self.got += self.sock.recv(100)

    def connectionLost(self, reason) -> None:
        self.lost = reason


class LeanPollTests(SynchronousTestCase):

    def setUp(self) -> None:
        self.reactor = EPollReactor()
        self.addCleanup(self.reactor._poller.close)
        self.a, self.b = socket.socketpair()
        self.addCleanup(self.a.close)
        self.addCleanup(self.b.close)
        self.reader = _Reader(self.a, self.reactor)

    def test_an_epoll_reactor_dispatches_events_without_the_log_context(self) -> None:
        self.assertTrue(lean_poll(self.reactor))
        self.reactor.addReader(self.reader)
        self.b.send(b"hello")
        self.reactor.doIteration(1)
        self.assertEqual(self.reader.got, b"hello")
        self.assertNotEqual(self.reader.system, "reader-prefix")
        self.reactor.removeReader(self.reader)

    def test_twisteds_own_loop_pushes_the_context_lean_poll_removes(self) -> None:
        self.reactor.addReader(self.reader)
        self.b.send(b"hello")
        self.reactor.doIteration(1)
        self.assertEqual(self.reader.system, "reader-prefix")  # what lean_poll saves, per event
        self.reactor.removeReader(self.reader)

    def test_a_failing_read_is_logged_and_disconnects_the_selectable(self) -> None:
        lean_poll(self.reactor)
        self.reactor.addReader(self.reader)
        self.reader.fail = True
        self.b.send(b"x")
        self.reactor.doIteration(1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIsNotNone(self.reader.lost)
        self.assertNotIn(self.reader, self.reactor.getReaders())

    def test_no_events_within_the_timeout(self) -> None:
        lean_poll(self.reactor)
        self.reactor.addReader(self.reader)
        self.reactor.doIteration(0)
        self.assertEqual(self.reader.got, b"")
        self.reactor.removeReader(self.reader)

    def test_other_reactors_are_left_alone(self) -> None:
        memory = MemoryReactor()
        self.assertFalse(lean_poll(memory))
        self.assertFalse(hasattr(memory, "doIteration"))


class EndOfPassTests(SynchronousTestCase):

    def setUp(self) -> None:
        self.reactor = EPollReactor()
        self.addCleanup(self.reactor._poller.close)

    def test_called_before_the_wait_and_after_the_events(self) -> None:
        calls = []
        self.assertFalse(at_end_of_pass(self.reactor, lambda: calls.append("early")))  # not lean yet
        lean_poll(self.reactor)
        self.assertTrue(at_end_of_pass(self.reactor, lambda: calls.append("end")))
        self.reactor.doIteration(0)
        self.assertEqual(calls, ["end", "end"])

    def test_the_relays_sends_use_it_instead_of_a_call_later(self) -> None:
        lean_poll(self.reactor)
        batch = _Batch(self.reactor)
        sent = []
        send = sent.append
        batch.add(send, b"one")
        batch.add_to_last(send, b"+two")
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(sent, [])
        self.reactor.doIteration(0)
        self.assertEqual(sent, [b"one+two"])

    def test_without_a_lean_loop_a_call_later_sends_them(self) -> None:
        batch = _Batch(self.reactor)
        sent = []
        batch.add(sent.append, b"one")
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
        self.reactor.runUntilCurrent()
        self.assertEqual(sent, [b"one"])


class _Recorder(protocol.Protocol):
    """A server protocol that records what reached it; raises on C{b"boom"}."""

    def __init__(self, seen: list) -> None:
        self.seen = seen

    def dataReceived(self, data: bytes) -> None:
        if data == b"boom":
            raise RuntimeError("boom")
        self.seen.append(data)

    def connectionLost(self, reason) -> None:
        self.seen.append(reason.type)


class LeanReadTests(SynchronousTestCase):
    """Read events on real TCP connections of a lean reactor: the outcomes Twisted's own path gives."""

    def setUp(self) -> None:
        self.reactor = EPollReactor()
        self.addCleanup(self.reactor._poller.close)
        lean_poll(self.reactor)
        self.seen: list = []
        port = self.reactor.listenTCP(0, protocol.Factory.forProtocol(lambda: _Recorder(self.seen)),
                                      interface="127.0.0.1")
        self.addCleanup(port.connectionLost, None)
        self.client = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(self.client.close)
        self._until(lambda: len(self.reactor.getReaders()) > 2)  # accepted: the port, the waker, the connection

    def _until(self, done) -> None:
        for _ in range(200):
            self.reactor.doIteration(0.01)
            self.reactor.runUntilCurrent()
            if done():
                return
        self.fail("not within 200 passes; seen {!r}".format(self.seen))

    def test_data_reaches_the_protocol(self) -> None:
        self.client.sendall(b"hello")
        self._until(lambda: self.seen)
        self.assertEqual(self.seen, [b"hello"])

    def test_a_clean_close_is_connection_done(self) -> None:
        self.client.close()
        self._until(lambda: self.seen)
        self.assertEqual(self.seen, [ConnectionDone])

    def test_a_reset_is_connection_lost(self) -> None:
        self.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.client.close()
        self._until(lambda: self.seen)
        self.assertEqual(self.seen, [ConnectionLost])

    def test_a_protocol_that_raises_is_logged_and_disconnected(self) -> None:
        self.client.sendall(b"boom")
        self._until(lambda: self.seen)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(len(self.seen), 1)
        self.assertTrue(issubclass(self.seen[0], Exception))
