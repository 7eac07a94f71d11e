"""C{--workers N}: its option checks, what workers are started with, and the sockets the first process binds."""

import os
import socket
import tempfile

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from wakeproxy.settings import _workers
from wakeproxy.tap import Options
from wakeproxy.workers import ENV, _bound, worker_args, worker_plan


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
