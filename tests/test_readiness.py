# -*- test-case-name: tests.test_readiness -*-
"""
Tests for L{wakeproxy.waking.readiness}: the L{poll_until} loop on a L{Clock}, the one-attempt checks of
L{Prober} against real listening ports on 127.0.0.1, and what L{ReadinessPlan} chooses to probe.
"""

import json

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, DeferredList, fail, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import ConnectingCancelledError, ConnectionRefusedError
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from wakeproxy.waking.readiness import (
    ATTEMPT_TIMEOUT,
    BACKOFF,
    FAST_FOR,
    FIRST_INTERVAL,
    MAX_INTERVAL,
    Prober,
    ReadinessPlan,
    _router_enabled,
    poll_until,
)
from wakeproxy.runtime.interface import Container


class Attempts:
    """C{attempt()} for L{poll_until}: hands out the given results in turn (Deferreds or values)."""

    def __init__(self, *results):
        self.results = list(results)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        result = self.results.pop(0) if self.results else False
        if isinstance(result, Deferred):
            return result
        if isinstance(result, BaseException):
            return fail(result)
        return succeed(result)


def next_delay(clock):
    """The delay of the one call the loop has pending on C{clock}."""
    calls = clock.getDelayedCalls()
    assert len(calls) == 1, calls
    return calls[0].getTime() - clock.seconds()


