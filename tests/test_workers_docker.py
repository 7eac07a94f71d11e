"""
C{--workers 2} on the real engine: both processes accept on the shared socket (the access log's pid says
which served each request), a herd through both starts the instance once, an instance kept busy through
one worker is not stopped by the other, a killed worker is started again and SIGTERM leaves no process.
A lone replica naming the group's API listener as its C{--peer} does not stop an instance only the
group's worker serves.
"""

import concurrent.futures
import json
import os
import signal
import tempfile
import time

import pytest
import requests
from twisted.trial.unittest import SynchronousTestCase

from tests.dockerapp import Instances
from tests.support import Twistd, start_wakeproxy, unique_name

pytestmark = pytest.mark.docker


def children(pid: int) -> set:
    try:
        with open("/proc/{0}/task/{0}/children".format(pid)) as f:
            return {int(p) for p in f.read().split()}
    except OSError:
        return set()


def alive(pid: int) -> bool:
    try:
        with open("/proc/{}/stat".format(pid)) as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


class _WorkersCase(SynchronousTestCase):
    def setUp(self):
        self.owner = "wakeproxy.test-owner={}".format(unique_name("workers"))
        self.instances = Instances(self.owner)
        self.addCleanup(self.instances.cleanup)
        fd, self.access_log = tempfile.mkstemp(prefix="wakeproxy-access-")
        os.close(fd)
        self.addCleanup(os.unlink, self.access_log)

    def start(self, *args, server=None):
        """wakeproxy --workers 2 (the instances it serves are created before: it reads them at start)."""
        self.warm = self.instances.create(labels={"wakeproxy.idle-timeout": "10m"})
        return start_wakeproxy(self, "--owner-label", self.owner, "--workers", "2", "--access-log", self.access_log,
                               "--stop-timeout", "3s", *args, server=server)

    def served_by(self) -> list:
        with open(self.access_log, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def get(self, server, name, session=requests):
        return session.get(server.proxy_url + "/", headers={"Cookie": "instance=" + name}, timeout=60)

    def wait_for(self, condition, timeout, what):
        deadline = time.monotonic() + timeout
        while not condition():
            self.assertLess(time.monotonic(), deadline, what)
            time.sleep(0.1)

    def both_serving(self, server) -> set:
        """Requests on new connections until both processes have served one (the worker starts after the first)."""
        def two_pids():
            self.assertEqual(self.get(server, self.warm).status_code, 200)
            return len({e["pid"] for e in self.served_by()}) == 2

        self.wait_for(two_pids, 30, "the worker never served a request")
        return {e["pid"] for e in self.served_by()}


class WorkersTests(_WorkersCase):

    def test_herd_through_both_processes_one_start(self):
        name = self.instances.create(labels={"wakeproxy.idle-timeout": "10m"}, env={"STARTUP_DELAY": "1"})
        server = self.start()
        pids = self.both_serving(server)
        self.assertEqual(pids, {server.process.pid} | children(server.process.pid))

        def one(_):
            with requests.Session() as s:
                return self.get(server, name, s).status_code

        with concurrent.futures.ThreadPoolExecutor(100) as pool:
            codes = list(pool.map(one, range(300)))
        self.assertEqual(codes, [200] * 300)
        self.assertEqual(self.instances.starts(name), 1)
        herd = [e for e in self.served_by() if e["instance"] == name]
        self.assertEqual({e["pid"] for e in herd}, pids)  # both processes held some of it
        self.assertEqual(sum(e["woke"] for e in herd) > 0, True)

    def test_busy_through_one_worker_not_stopped_by_the_other(self):
        name = self.instances.create(labels={"wakeproxy.idle-timeout": "2s"})
        server = self.start()
        self.both_serving(server)
        with requests.Session() as s:  # one keep-alive connection: one process sees all of it
            began = time.monotonic()
            while time.monotonic() - began < 8:  # four idle timeouts
                self.assertEqual(self.get(server, name, s).status_code, 200)
                time.sleep(0.5)
        self.assertEqual(len({e["pid"] for e in self.served_by() if e["instance"] == name}), 1)
        self.assertEqual(self.instances.events(name, "die"), [])
        self.wait_for(lambda: self.instances.state(name) == "exited", 20, "never stopped once quiet")
        time.sleep(1.5)
        self.assertEqual(len(self.instances.events(name, "die")), 1)

    def test_killed_worker_restarted_and_sigterm_leaves_no_process(self):
        server = self.start()
        self.both_serving(server)
        (worker,) = children(server.process.pid)
        os.kill(worker, signal.SIGKILL)
        self.wait_for(lambda: len(children(server.process.pid) - {worker}) == 1, 20, "the worker was not restarted")
        (again,) = children(server.process.pid) - {worker}
        self.assertIn("worker 1 exited", server.log())
        server.stop(timeout=30)
        self.wait_for(lambda: not alive(again), 10, "the worker outlived the first process")

    def test_worker_dies_with_the_first_process(self):
        server = self.start()
        self.both_serving(server)
        (worker,) = children(server.process.pid)
        server.process.kill()
        server.process.wait()
        self.wait_for(lambda: not alive(worker), 10, "the worker outlived a SIGKILLed first process")


class CrossHostPeerTests(_WorkersCase):
    """Replica A (one process) and replica B (C{--workers 2}) name each other with C{--peer}, A naming B's API."""

    def test_busy_only_through_the_groups_worker_not_stopped_by_the_lone_replica(self):
        fd, secret = tempfile.mkstemp(prefix="wakeproxy-peer-")
        os.write(fd, os.urandom(24).hex().encode())
        os.close(fd)
        self.addCleanup(os.unlink, secret)
        name = self.instances.create(labels={"wakeproxy.idle-timeout": "2s"})
        a, b = Twistd(), Twistd()
        start_wakeproxy(self, "--peer", b.api_url, "--peer-secret-file", secret, "--owner-label", self.owner,
                        "--stop-timeout", "3s", server=a)
        self.start("--peer", a.api_url, "--peer-secret-file", secret, server=b)
        pids = self.both_serving(b)
        sessions = []

        def at_the_worker():  # a new keep-alive connection each time, until one is the worker's
            sessions.append(requests.Session())
            self.addCleanup(sessions[-1].close)
            self.assertEqual(self.get(b, self.warm, sessions[-1]).status_code, 200)
            return self.served_by()[-1]["pid"] != b.process.pid

        self.wait_for(at_the_worker, 20, "no connection landed at the worker")
        began = time.monotonic()
        while time.monotonic() - began < 8:  # four idle timeouts, all the traffic through B's worker
            self.assertEqual(self.get(b, name, sessions[-1]).status_code, 200)
            time.sleep(0.5)
        (worker,) = pids - {b.process.pid}
        self.assertEqual({e["pid"] for e in self.served_by() if e["instance"] == name}, {worker})
        self.assertEqual(self.instances.events(name, "die"), [])
        self.wait_for(lambda: self.instances.state(name) == "exited", 15, "never stopped once all were quiet")
        time.sleep(1.5)
        self.assertEqual(len(self.instances.events(name, "die")), 1)
        self.assertEqual(self.instances.starts(name), 1)
