"""
The proxy resource at the wire level: a real Site and HTTP channel over StringTransport, the in-memory
runtime, the real waker on a Clock, and a fake forwarder that records what would go upstream.
"""

import json

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site
from zope.interface import implementer

from tests.test_waker import FakePlan
from wakeproxy.forwarder import IForwarder
from wakeproxy.memoryruntime import MemoryRuntime
from wakeproxy.proxy import ProxyResource
from wakeproxy.selector import parse_selector
from wakeproxy.waker import Waker
from wakeproxy.wakepolicy import WakePolicy


@implementer(IForwarder)
class FakeForwarder:
    """Records each forward; the exchange lasts until the test calls C{finish(i)}."""

    def __init__(self):
        self.calls = []

    def forward(self, request, upstream, uri, extra_headers=()):
        done = Deferred()
        self.calls.append((request, upstream, uri, dict(extra_headers), done))
        return done

    def finish(self, index, body=b"ok"):
        request, _, _, extra, done = self.calls[index]
        request.setResponseCode(200)
        for name, value in extra.items():
            request.setHeader(name, value)
        request.setHeader(b"content-length", str(len(body)).encode())
        request.write(body)
        request.finish()
        done.callback(None)


class ProxyUnitTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.runtime = MemoryRuntime()
        self.plan = FakePlan(self.clock)
        self.addCleanup(self.plan.consume)
        self.waker = Waker(self.clock, self.runtime, self.plan, wake_timeout=10)
        self.forwarder = FakeForwarder()
        self.resource = ProxyResource(
            parse_selector("cookie:instance"), self.runtime, self.waker, self.forwarder, home_url="/home",
            max_upstream_per_instance=2, policy=WakePolicy(("/favicon.ico",), ("UptimeRobot",)),
            clock=self.clock)
        self.site = Site(self.resource, reactor=self.clock)

    def request(self, path=b"/", cookie=b"instance=app", headers=()):
        """Send one request on a new connection; return its transport (the bytes written back)."""
        channel = self.site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        lines = [b"GET " + path + b" HTTP/1.1", b"Host: example.test"]
        if cookie:
            lines.append(b"Cookie: " + cookie)
        lines.extend(headers)
        channel.dataReceived(b"\r\n".join(lines) + b"\r\n\r\n")
        return transport, channel

    def wake_app(self):
        self.runtime.add_managed("app", labels={"wakeproxy.port": "9001"}, state="running")
        transport, _ = self.request()
        self.plan.probes[-1].callback(True)
        self.forwarder.finish(0)
        return transport

    def test_unknown_instance(self):
        transport, _ = self.request(cookie=b"instance=nope")
        self.assertIn(b"404 Not Found", transport.value())
        self.assertIn(b"application/problem+json", transport.value())
        transport, _ = self.request(cookie=None, headers=(b"Accept: text/html",))
        self.assertIn(b"302 Found", transport.value())
        self.assertIn(b"Location: /home", transport.value())
        transport, _ = self.request(path=b"/home", cookie=None, headers=(b"Accept: text/html",))
        self.assertIn(b"404 Not Found", transport.value())  # never a redirect loop

    def test_held_then_forwarded_with_timing(self):
        self.runtime.add_managed("app", labels={"wakeproxy.port": "9001"})
        transport, _ = self.request()
        self.assertEqual(self.forwarder.calls, [])
        self.assertEqual(self.runtime.calls["start"], 1)
        self.plan.probes[-1].callback(True)
        self.assertEqual(len(self.forwarder.calls), 1)
        _, upstream, uri, extra, _ = self.forwarder.calls[0]
        self.assertEqual((upstream.host, upstream.port, uri), ("127.0.0.1", 9001, b"/"))
        self.assertEqual(extra[b"x-wakeproxy-woke"], b"1")
        self.assertIn(b"total;dur=", extra[b"server-timing"])

    def test_upstream_slots_are_capped_and_fifo(self):
        self.wake_app()
        for i in range(5):
            self.request(path=b"/r%d" % i)
        self.assertEqual([c[2] for c in self.forwarder.calls[1:]], [b"/r0", b"/r1"])
        self.forwarder.finish(1)
        self.assertEqual([c[2] for c in self.forwarder.calls[1:]], [b"/r0", b"/r1", b"/r2"])
        self.forwarder.finish(2)
        self.forwarder.finish(3)
        self.assertEqual([c[2] for c in self.forwarder.calls[1:]], [b"/r0", b"/r1", b"/r2", b"/r3", b"/r4"])

    def test_client_gone_while_waiting_for_a_slot_is_never_forwarded(self):
        self.wake_app()
        self.request(path=b"/a")
        self.request(path=b"/b")
        _, channel = self.request(path=b"/c")
        channel.connectionLost(Failure(ConnectionDone()))
        self.forwarder.finish(1)
        self.forwarder.finish(2)
        self.assertEqual([c[2] for c in self.forwarder.calls[1:]], [b"/a", b"/b"])

    def test_activity_counts_exchanges_but_not_monitors(self):
        self.wake_app()
        self.request(path=b"/x")
        self.assertEqual(self.waker.describe("app")["inflight"], 1)
        self.assertIsNone(self.waker.idle_since("app"))
        self.forwarder.finish(1)
        self.assertEqual(self.waker.describe("app")["inflight"], 0)
        self.request(path=b"/y", headers=(b"User-Agent: UptimeRobot/2.0",))
        self.assertEqual(len(self.forwarder.calls), 3)  # proxied...
        self.assertEqual(self.waker.describe("app")["inflight"], 0)  # ...but not activity

    def test_no_wake_requests_do_not_wake(self):
        self.runtime.add_managed("app", labels={"wakeproxy.port": "9001"})
        transport, _ = self.request(path=b"/favicon.ico")
        self.assertIn(b"503 Service Unavailable", transport.value())
        self.assertIn(b"Retry-After: 30", transport.value())
        self.assertEqual(self.runtime.calls.get("start", 0), 0)

    def test_status_header_answers_without_forwarding(self):
        self.runtime.add_managed("app", labels={"wakeproxy.port": "9001"})
        transport, _ = self.request(headers=(b"X-Wakeproxy-Status: 1",))
        body = json.loads(transport.value().split(b"\r\n\r\n", 1)[1])
        self.assertEqual((body["instance"], body["ready"]), ("app", False))
        self.assertEqual(self.forwarder.calls, [])