class PollUntilTests(SynchronousTestCase):
    """Tests for L{poll_until}."""

    def test_first_true(self):
        """The loop fires with the attempt count after the first True, and stops."""
        cases = [
            ([True], 1),
            ([False, True], 2),
            ([False, False, False, True], 4),
            ([False, 1], 2),  # truthy counts
            ([0, "", None, True], 4),  # falsy counts as False
        ]
        for results, count in cases:
            clock = Clock()
            attempt = Attempts(*results)
            d = poll_until(clock, attempt)
            for _ in range(count - 1):
                self.assertNoResult(d)
                clock.advance(FIRST_INTERVAL)
            self.assertEqual(self.successResultOf(d), count, results)
            self.assertEqual(clock.getDelayedCalls(), [], results)
            clock.advance(10)
            self.assertEqual(attempt.calls, count, results)

    def test_first_attempt_at_once(self):
        """The first attempt is made synchronously, without waiting for the clock."""
        attempt = Attempts(Deferred())
        poll_until(Clock(), attempt)
        self.assertEqual(attempt.calls, 1)

    def test_errors_count_as_false(self):
        """A failed attempt (refused, timed out, cancelled by itself) counts as False."""
        clock = Clock()
        attempt = Attempts(ConnectionRefusedError(), DeferredTimeoutError(), CancelledError(), ValueError(), True)
        d = poll_until(clock, attempt)
        for _ in range(4):
            self.assertNoResult(d)
            clock.advance(FIRST_INTERVAL)
        self.assertEqual(self.successResultOf(d), 5)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_raising_attempt_counts_as_false(self):
        """An attempt that raises counts as False; the error is logged, the loop goes on."""
        clock = Clock()
        calls = []

        def attempt():
            calls.append(None)
            if len(calls) == 1:
                raise ZeroDivisionError()
            return succeed(True)

        d = poll_until(clock, attempt)
        self.assertNoResult(d)
        clock.advance(FIRST_INTERVAL)
        self.assertEqual(self.successResultOf(d), 2)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_intervals_exact(self):
        """
        C{first} between attempts until C{fast_for} seconds have passed, then C{factor} times longer
        each time, up to C{ceiling} (binary-exact numbers, so the sequence is exact).
        """
        clock = Clock()
        d = poll_until(clock, Attempts(), first=0.125, ceiling=1.0, factor=2.0, fast_for=0.5)
        delays = []
        for _ in range(10):
            delay = next_delay(clock)
            delays.append((clock.seconds(), delay))
            clock.advance(delay)
        self.assertEqual(delays, [
            (0.0, 0.125), (0.125, 0.125), (0.25, 0.125), (0.375, 0.125), (0.5, 0.125),
            (0.625, 0.25), (0.875, 0.5), (1.375, 1.0), (2.375, 1.0), (3.375, 1.0),
        ])
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d, CancelledError)

    def test_intervals_default(self):
        """With the defaults: 10 ms for the first 3 s, then 1.5x back-off capped at 250 ms."""
        self.assertEqual((FIRST_INTERVAL, BACKOFF, MAX_INTERVAL, FAST_FOR), (0.010, 1.5, 0.250, 3.0))
        clock = Clock()
        d = poll_until(clock, Attempts())
        delays = []
        while clock.seconds() < FAST_FOR + 5:
            delay = next_delay(clock)
            delays.append((clock.seconds(), delay))
            clock.advance(delay)
        fast = [(t, delay) for t, delay in delays if t < FAST_FOR - 1e-6]
        self.assertGreaterEqual(len(fast), 299)
        for t, delay in fast:
            self.assertAlmostEqual(delay, FIRST_INTERVAL, msg="delay at {:.3f}s".format(t))
        slow = [delay for t, delay in delays[len(fast):]]
        # at most the attempt made right at the boundary still waits the first interval
        while slow and abs(slow[0] - FIRST_INTERVAL) < 1e-9:
            slow.pop(0)
        self.assertLessEqual(len(delays) - len(fast) - len(slow), 2)
        expected = FIRST_INTERVAL * BACKOFF
        for i, delay in enumerate(slow):
            self.assertAlmostEqual(delay, expected, msg="back-off step {}: {}".format(i, slow[:i + 1]))
            expected = min(expected * BACKOFF, MAX_INTERVAL)
        self.assertAlmostEqual(slow[-1], MAX_INTERVAL)
        self.assertEqual(max(slow), MAX_INTERVAL)
        d.cancel()
        self.failureResultOf(d, CancelledError)

    def test_cancel_while_sleeping(self):
        """Cancelling between attempts fails the loop with CancelledError and stops the attempts."""
        clock = Clock()
        attempt = Attempts()
        d = poll_until(clock, attempt)
        clock.advance(FIRST_INTERVAL)
        self.assertEqual(attempt.calls, 2)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(10)
        self.assertEqual(attempt.calls, 2)

    def test_cancel_in_flight(self):
        """Cancelling during an attempt cancels that attempt and makes no more."""
        clock = Clock()
        cancelled = []
        in_flight = Deferred(cancelled.append)
        attempt = Attempts(False, in_flight)
        d = poll_until(clock, attempt)
        clock.advance(FIRST_INTERVAL)
        self.assertEqual(attempt.calls, 2)
        self.assertEqual(clock.getDelayedCalls(), [])
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(cancelled, [in_flight])
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(10)
        self.assertEqual(attempt.calls, 2)

    def test_cancel_in_flight_answering_true(self):
        """An attempt whose cancellation makes it answer True does not revive a cancelled loop."""
        clock = Clock()
        in_flight = Deferred(lambda d: d.callback(True))
        d = poll_until(clock, Attempts(in_flight))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_cancel_after_success(self):
        """Cancelling a loop that already succeeded changes nothing."""
        d = poll_until(Clock(), Attempts(True))
        d.cancel()
        self.assertEqual(self.successResultOf(d), 1)


class RouterEnabledTests(SynchronousTestCase):
    """Tests for C{_router_enabled}, the reading of Traefik's router document."""

    def test_table(self):
        cases = [
            (200, b'{"status": "enabled", "rule": "Host(`a`)"}', True),
            (200, b'{"status":"enabled"}', True),
            (200, b'{"status": "disabled"}', False),
            (200, b'{"status": "warning"}', False),
            (200, b'{"status": "Enabled"}', False),
            (200, b'{}', False),
            (200, b'{"status": null}', False),
            (404, b'{"status": "enabled"}', False),
            (500, b'{"status": "enabled"}', False),
            (204, b'', False),
            (200, b'', False),
            (200, b'not json', False),
            (200, b'404 page not found\n', False),
            (200, b'\xff\xfe', False),
            (200, b'["enabled"]', False),
            (200, b'"enabled"', False),
            (200, b'null', False),
            (200, b'42', False),
        ]
        for code, body, expected in cases:
            self.assertIs(_router_enabled(code, body), expected, (code, body))


