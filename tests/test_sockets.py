"""
L{wakeproxy.http.sockets.eager_writer} over real loopback TCP: sends queued for the end of the reactor pass
arrive whole and in order, joined per transport, and a close issued in the same pass (from an I/O event or
from a timer) still sends them first.
"""

from __future__ import annotations

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.trial.unittest import TestCase

from wakeproxy.http.sockets import eager_writer


class _Collect(protocol.Protocol):
    """The client end: collects every byte until the server closes."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason) -> None:
        self.closed.callback(bytes(self.data))


class _Server(protocol.Protocol):
    """The server end: runs C{script(write, transport)} once connected."""

    def __init__(self, script) -> None:
        self.script = script

    def connectionMade(self) -> None:
        self.script(eager_writer(self.transport), self.transport)


class EagerWriterTests(TestCase):

    @defer.inlineCallbacks
    def _serve(self, script):
        factory = protocol.Factory.forProtocol(lambda: _Server(script))
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        client = _Collect()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client)
        got = yield client.closed
        return got

    @defer.inlineCallbacks
    def test_writes_of_one_pass_arrive_in_order(self):
        def script(write, transport):
            for i in range(200):
                write(b"%d," % i)
            transport.loseConnection()

        got = yield self._serve(script)
        self.assertEqual(got, b"".join(b"%d," % i for i in range(200)))

    @defer.inlineCallbacks
    def test_close_from_a_timer_sends_what_was_queued_first(self):
        def script(write, transport):
            def later():
                write(b"408 goodbye")
                transport.loseConnection()
            reactor.callLater(0.01, later)

        got = yield self._serve(script)
        self.assertEqual(got, b"408 goodbye")

    @defer.inlineCallbacks
    def test_half_close_from_a_timer_sends_what_was_queued_first(self):
        def script(write, transport):
            def later():
                write(b"last frame")
                transport.loseWriteConnection()  # the client closes on the end of its stream
            reactor.callLater(0.01, later)

        got = yield self._serve(script)
        self.assertEqual(got, b"last frame")

    @defer.inlineCallbacks
    def test_a_large_write_is_finished_by_the_transport(self):
        big = bytes(range(256)) * 40000  # 10 MB: more than a socket buffer takes at once

        def script(write, transport):
            write(b"head;")
            write(big)
            write(b";tail")
            transport.loseConnection()

        got = yield self._serve(script)
        self.assertEqual(got, b"head;" + big + b";tail")

    @defer.inlineCallbacks
    def test_writes_after_a_partial_send_stay_behind_it(self):
        big = b"x" * (8 * 1024 * 1024)

        def script(write, transport):
            write(big)
            reactor.callLater(0, lambda: (write(b"after"), transport.loseConnection()))

        got = yield self._serve(script)
        self.assertEqual(len(got), len(big) + 5)
        self.assertTrue(got.endswith(b"xafter"))
