"""makeService's service tree (wakeproxy.tap) and the proxy listener's start and graceful stop (wakeproxy.proxy)."""

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from wakeproxy import tap
from wakeproxy.proxy import ProxyService
from wakeproxy.runtime.docker import DockerRuntime
from wakeproxy.waking.idle import IdleStopper


def _service(*argv: str):
    options = tap.Options()
    options.parseOptions(["--docker-url", "unix:///nonexistent.sock"] + list(argv))
    return tap.makeService(options, MemoryReactorClock())


class ServiceTreeTests(SynchronousTestCase):
    def test_children_in_start_order(self):
        """Runtime, idle stopper, proxy lifetime, then the listeners: stopping closes the listeners first."""
        children = list(_service("--listen", "tcp:0", "--listen", "tcp:0:interface=127.0.0.1"))
        kinds = [type(child) for child in children]
        self.assertEqual(kinds, [DockerRuntime, IdleStopper, ProxyService] + [StreamServerEndpointService] * 3)

    def test_parts_get_the_settings_values(self):
        children = list(_service("--head-timeout", "3s", "--body-timeout", "4s", "--keepalive-timeout", "5s",
                                 "--upstream-timeout", "6s", "--max-head-bytes", "7000", "--max-body", "8",
                                 "--drain-timeout", "9s", "--docker-threads", "2"))
        proxy = children[2]
        timeouts = proxy.relay.timeouts
        self.assertEqual((timeouts.head, timeouts.body, timeouts.keepalive, timeouts.upstream), (3, 4, 5, 6))
        self.assertEqual((proxy.relay.max_head, proxy.relay.max_body, proxy.drain_timeout), (7000, 8, 9))
        self.assertIs(children[3].factory, proxy.relay)  # the proxy listener serves the relay

    def test_tenants_ports_are_one_policy(self):
        policy = tap.create_policy(_settings("--allow-port", "9000-9100", "--listen", "tcp:9050",
                                             "--allow-host-network", "--allow-image", "app:*"))
        self.assertEqual((tuple(policy.allow_ports), policy.forbidden_ports), (((9000, 9100),), {9050, 8008}))
        self.assertEqual((tuple(policy.allowed_images), policy.allow_host_network), (("app:*",), True))


def _settings(*argv: str):
    options = tap.Options()
    options.parseOptions(list(argv))
    return options.settings


class _Relay:
    def __init__(self):
        self.calls = []
        self.drained = Deferred()

    def start(self):
        self.calls.append("relay.start")

    def stop(self):
        self.calls.append("relay.stop")

    def drain(self, timeout):
        self.calls.append(("relay.drain", timeout))
        return self.drained


class _Pool:
    def __init__(self, calls):
        self.calls = calls

    def start(self):
        self.calls.append("pool.start")

    def stop(self):
        self.calls.append("pool.stop")


class _Waker:
    def __init__(self, calls):
        self.calls = calls

    def release_held(self, failure):
        self.calls.append(("release_held", failure.status, failure.retry_after))
        return 2

    def stop(self):
        self.calls.append("waker.stop")


class ProxyServiceTests(SynchronousTestCase):
    def setUp(self):
        self.relay = _Relay()
        self.calls = self.relay.calls
        self.service = ProxyService(self.relay, _Pool(self.calls), _Waker(self.calls), drain_timeout=7)

    def test_start(self):
        self.service.startService()
        self.assertEqual(self.calls, ["relay.start", "pool.start"])

    def test_stop_answers_held_drains_then_closes_the_pool(self):
        self.service.startService()
        del self.calls[:]
        stopped = self.service.stopService()
        self.assertEqual(self.calls, [("release_held", 503, 2), "waker.stop", "relay.stop", ("relay.drain", 7)])
        self.assertNoResult(stopped)
        self.relay.drained.callback(None)
        self.assertEqual(self.calls[-1], "pool.stop")
        self.successResultOf(stopped)


class _SignalReactor:
    """What L{tap._stop_on_signals} uses of a reactor, recorded."""

    def __init__(self) -> None:
        self.when_running: list = []
        self.before_shutdown: list = []
        self.from_thread: list = []

    def callWhenRunning(self, f) -> None:
        self.when_running.append(f)

    def addSystemEventTrigger(self, phase: str, event: str, f) -> None:
        self.before_shutdown.append(f)

    def callFromThread(self, f) -> None:
        self.from_thread.append(f)

    def stop(self) -> None:
        pass


class StopOnSignalsTests(SynchronousTestCase):
    """The handlers found at install: SIGTERM's a recorder (as Twisted's would be), SIGINT's the default."""

    def setUp(self) -> None:
        import signal

        for signum in (signal.SIGTERM, signal.SIGINT):
            self.addCleanup(signal.signal, signum, signal.getsignal(signum))
        self.passed_on: list = []
        signal.signal(signal.SIGTERM, lambda signum, frame: self.passed_on.append(signum))
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        self.reactor = _SignalReactor()
        tap._stop_on_signals(self.reactor, 5)
        for f in self.reactor.when_running:
            f()

    def _handler(self, signum):
        import signal

        return signal.getsignal(signum)

    def test_signals_in_a_row_are_passed_on_once(self) -> None:
        import signal

        self._handler(signal.SIGTERM)(signal.SIGTERM, None)
        self._handler(signal.SIGTERM)(signal.SIGTERM, None)
        self._handler(signal.SIGINT)(signal.SIGINT, None)
        self.assertEqual(self.passed_on, [signal.SIGTERM])
        self.assertEqual(self.reactor.from_thread, [])

    def test_without_a_handler_to_pass_on_the_reactor_is_stopped_once(self) -> None:
        import signal

        self._handler(signal.SIGINT)(signal.SIGINT, None)
        self._handler(signal.SIGINT)(signal.SIGINT, None)
        self.assertEqual(self.reactor.from_thread, [self.reactor.stop])

    def test_a_signal_after_another_stop_does_not_stop_again(self) -> None:
        import signal

        for f in self.reactor.before_shutdown:
            f()
        self._handler(signal.SIGTERM)(signal.SIGTERM, None)
        self.assertEqual(self.passed_on, [])
        self.assertEqual(self.reactor.from_thread, [])