# Prober against real sockets


class _Status(Resource):
    isLeaf = True

    def __init__(self, code, headers=()):
        Resource.__init__(self)
        self.code = code
        self.headers = headers
        self.requests = []

    def render(self, request):
        self.requests.append(request)
        request.setResponseCode(self.code)
        for name, value in self.headers:
            request.setHeader(name, value)
        return b"status body\n"


class TraefikRoutersDouble(Resource):
    """
    A test double of the one Traefik API endpoint wakeproxy uses: C{GET /api/http/routers/NAME@docker}
    answers the router's JSON (with its C{status}), or Traefik's plain 404 for unknown routers.
    """

    isLeaf = True
    PREFIX = b"/api/http/routers/"

    def __init__(self, routers):
        Resource.__init__(self)
        self.routers = routers
        self.paths = []

    def render_GET(self, request):
        self.paths.append(request.path)
        name = request.path[len(self.PREFIX):].decode("utf-8") if request.path.startswith(self.PREFIX) else ""
        router, _, provider = name.partition("@")
        if provider != "docker" or router not in self.routers:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"404 page not found\n"
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"entryPoints": ["web"], "service": router, "rule": "Host(`{}`)".format(router),
                           "status": self.routers[router], "name": name, "provider": "docker"}).encode("utf-8")


class _TrackingSite(Site):
    """A Site that remembers its connections, so the test can wait until they are all closed."""

    noisy = False

    def __init__(self, resource):
        Site.__init__(self, resource)
        self.lost = []

    def buildProtocol(self, addr):
        protocol = Site.buildProtocol(self, addr)
        lost = Deferred()
        self.lost.append(lost)
        connectionLost = protocol.connectionLost

        def track(reason):
            connectionLost(reason)
            lost.callback(None)

        protocol.connectionLost = track
        return protocol


