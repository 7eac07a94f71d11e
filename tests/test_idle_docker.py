"""
Scale to zero on a real engine: idle stop, activity that keeps instances awake, pause, races between a
stop and a new request, apps that stop themselves, wake policy, wake rate, groups and dependencies.
"""

import socket
import time

import pytest

from tests.test_proxy_docker import _ProxyCase

pytestmark = pytest.mark.docker


class IdleStopTests(_ProxyCase):
    def test_idle_instance_is_stopped_and_woken_again(self):
        name = self.instances.create(labels={"wakeproxy.idle-timeout": "2s"})
        server = self.wakeproxy()
        self.assertEqual(self.get(server, name).status_code, 200)
        took = self.instances.wait_state(name, "exited", timeout=8)
        self.assertGreater(took, 1.0)  # not before its idle timeout
        r = self.get(server, name)
        self.assertEqual((r.status_code, r.headers.get("x-wakeproxy-woke")), (200, "1"))
        self.assertEqual(self.instances.starts(name), 2)

    def test_default_idle_timeout_and_never(self):
        short = self.instances.create()
        never = self.instances.create(labels={"wakeproxy.idle-timeout": "never"})
        server = self.wakeproxy("--idle-timeout", "1s")
        for name in (short, never):
            self.assertEqual(self.get(server, name).status_code, 200)
        self.instances.wait_state(short, "exited", timeout=6)
        self.assertEqual(self.instances.state(never), "running")

    def test_streamed_download_keeps_the_instance_awake(self):
        """A 30 s download outlives a 5 s idle timeout; the idle clock starts when it ends."""
        name = self.instances.create(labels={"wakeproxy.idle-timeout": "5s"})
        server = self.wakeproxy()
        began = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.proxy_port)) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.sendall("GET /bytes/{} HTTP/1.1\r\nHost: x\r\nCookie: instance={}\r\n\r\n".format(
                10 << 30, name).encode())
            while time.monotonic() - began < 30:
                self.assertTrue(s.recv(65536))
                time.sleep(0.01)  # a slow reader: ~6 MB/s
            self.assertEqual(self.instances.state(name), "running")
        ended = time.monotonic()
        self.instances.wait_state(name, "exited", timeout=12)
        self.assertGreater(time.monotonic() - ended, 4.0)

    def test_pause_method_and_wake_from_pause(self):
        name = self.instances.create(labels={"wakeproxy.idle-timeout": "1s", "wakeproxy.stop-method": "pause"})
        server = self.wakeproxy()
        self.assertEqual(self.get(server, name).status_code, 200)
        self.instances.wait_state(name, "paused", timeout=6)
        time.sleep(0.2)
        began = time.monotonic()
        r = self.get(server, name)
        took = time.monotonic() - began
        self.assertEqual((r.status_code, r.headers.get("x-wakeproxy-woke")), (200, "1"))
        self.assertEqual(self.instances.state(name), "running")
        self.assertEqual(self.instances.starts(name), 1)  # unpaused, not restarted
        print("wake from pause: {:.1f} ms to the response ({})".format(took * 1000, r.headers["server-timing"]))

    def test_request_during_a_stop_is_held_and_wakes_it_again(self):
        # The app ignores its stop signal (PID 1, no handler), so Docker's stop takes the full 3 s grace.
        name = self.instances.create(labels={"wakeproxy.idle-timeout": "1s"}, stop_signal="SIGUSR1")
        server = self.wakeproxy("--stop-timeout", "3s")
        self.assertEqual(self.get(server, name).status_code, 200)
        time.sleep(2.5)  # idle: the stop has begun and lasts ~3 s
        r = self.get(server, name, timeout=30)
        self.assertEqual((r.status_code, r.headers.get("x-wakeproxy-woke")), (200, "1"))
        self.assertEqual(len(self.instances.events(name, "die")), 1)
        self.assertEqual(self.instances.starts(name), 2)

    def test_app_that_stops_itself_is_noticed(self):
        name = self.instances.create(env={"IDLE": "1s"})
        server = self.wakeproxy()
        self.assertEqual(self.get(server, name).status_code, 200)
        self.instances.wait_state(name, "exited", timeout=6)
        time.sleep(self.event_lag)
        r = self.get(server, name)
        self.assertEqual((r.status_code, r.headers.get("x-wakeproxy-woke")), (200, "1"))
        self.assertEqual(self.instances.starts(name), 2)


class WakePolicyTests(_ProxyCase):
    def test_no_wake_paths_and_user_agents(self):
        name = self.instances.create(labels={"wakeproxy.idle-timeout": "2s"})
        server = self.wakeproxy("--no-wake-user-agent", "UptimeRobot", "--no-wake-path", "/favicon.ico")
        for path, agent in (("/favicon.ico", "Mozilla/5.0"), ("/", "Mozilla/5.0 (compatible; UptimeRobot/2.0)")):
            r = self.get(server, name, path, headers={"User-Agent": agent})
            doc = self.assertProblem(r, 503)
            self.assertIn("does not wake", doc["detail"])
            self.assertIn("retry-after", r.headers)
        self.assertEqual(self.instances.state(name), "created")
        # on a running instance they are proxied, but do not keep it awake
        self.assertEqual(self.get(server, name).status_code, 200)
        began = time.monotonic()
        while self.instances.state(name) == "running":
            r = self.get(server, name, "/status", headers={"User-Agent": "UptimeRobot/2.0"})
            self.assertIn(r.status_code, (200, 503))
            self.assertLess(time.monotonic() - began, 8, "monitor requests kept the instance awake")
            time.sleep(0.3)

    def test_wake_rate(self):
        name = self.instances.create()
        server = self.wakeproxy("--wake-rate", "1/1m")
        self.assertEqual(self.get(server, name).status_code, 200)
        self.instances.client.stop(name, timeout=1)
        time.sleep(0.2)
        r = self.get(server, name)
        doc = self.assertProblem(r, 503)
        self.assertIn("--wake-rate", doc["detail"])
        self.assertGreater(int(r.headers["retry-after"]), 1)
        self.assertEqual(self.instances.starts(name), 1)


class GroupTests(_ProxyCase):
    def test_dependency_first_and_group_together_and_stop_order(self):
        db = self.instances.create(labels={"wakeproxy.group": "g", "wakeproxy.idle-timeout": "2s"})
        app = self.instances.create(labels={"wakeproxy.group": "g", "wakeproxy.depends-on": db,
                                            "wakeproxy.idle-timeout": "2s"})
        side = self.instances.create(labels={"wakeproxy.group": "g", "wakeproxy.idle-timeout": "2s"})
        server = self.wakeproxy()
        r = self.get(server, app)
        self.assertEqual(r.status_code, 200)
        self.assertIn("dependencies;dur=", r.headers["server-timing"])
        self.assertLess(self.instances.events(db, "start")[0]["timeNano"],
                        self.instances.events(app, "start")[0]["timeNano"])
        self.instances.wait_state(side, "running", timeout=5)  # the group woke with it
        # the group sleeps together, the dependency last
        for name in (app, side, db):
            self.instances.wait_state(name, "exited", timeout=10)
        self.assertLess(self.instances.events(app, "die")[0]["timeNano"],
                        self.instances.events(db, "die")[0]["timeNano"])

