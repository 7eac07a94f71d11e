# -*- test-case-name: tests.test_httpclient -*-
"""
Tests for L{wakeproxy.httpclient}: which endpoint the agent dials (on a L{MemoryReactorClock}), its quiet
connection factories, and L{read_body} on a response double that delivers a body as twisted.web does.
"""

import warnings

from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.logger import globalLogPublisher
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import HTTPConnectionPool, ResponseDone
from twisted.web.error import SchemeNotSupported
from twisted.web.http import PotentialDataLoss

from wakeproxy.httpclient import BodyTooLarge, make_agent, read_body


class _Response:
    """Just what L{read_body} uses of an C{IResponse}: C{deliverBody}, connecting the protocol at once."""

    def __init__(self):
        self.transport = StringTransport()
        self.protocol = None

    def deliverBody(self, protocol):
        self.protocol = protocol
        protocol.makeConnection(self.transport)

    def send(self, *parts, end=ResponseDone()):
        for part in parts:
            self.protocol.dataReceived(part)
        if end is not None:
            self.protocol.connectionLost(Failure(end))


class ReadBodyTests(SynchronousTestCase):
    def test_body(self):
        for end in (ResponseDone(), PotentialDataLoss()):
            response = _Response()
            d = read_body(response)
            self.assertNoResult(d)
            response.send(b"ab", b"", b"c", end=end)
            self.assertEqual(self.successResultOf(d), b"abc", end)

    def test_connection_error(self):
        response = _Response()
        d = read_body(response)
        response.send(b"ab", end=ConnectionLost())
        self.failureResultOf(d, ConnectionLost)

    def test_limit(self):
        response = _Response()
        d = read_body(response, limit=4)
        response.send(b"abcd", end=None)
        self.assertNoResult(d)
        self.assertEqual(response.transport.producerState, "producing")
        response.send(b"e")
        self.failureResultOf(d, BodyTooLarge)
        self.assertEqual(response.transport.producerState, "stopped")

    def test_cancel_leaves_the_read_alone(self):
        """Cancelling drops the body; its end arriving later is not an error (nor an AlreadyCalledError)."""
        response = _Response()
        d = read_body(response)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        response.send(b"late")
        self.assertEqual(response.transport.producerState, "producing")

    def test_no_warning(self):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            read_body(_Response())


class AgentTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.agent = make_agent(self.reactor, HTTPConnectionPool(self.reactor, persistent=False), 2.5)

    def connection(self, url: bytes):
        """Request C{url}; return the C{(host, port, timeout)} dialled and what the connection logs."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.agent.request(b"GET", url).addErrback(lambda f: f.trap(ConnectionRefusedError))
        [(host, port, factory, timeout, _)] = self.reactor.tcpClients
        factory.doStart()
        factory.clientConnectionFailed(self.reactor.connectors[-1], Failure(ConnectionRefusedError()))
        factory.doStop()
        self.reactor.advance(1)
        return (host, port, timeout), [e for e in events if "factory" in (e.get("log_format") or "")]

    def test_ipv4_literal_dialled_directly_and_quietly(self):
        self.assertEqual(self.connection(b"http://127.0.0.1:8123/health"), (("127.0.0.1", 8123, 2.5), []))

    def test_names_quietly_too(self):
        """A host name goes through HostnameEndpoint (the reactor's resolver: 127.0.0.1 on this one)."""
        self.reactor.advance(0)
        self.assertEqual(self.connection(b"http://app.invalid:8123/health")[1], [])

    def test_other_schemes_refused(self):
        self.failureResultOf(self.agent.request(b"GET", b"ftp://127.0.0.1/"), SchemeNotSupported)
