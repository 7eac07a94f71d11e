"""C{--workers N}: its option checks, what workers are started with, and the sockets the first process binds."""

import json
import os
import socket
import tempfile

from twisted.internet.error import ProcessTerminated
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from wakeproxy import tap
from wakeproxy.settings import _workers
from wakeproxy.tap import Options
from wakeproxy.waking.peers import GroupFences
from wakeproxy.waking.waker import Waker
from wakeproxy.workers import ENV, AdoptedPort, Supervisor, _bound, worker_args, worker_plan


def parsed(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


class OptionTests(SynchronousTestCase):
    def test_default_is_one_worker(self):
        self.assertEqual(parsed().settings.peers.workers, 1)

    def test_workers_kept(self):
        self.assertEqual(parsed("--workers", "3").settings.peers.workers, 3)

    def test_not_a_number_or_out_of_range_refused(self):
        for value in ("two", "0", "-1", "65"):
            with self.assertRaises(usage.UsageError, msg=value) as e:
                parsed("--workers", value)
            self.assertIn("--workers", str(e.exception))

    def test_tls_and_unix_listeners_refused_above_one_worker(self):
        with self.assertRaises(usage.UsageError) as e:
            parsed("--workers", "2", "--listen", "unix:/tmp/wp.sock")
        self.assertIn("tcp: and tcp6:", str(e.exception))
        with self.assertRaises(usage.UsageError) as e:  # its files unread: the same check, past the endpoint parse
            _workers({"workers": "2"}, ("ssl:8443:privateKey=k.pem",))
        self.assertIn("terminate TLS in front", str(e.exception))
        self.assertEqual(parsed("--listen", "unix:/tmp/wp.sock").settings.peers.workers, 1)

    def test_fence_must_outlast_the_stop_with_workers_too(self):
        with self.assertRaises(usage.UsageError) as e:
            parsed("--workers", "2", "--stop-timeout", "30s")
        self.assertIn("--peer-fence-timeout", str(e.exception))

    def test_arguments_kept_for_the_workers(self):
        self.assertEqual(parsed("--workers", "2", "--idle-timeout", "1m").argv, ["--workers", "2", "--idle-timeout", "1m"])


class WorkerArgsTests(SynchronousTestCase):
    def test_workers_option_removed_both_spellings(self):
        self.assertEqual(worker_args(["--listen", "tcp:80", "--workers", "4", "--workers=2", "--idle-timeout", "1m"]),
                         ["--listen", "tcp:80", "--idle-timeout", "1m"])


class PlanTests(SynchronousTestCase):
    def test_one_worker_has_no_plan(self):
        self.assertIsNone(worker_plan(parsed().settings, [], reactor=None))

    def test_first_process_binds_and_gets_its_siblings_as_peers(self):
        port = _free_port()
        options = parsed("--workers", "3", "--listen", "tcp:{}:interface=127.0.0.1".format(port))
        os.environ.pop(ENV, None)
        plan = worker_plan(options.settings, options.argv, reactor=None)
        supervisor = plan.supervisor
        self.addCleanup(lambda: [s.close() for s in supervisor._listen + supervisor._internal])
        self.addCleanup(lambda: supervisor._secret_file and os.unlink(supervisor._secret_file))
        self.assertTrue(plan.first)
        self.assertEqual(len(plan.settings.peers.urls), 2)  # the other two processes' internal listeners
        self.assertGreaterEqual(len(plan.settings.peers.secret), 32)
        self.assertEqual(os.stat(supervisor._secret_file).st_mode & 0o777, 0o600)
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # the kernel queues it on the listening socket bound before any process serves it
        self.assertNotIn("--workers", supervisor._args)

    def test_given_secret_file_is_used(self):
        fd, path = tempfile.mkstemp()
        self.addCleanup(os.unlink, path)
        os.write(fd, b"s" * 20)
        os.close(fd)
        options = parsed("--workers", "2", "--listen", "tcp:{}".format(_free_port()), "--peer-secret-file", path)
        plan = worker_plan(options.settings, options.argv, reactor=None)
        self.addCleanup(lambda: [s.close() for s in plan.supervisor._listen + plan.supervisor._internal])
        self.assertEqual(plan.settings.peers.secret, "s" * 20)
        self.assertIsNone(plan.supervisor._secret_file)

    def test_bound_reads_interface_and_backlog(self):
        s = _bound("tcp:0:interface=127.0.0.1:backlog=10")
        self.addCleanup(s.close)
        self.assertEqual(s.getsockname()[0], "127.0.0.1")


class PeerFencesTests(SynchronousTestCase):
    """Which /peer relays fences to the workers: the first process's API listener, never an internal socket."""

    def service(self, *argv: str):
        os.environ.pop(ENV, None)
        options = parsed("--docker-url", "unix:///nonexistent.sock", "--listen", "tcp:0:interface=127.0.0.1", *argv)
        top = tap.makeService(options, MemoryReactorClock())
        supervisor = next(s for s in top if isinstance(s, Supervisor))
        self.addCleanup(lambda: [s.close() for s in supervisor._listen + supervisor._internal])
        self.addCleanup(lambda: supervisor._secret_file and os.unlink(supervisor._secret_file))
        return top, supervisor

    def test_api_listener_relays_to_the_workers_internal_socket_does_not(self):
        top, supervisor = self.service("--workers", "3")
        api = [s for s in top if type(s).__name__ == "StreamServerEndpointService"][-1].factory.resource
        relaying = api.children[b"peer"]._fences
        self.assertIsInstance(relaying, GroupFences)
        self.assertEqual(relaying._workers._urls, supervisor._urls[1:])  # the workers' internal sockets only
        (internal,) = [s for s in top if isinstance(s, AdoptedPort) and s._fd == supervisor._internal[0].fileno()]
        self.assertIsInstance(internal._factory.resource.children[b"peer"]._fences, Waker)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Transport:
    def __init__(self, pid: int):
        self.pid, self.signals = pid, []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class _SpawningClock(Clock):
    """A Clock whose spawnProcess records what would run and hands the protocol a fake transport."""

    def __init__(self):
        Clock.__init__(self)
        self.spawned = []

    def spawnProcess(self, protocol, executable, args, env, childFDs):
        protocol.makeConnection(_Transport(1000 + len(self.spawned)))
        self.spawned.append((protocol, args, env, childFDs))
        return protocol.transport


class SupervisorTests(SynchronousTestCase):
    def supervisor(self, workers: int = 3):
        clock = _SpawningClock()
        listen = [_bound("tcp:0:interface=127.0.0.1")]
        internal = [_bound("tcp:0:interface=127.0.0.1") for _ in range(workers)]
        self.addCleanup(lambda: [s.close() for s in listen + internal])
        urls = ["http://127.0.0.1:{}".format(s.getsockname()[1]) for s in internal]
        supervisor = Supervisor(clock, ["--idle-timeout", "1m"], listen, internal, urls, 15.0, None)
        supervisor.startService()
        return clock, supervisor, listen, internal, urls

    def end(self, protocol) -> None:
        protocol.processEnded(Failure(ProcessTerminated(signal=9)))

    def test_spawns_the_others_with_the_sockets_and_every_other_process_as_peer(self):
        clock, supervisor, listen, internal, urls = self.supervisor()
        self.assertEqual(len(clock.spawned), 2)
        protocol, args, env, fds = clock.spawned[0]
        self.assertEqual(args[1:5], ["-m", "twisted", "--log-format=text", "wakeproxy"])
        self.assertEqual([a for a in args if a.startswith("http://")], [urls[0], urls[2]])
        doc = json.loads(env[ENV])
        self.assertEqual((doc["listen"], doc["peer"]), ([listen[0].fileno()], internal[1].fileno()))
        self.assertEqual(fds[listen[0].fileno()], listen[0].fileno())
        self.assertEqual(fds[internal[1].fileno()], internal[1].fileno())
        self.assertNotIn(internal[2].fileno(), fds)  # each worker gets its own internal socket only

    def test_an_exited_worker_comes_back_with_growing_then_reset_delay(self):
        clock, supervisor, *_ = self.supervisor(workers=2)
        self.end(clock.spawned[-1][0])
        clock.advance(0.4)
        self.assertEqual(len(clock.spawned), 1)
        clock.advance(0.1)
        self.assertEqual(len(clock.spawned), 2)
        self.end(clock.spawned[-1][0])  # died at once again: 1 s this time
        clock.advance(0.9)
        self.assertEqual(len(clock.spawned), 2)
        clock.advance(0.1)
        self.assertEqual(len(clock.spawned), 3)
        clock.advance(61)
        self.end(clock.spawned[-1][0])  # lived a minute: back to 0.5 s
        clock.advance(0.5)
        self.assertEqual(len(clock.spawned), 4)

    def test_stop_terms_then_kills_and_spawns_nothing_more(self):
        clock, supervisor, *_ = self.supervisor()
        first, second = [p for p, *_ in clock.spawned]
        d = supervisor.stopService()
        self.assertEqual((first.transport.signals, second.transport.signals), (["TERM"], ["TERM"]))
        self.end(first)
        clock.advance(15)
        self.assertEqual(second.transport.signals, ["TERM", "KILL"])
        self.assertNoResult(d)
        self.end(second)
        self.successResultOf(d)
        clock.advance(60)
        self.assertEqual(len(clock.spawned), 2)