class ProberTests(TestCase):
    """L{Prober}'s checks against real listening ports on 127.0.0.1 (global reactor)."""

    def setUp(self):
        root = Resource()
        root.putChild(b"ok", _Status(200))
        root.putChild(b"fail", _Status(500))
        root.putChild(b"unavailable", _Status(503))
        root.putChild(b"missing", _Status(404))
        root.putChild(b"redirect", _Status(302, [(b"location", b"/elsewhere")]))
        self.traefik = TraefikRoutersDouble({"app": "enabled", "off": "disabled"})
        root.putChild(b"api", self.traefik)
        self.site = _TrackingSite(root)
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.addCleanup(self._close)
        self.url = "http://127.0.0.1:{}".format(self.port.getHost().port)
        self.prober = Prober(reactor, attempt_timeout=5.0)

    def _close(self):
        return DeferredList([self.port.stopListening()] + list(self.site.lost))

    def closed_port(self):
        """A port number nothing listens on (it did a moment ago)."""
        port = reactor.listenTCP(0, Site(Resource()), interface="127.0.0.1")
        number = port.getHost().port
        return port.stopListening().addCallback(lambda _: number)

    def test_default_timeout(self):
        self.assertEqual(ATTEMPT_TIMEOUT, 2.0)

    def test_tcp_listening(self):
        """Something accepting connections: True."""
        d = self.prober.tcp_check("127.0.0.1", self.port.getHost().port)
        return d.addCallback(self.assertIs, True)

    def test_tcp_refused(self):
        """Nothing listening: the attempt fails (the loop counts it as False)."""
        d = self.closed_port()
        d.addCallback(lambda port: self.assertFailure(self.prober.tcp_check("127.0.0.1", port),
                                                      ConnectionRefusedError))
        return d

    def test_http(self):
        """2xx and 3xx are True; 4xx and 5xx are False."""
        cases = [("/ok", True), ("/redirect", True), ("/fail", False), ("/unavailable", False),
                 ("/missing", False)]

        def check(ok, path, expected):
            self.assertIs(ok, expected, path)

        checks = [self.prober.http_check(self.url + path).addCallback(check, path, expected)
                  for path, expected in cases]
        return DeferredList(checks, fireOnOneErrback=True, consumeErrors=True)

    def test_http_sends_user_agent(self):
        """The probe says who it is."""
        resource = self.site.resource.children[b"ok"]

        def check(ok):
            self.assertIs(ok, True)
            self.assertEqual(resource.requests[0].getHeader(b"user-agent"), b"wakeproxy-probe")
            self.assertEqual(resource.requests[0].method, b"GET")

        return self.prober.http_check(self.url + "/ok").addCallback(check)

    def test_http_refused(self):
        """Nothing listening: the attempt fails."""
        d = self.closed_port()
        d.addCallback(lambda port: self.assertFailure(
            self.prober.http_check("http://127.0.0.1:{}/ok".format(port)), ConnectionRefusedError))
        return d

    def test_route_check(self):
        """Enabled router: True; disabled or unknown router: False; the API URL may end with a slash."""
        cases = [(self.url, "app", True), (self.url + "/", "app", True), (self.url, "off", False),
                 (self.url, "ghost", False)]

        def check(ok, case):
            self.assertIs(ok, case[2], case)

        checks = [self.prober.route_check(api, router).addCallback(check, (api, router, expected))
                  for api, router, expected in cases]
        d = DeferredList(checks, fireOnOneErrback=True, consumeErrors=True)

        def paths(_):
            self.assertEqual(sorted(self.traefik.paths), sorted([
                b"/api/http/routers/app@docker", b"/api/http/routers/app@docker",
                b"/api/http/routers/off@docker", b"/api/http/routers/ghost@docker"]))

        return d.addCallback(paths)

    def test_route_refused(self):
        """No Traefik API: the attempt fails."""
        d = self.closed_port()
        d.addCallback(lambda port: self.assertFailure(
            self.prober.route_check("http://127.0.0.1:{}".format(port), "app"), ConnectionRefusedError))
        return d


