"""
Replicas that act as one, on the real engine: two C{twistd wakeproxy} processes with the same (unique)
owner label, each the other's C{--peer}. One start for a herd split across both; no stop while one of
them serves the instance; one stop when both are quiet; nothing stopped while a peer is down.
"""

import concurrent.futures
import os
import tempfile
import time

import pytest
import requests
from twisted.trial.unittest import SynchronousTestCase

from tests.dockerapp import Instances
from tests.support import Twistd, start_wakeproxy, unique_name

pytestmark = pytest.mark.docker


class ReplicaTests(SynchronousTestCase):
    def setUp(self):
        self.owner = "wakeproxy.test-owner={}".format(unique_name("replicas"))
        self.instances = Instances(self.owner)
        self.addCleanup(self.instances.cleanup)
        fd, self.secret = tempfile.mkstemp(prefix="wakeproxy-peer-")
        os.write(fd, os.urandom(24).hex().encode())
        os.close(fd)
        self.addCleanup(os.unlink, self.secret)

    def replicas(self):
        """Two replicas, each the other's peer."""
        a, b = Twistd(), Twistd()
        common = ("--owner-label", self.owner, "--peer-secret-file", self.secret, "--stop-timeout", "3s")
        start_wakeproxy(self, "--peer", b.api_url, *common, server=a)
        start_wakeproxy(self, "--peer", a.api_url, *common, server=b)
        return a, b

    def get(self, server, name, session=requests):
        return session.get(server.proxy_url + "/", headers={"Cookie": "instance=" + name}, timeout=60)

    def test_replica_killed_mid_wake_held_requests_at_the_other_complete(self):
        name = self.instances.create(labels={"wakeproxy.idle-timeout": "10m"}, env={"STARTUP_DELAY": "2"})
        a, b = self.replicas()

        def one(server):
            try:
                with requests.Session() as s:
                    return self.get(server, name, s).status_code
            except requests.RequestException:
                return None

        with concurrent.futures.ThreadPoolExecutor(40) as pool:
            at_a = [pool.submit(one, a) for _ in range(20)]
            at_b = [pool.submit(one, b) for _ in range(20)]
            self.wait_for(lambda: self.instances.state(name) == "running", 10, "never started")
            a.process.kill()  # SIGKILL while the app sleeps before listening (STARTUP_DELAY)
            a.process.wait()
            self.assertEqual([f.result() for f in at_b], [200] * 20)
            self.assertEqual([f.result() for f in at_a], [None] * 20)
        self.assertEqual(self.instances.starts(name), 1)

    def wait_for(self, condition, timeout, what):
        deadline = time.monotonic() + timeout
        while not condition():
            self.assertLess(time.monotonic(), deadline, what)
            time.sleep(0.1)

    def test_herd_of_300_across_two_replicas_one_start(self):
        name = self.instances.create(labels={"wakeproxy.idle-timeout": "10m"})
        a, b = self.replicas()

        def one(i):
            with requests.Session() as s:
                return self.get((a, b)[i % 2], name, s).status_code

        with concurrent.futures.ThreadPoolExecutor(100) as pool:
            codes = list(pool.map(one, range(300)))
        self.assertEqual(codes, [200] * 300)
        self.assertEqual(self.instances.starts(name), 1)

    def test_busy_through_a_is_not_stopped_by_b_then_both_quiet_stopped_once(self):
        name = self.instances.create(labels={"wakeproxy.idle-timeout": "2s"})
        a, b = self.replicas()
        with requests.Session() as s:
            began = time.monotonic()
            while time.monotonic() - began < 8:  # four idle timeouts, all the traffic through A
                self.assertEqual(self.get(a, name, s).status_code, 200)
                self.assertEqual(self.instances.state(name), "running")
                time.sleep(0.5)
        self.assertEqual(self.instances.events(name, "die"), [])
        self.wait_for(lambda: self.instances.state(name) == "exited", 15, "never stopped once both were quiet")
        time.sleep(1.5)
        self.assertEqual(len(self.instances.events(name, "die")), 1)
        self.assertEqual(self.instances.starts(name), 1)
        self.assertIn("is idle: stop", a.log() + b.log())

    def test_peer_down_nothing_stopped_and_a_warning(self):
        name = self.instances.create(labels={"wakeproxy.idle-timeout": "1s"})
        a, b = self.replicas()
        self.assertEqual(self.get(a, name).status_code, 200)
        b.stop()
        self.wait_for(lambda: "could not be asked" in a.log(), 15, "no warning about the unreachable peer")
        time.sleep(3)
        self.assertEqual(self.instances.state(name), "running")
        self.assertEqual(self.instances.events(name, "die"), [])
        self.assertIn("an instance is only stopped when every peer agrees", a.log())