class ProberMemoryReactorTests(SynchronousTestCase):
    """L{Prober}'s attempts on a L{MemoryReactorClock}: how fast a refused or silent attempt ends."""

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.prober = Prober(self.reactor, attempt_timeout=2.0)

    def refuse(self):
        """Refuse the connection the last attempt is making."""
        factory = self.reactor.tcpClients[-1][2]
        factory.clientConnectionFailed(self.reactor.connectors[-1], Failure(ConnectionRefusedError()))

    def test_tcp_refused_at_once(self):
        """A refused TCP attempt fails as soon as the connection is refused."""
        d = self.prober.tcp_check("127.0.0.1", 8080)
        self.assertEqual(self.reactor.tcpClients[-1][:2], ("127.0.0.1", 8080))
        self.refuse()
        self.failureResultOf(d, ConnectionRefusedError)

    def test_http_refused_at_once(self):
        """A refused HTTP attempt fails as soon as the connection is refused (no extra 300 ms)."""
        d = self.prober.http_check("http://127.0.0.1:8080/healthz")
        self.assertEqual(self.reactor.tcpClients[-1][:2], ("127.0.0.1", 8080))
        self.refuse()
        self.failureResultOf(d, ConnectionRefusedError)

    def test_tcp_timeout(self):
        """A TCP attempt nobody answers ends after C{attempt_timeout} seconds."""
        d = self.prober.tcp_check("127.0.0.1", 8080)
        self.reactor.advance(1.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        self.failureResultOf(d, ConnectingCancelledError, ConnectTimeoutError, DeferredTimeoutError)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_http_timeout(self):
        """An HTTP attempt nobody answers ends after C{attempt_timeout} seconds."""
        d = self.prober.http_check("http://127.0.0.1:8080/healthz")
        self.reactor.advance(1.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        self.failureResultOf(d, ConnectingCancelledError, ConnectTimeoutError, DeferredTimeoutError)
        self.assertEqual(self.reactor.getDelayedCalls(), [])


# ReadinessPlan


class RecordingProber:
    """A prober that records its calls and answers with the given values in turn (then True)."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []

    def _answer(self, call):
        self.calls.append(call)
        return succeed(self.answers.pop(0) if self.answers else True)

    def tcp_check(self, host, port):
        return self._answer(("tcp", host, port))

    def http_check(self, url):
        return self._answer(("http", url))

    def route_check(self, api, router):
        return self._answer(("route", api, router))


def container(labels=(), network_mode="host", networks=None, health="none", name="app"):
    if networks is None:
        networks = {} if network_mode == "host" else {network_mode: "10.0.0.2"}
    return Container(id="c" * 64, name=name, image="mock-app:latest", state="running", health=health,
                     labels=dict(labels), network_mode=network_mode, networks=networks)


class ReadinessPlanTests(SynchronousTestCase):
    """Tests for L{ReadinessPlan}."""

    def test_probe_choice(self):
        """HTTP when a health-check label says where, TCP to the app's port otherwise, None without either."""
        cases = [
            ({"wakeproxy.port": "8080"}, "host", ("tcp", "127.0.0.1", 8080)),
            ({"wakeproxy.port": "8080"}, "appnet", ("tcp", "10.0.0.2", 8080)),
            ({"wakeproxy.port": "8080", "wakeproxy.health-check": "/healthz"}, "host",
             ("http", "http://127.0.0.1:8080/healthz")),
            ({"wakeproxy.port": "8080", "health-check": "/up"}, "appnet", ("http", "http://10.0.0.2:8080/up")),
            ({"wakeproxy.port": "8080", "wakeproxy.health-check": "http://app.internal:9000/ready"}, "host",
             ("http", "http://app.internal:9000/ready")),
            ({"wakeproxy.health-check": "http://app.internal:9000/ready"}, "host",
             ("http", "http://app.internal:9000/ready")),
            ({}, "host", None),
            ({"wakeproxy.health-check": "/healthz"}, "host", None),
            ({"health-check": "/healthz"}, "host", None),
            ({"wakeproxy.port": "http"}, "host", None),
            ({"wakeproxy.port": "0"}, "host", None),
        ]
        for labels, network_mode, expected in cases:
            case = (labels, network_mode)
            prober = RecordingProber()
            plan = ReadinessPlan(Clock(), prober)
            d = plan.probe(container(labels, network_mode))
            if expected is None:
                self.assertIsNone(d, case)
                self.assertEqual(prober.calls, [], case)
            else:
                self.assertEqual(self.successResultOf(d), 1, case)
                self.assertEqual(prober.calls, [expected], case)

    def test_tenant_probes(self):
        """
        Issue 11, findings 3 and 4: a tenant's container (label wakeproxy.owner) is probed on its own address
        only (a URL in its health-check label is ignored and logged), and not at all on a port it may not use.
        """
        own = {"wakeproxy.owner": "alice"}
        cases = [
            ({"wakeproxy.port": "8080", "wakeproxy.health-check": "http://127.0.0.1:8008/login"}, "host",
             ("tcp", "127.0.0.1", 8080), True),
            ({"wakeproxy.port": "8080", "health-check": "//127.0.0.1:8008/login"}, "appnet",
             ("tcp", "10.0.0.2", 8080), True),
            ({"wakeproxy.health-check": "http://127.0.0.1:8008/login"}, "host", None, True),
            ({"wakeproxy.port": "8080", "wakeproxy.health-check": "/healthz"}, "host",
             ("http", "http://127.0.0.1:8080/healthz"), False),
            ({"wakeproxy.port": "8008", "wakeproxy.health-check": "/login"}, "host", None, False),
            ({"wakeproxy.port": "22"}, "host", None, False),
            ({"wakeproxy.port": "8008"}, "appnet", ("tcp", "10.0.0.2", 8008), False),
        ]
        for labels, network_mode, expected, logs_ignored in cases:
            case = (labels, network_mode)
            logged = []
            globalLogPublisher.addObserver(logged.append)
            try:
                prober = RecordingProber()
                plan = ReadinessPlan(Clock(), prober, forbidden_ports={8000, 8008})
                d = plan.probe(container(dict(labels, **own), network_mode))
            finally:
                globalLogPublisher.removeObserver(logged.append)
            if expected is None:
                self.assertIsNone(d, case)
                self.assertEqual(prober.calls, [], case)
            else:
                self.assertEqual(self.successResultOf(d), 1, case)
                self.assertEqual(prober.calls, [expected], case)
            ignored = [e for e in logged if "ignored" in e.get("log_format", "")]
            self.assertEqual(bool(ignored), logs_ignored, case)

    def test_probe_polls(self):
        """The probe is a L{poll_until} loop on the plan's clock."""
        clock = Clock()
        prober = RecordingProber(False, False, True)
        plan = ReadinessPlan(clock, prober)
        d = plan.probe(container({"wakeproxy.port": "80"}))
        self.assertIs(plan.clock, clock)
        self.assertNoResult(d)
        clock.advance(FIRST_INTERVAL)
        self.assertNoResult(d)
        clock.advance(FIRST_INTERVAL)
        self.assertEqual(self.successResultOf(d), 3)
        self.assertEqual(prober.calls, [("tcp", "127.0.0.1", 80)] * 3)

    def test_docker_health_required(self):
        """Only in router mode, and only for containers with a HEALTHCHECK."""
        cases = [
            (True, "none", False),
            (True, "starting", False),
            (True, "healthy", False),
            (True, "unhealthy", False),
            (False, "none", False),
            (False, "starting", True),
            (False, "healthy", True),
            (False, "unhealthy", True),
        ]
        for direct, health, expected in cases:
            plan = ReadinessPlan(Clock(), RecordingProber(), direct=direct)
            self.assertIs(plan.docker_health_required(container(health=health)), expected, (direct, health))

    def test_route_without_api(self):
        """No Traefik API configured: no route phase."""
        plan = ReadinessPlan(Clock(), RecordingProber(), direct=False)
        self.assertIsNone(plan.route(container()))

    def test_route(self):
        """With a Traefik API: poll the instance's router (label, else name) until enabled."""
        cases = [
            ({}, "app"),
            ({"wakeproxy.router": "web-app"}, "web-app"),
            ({"wakeproxy.router": ""}, "app"),
        ]
        for labels, router in cases:
            clock = Clock()
            prober = RecordingProber(False, True)
            plan = ReadinessPlan(clock, prober, direct=False, traefik_api="http://traefik:8080")
            d = plan.route(container(labels))
            self.assertNoResult(d)
            clock.advance(FIRST_INTERVAL)
            self.assertEqual(self.successResultOf(d), 2, labels)
            self.assertEqual(prober.calls, [("route", "http://traefik:8080", router)] * 2, labels)

    def test_attributes(self):
        """The waker reads C{clock} and C{ready_delay} from the plan."""
        clock = Clock()
        plan = ReadinessPlan(clock, RecordingProber(), ready_delay=1.5)
        self.assertIs(plan.clock, clock)
        self.assertEqual(plan.ready_delay, 1.5)
        self.assertEqual(ReadinessPlan(clock, RecordingProber()).ready_delay, 0.0)
