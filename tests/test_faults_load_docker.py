# -*- test-case-name: tests.test_faults_load_docker -*-
"""
Faults under load (issue 12, items 6-8), on the machine's engine. Each test prints its figures (visible
with C{pytest -s}; docs/RELIABILITY.md keeps the last ones).

6. A never-healthy container and a crash-looping one (exits right after start) with C{--wake-rate}: no
   restart loop (start events counted from the engine), statuses as the README documents.
7. Slowloris: 1,000 connections trickling their heads a byte a second are all closed by C{--head-timeout}
   while warm traffic goes on; an open-loop probe (bench/openloop.py: a fixed rate, latency from each
   request's scheduled send) measures the warm p99 before, during and after the attack, and the attacked
   p99 must stay within 2x the worse quiet one.
8. SIGTERM under load: exchanges in flight finish within C{--drain-timeout} (one that outlasts it is cut),
   held requests get 503 with Retry-After at once, the process exits.

Markers: C{docker} and C{faults}.
"""

import collections
import concurrent.futures
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from tests.dockerapp import Instances
from tests.support import metric
from tests.test_faults_docker import _cookie, _fds, _FaultCase

pytestmark = [pytest.mark.docker, pytest.mark.faults]

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Docker HEALTHCHECK that never passes: one failed check (every 0.5 s) makes the container unhealthy
_NEVER_HEALTHY = {"test": ["CMD", "false"], "interval": 500_000_000, "timeout": 1_000_000_000, "retries": 1}


class _LoadCase(_FaultCase):
    def setUp(self):
        _FaultCase.setUp(self)
        self.instances = Instances(self.owner)
        self.addCleanup(self.instances.cleanup)

    def get(self, server, name: str, path: str = "/", timeout: float = 30) -> requests.Response:
        return requests.get(server.proxy_url + path, headers=_cookie(name), timeout=timeout)

    def assertStartsStay(self, name: str, starts: int, seconds: float) -> None:
        """No start event beyond C{starts} during C{seconds}: nothing restarts the container by itself."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.assertEqual(self.instances.starts(name), starts)
            time.sleep(0.5)


# 6. never healthy, crash loop


class NeverHealthyAndCrashLoop(_LoadCase):
    def test_never_healthy_is_started_once_and_answered_503(self):
        """
        A container Docker reports unhealthy (and whose own health path never answers 2xx): the first
        request waits until Docker says unhealthy (503, phase health); later ones get 503 at once, then the
        wake rate's 503; it is started once and left running.
        """
        name = self.instances.create(labels={"wakeproxy.health-check": "/no-such-path"},
                                     healthcheck=_NEVER_HEALTHY)
        server = self.wakeproxy("--wake-rate", "3/1m", "--wake-timeout", "20s")
        answers = []
        for _ in range(6):
            began = time.monotonic()
            r = self.get(server, name)
            answers.append((r.status_code, round(time.monotonic() - began, 2),
                            r.headers.get("retry-after"), self.assertProblem(r, 503)))
        print("never healthy, --wake-rate 3/1m: (status, seconds, Retry-After, phase) =",
              [(s, t, ra, doc.get("phase")) for s, t, ra, doc in answers])
        for status, took, retry, doc in answers:
            self.assertIsNotNone(retry)
            self.assertLess(took, 15)
        self.assertEqual([doc.get("phase") for _, _, _, doc in answers[:3]], ["health"] * 3)
        self.assertIn("unhealthy", answers[0][3]["detail"])
        for _, took, retry, doc in answers[3:]:
            self.assertIn("--wake-rate", doc["detail"])
            self.assertLess(took, 2)
            self.assertTrue(1 <= int(retry) <= 61, retry)
        self.assertEqual(metric(server, "wakeproxy_wakes_total", 'outcome="failed"'), 3)
        self.assertEqual(metric(server, "wakeproxy_wakes_total", 'outcome="rate_limited"'), 3)
        self.assertStartsStay(name, 1, 3)
        self.assertEqual(self.instances.state(name), "running")  # never stopped because a check failed

    def test_crash_loop_with_wake_rate(self):
        """
        CRASH_ON_START=1: mock_app exits 3 right after it starts. A burst of 20 requests is one wake (502,
        exit code in the detail); each later request starts it again until --wake-rate refuses (503 with
        Retry-After, no start); nothing restarts it by itself.
        """
        name = self.instances.create(env={"CRASH_ON_START": "1"})
        server = self.wakeproxy("--wake-rate", "3/1m")
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            burst = list(pool.map(lambda _: self.get(server, name), range(20)))
        burst_starts = self.instances.starts(name)
        later = []
        for _ in range(8):
            began = time.monotonic()
            later.append((self.get(server, name), time.monotonic() - began))
        statuses = collections.Counter(r.status_code for r in burst)
        print("crash loop, --wake-rate 3/1m: burst of 20 -> {} with {} start(s); then one by one: {}".format(
            dict(statuses), burst_starts, [(r.status_code, round(t, 2)) for r, t in later]))
        self.assertGreaterEqual(burst_starts, 1)
        for r in burst + [r for r, _ in later]:
            doc = self.assertProblem(r, r.status_code)
            self.assertIn(r.status_code, (502, 503))
            if r.status_code == 502:
                self.assertIn("exited with code 3", doc["detail"])
            else:
                self.assertIn("--wake-rate", doc["detail"])
                self.assertTrue(1 <= int(r.headers["retry-after"]) <= 61)
        # every request that met the exited container began a wake, until the third one in the minute
        self.assertEqual(self.instances.starts(name), 3)
        self.assertEqual(metric(server, "wakeproxy_wakes_total", 'outcome="failed"'), 3)
        self.assertEqual([r.status_code for r, _ in later[-5:]], [503] * 5)
        self.assertLess(max(t for r, t in later if r.status_code == 503), 2)
        self.assertStartsStay(name, 3, 3)
        self.assertEqual(self.instances.state(name), "exited")


# 7. slowloris


class _Trickler:
    """
    C{count} client connections that send a request head one byte a second and never finish it. L{closed}
    maps each connection to (seconds from its first byte to the server's close, when that was, the first
    bytes answered). C{groups}: the connections send their byte of each second in that many groups spread
    over the second (as independent attackers would; 1: all 1,000 bytes at once, as one attacking loop
    does).
    """

    HEAD = b"GET / HTTP/1.1\r\nHost: slowloris.test\r\nX-Slow: " + b"a" * 4000

    def __init__(self, port: int, count: int, groups: int = 1):
        self.port = port
        self.count = count
        self.groups = groups
        self.selector = selectors.DefaultSelector()
        self.first_byte: dict[socket.socket, float] = {}
        self.answers: dict[socket.socket, bytes] = {}
        self.closed: dict[socket.socket, tuple[float, bytes]] = {}
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def open(self) -> None:
        """Connect (32 at a time: now and then a connect waits a second for a SYN retransmit) and send a byte."""
        def one(_) -> tuple[socket.socket, float]:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            s.sendall(self.HEAD[:1])
            return s, time.monotonic()

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            for s, sent in pool.map(one, range(self.count)):
                self.first_byte[s] = sent
                s.setblocking(False)
                self.answers[s] = b""
                self.selector.register(s, selectors.EVENT_READ)
        self._thread.start()

    def _run(self) -> None:
        sockets = list(self.first_byte)
        groups = [sockets[g::self.groups] for g in range(self.groups)]
        offset, group, next_byte = 1, 0, time.monotonic() + 1
        while not self._stop.is_set() and len(self.closed) < self.count:
            for key, _ in self.selector.select(min(0.1, max(0.0, next_byte - time.monotonic()))):
                self._readable(key.fileobj)
            if time.monotonic() >= next_byte:
                next_byte += 1 / self.groups
                for s in groups[group]:
                    if s not in self.closed:
                        try:
                            s.send(self.HEAD[offset:offset + 1])
                            self.sent += 1
                        except OSError:
                            self._readable(s)
                group += 1
                if group == self.groups:
                    group, offset = 0, offset + 1

    def _readable(self, s: socket.socket) -> None:
        if s in self.closed:
            return
        try:
            data = s.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.answers[s] += data
            return
        now = time.monotonic()
        self.closed[s] = (now - self.first_byte[s], now, self.answers[s][:12])
        self.selector.unregister(s)
        s.close()

    def wait(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in self.first_byte:
            s.close()
        self.selector.close()


class Slowloris(_LoadCase):
    CONNECTIONS = 1000
    #: opening the 1,000 connections takes 0.1-6 s here (some connects wait a second for a SYN retransmit);
    #: the attacked window runs once they are all open and must end before the first is cut
    HEAD_TIMEOUT = 25
    #: the probe: an open-loop GET of /status at this rate for this long, in each of three windows (quiet,
    #: attacked, quiet again), timed from each request's scheduled send (bench/openloop.py). One stall of the
    #: shared machine delays every request scheduled during it: at 300 req/s a 40 ms one is 1 % of a 4 s
    #: window (it is the p99), half that of an 8 s one
    RATE = 300
    WINDOW = 8
    #: the attacked p99 must stay within this factor of the worse quiet one (the issue's 2x)
    P99_BOUND = 2.0
    #: the slow connections send their bytes of each second in 20 groups, 50 ms apart (docs/RELIABILITY.md,
    #: item 7: with all 1,000 at once, the burst alone sets the p99)
    GROUPS = int(os.environ.get("FAULTS_SLOWLORIS_GROUPS", "20"))

    def probe(self, server, name: str, seconds: float) -> dict:
        """
        bench/openloop.py in its own process (not sharing this one's GIL with the trickler); adds the CPU time
        wakeproxy used meanwhile, in ms per second (C{cpu_ms_per_s}).
        """
        cpu = _cpu_seconds(server.process.pid)
        began = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-m", "bench.openloop", "--port", str(server.proxy_port), "--path", "/status",
             "--cookie", "instance={}".format(name), "--rate", str(self.RATE), "--seconds", str(seconds)],
            cwd=_ROOT, capture_output=True, text=True, timeout=seconds + 30, check=True)
        result = json.loads(out.stdout)
        result["cpu_ms_per_s"] = round(1000 * (_cpu_seconds(server.process.pid) - cpu) / (time.monotonic() - began))
        return result

    def test_slowloris_is_cut_by_the_head_timeout_while_warm_traffic_goes_on(self):
        name = self.instances.create(start=True)
        server = self.wakeproxy("--head-timeout", "{}s".format(self.HEAD_TIMEOUT))
        self.assertEqual(self.get(server, name).status_code, 200)
        self.probe(server, name, 1)  # warm the pool and the app
        baseline_fds = _fds(server.process.pid)
        quiet = self.probe(server, name, self.WINDOW)

        attack = _Trickler(server.proxy_port, self.CONNECTIONS, self.GROUPS)
        self.addCleanup(attack.close)
        opened = time.monotonic()
        attack.open()
        open_took = time.monotonic() - opened
        deadline = time.monotonic() + 5
        while _fds(server.process.pid) < self.CONNECTIONS:
            self.assertLess(time.monotonic(), deadline, "wakeproxy never accepted the slow connections")
            time.sleep(0.05)
        self.assertLess(time.monotonic() - opened, self.HEAD_TIMEOUT - self.WINDOW - 2,
                        "opening the slow connections took too long to measure the warm load meanwhile")
        attacked = self.probe(server, name, self.WINDOW)
        load_ended = time.monotonic()
        self.assertTrue(attack.wait(self.HEAD_TIMEOUT + 15), "{} of {} slow connections still open".format(
            self.CONNECTIONS - len(attack.closed), self.CONNECTIONS))
        all_closed = time.monotonic() - opened
        fds_back = self.assertFdsBack(server, baseline_fds, timeout=10)
        quiet_after = self.probe(server, name, self.WINDOW)

        times = sorted(t for t, _, _ in attack.closed.values())
        first_close = min(at for _, at, _ in attack.closed.values())
        answers = collections.Counter(first for _, _, first in attack.closed.values())
        print("slowloris: {} connections opened in {:.2f}s, {} bytes trickled in {} group(s) a second; attacked "
              "window ({}s) ended "
              "{:.1f}s after the first; all closed {:.1f}s after the first (each {:.2f}-{:.2f}s after its first "
              "byte, --head-timeout {}s); answers {}; fds back {:.2f}s later".format(
                  self.CONNECTIONS, open_took, attack.sent, self.GROUPS, self.WINDOW, load_ended - opened, all_closed,
                  times[0],
                  times[-1], self.HEAD_TIMEOUT, dict(answers), fds_back))
        worse_quiet = max(quiet["p99_ms"], quiet_after["p99_ms"])
        print("open-loop probe, {} req/s for {}s per window, p50/p99/max ms (the probe's own lateness p99 ms; "
              "wakeproxy's CPU ms/s): quiet {}, attacked {}, quiet again {}; attacked p99 x{:.2f} the worse quiet "
              "one".format(self.RATE, self.WINDOW, *["{}/{}/{} ({}; {})".format(
                  r["p50_ms"], r["p99_ms"], r["max_ms"], r["late_p99_ms"], r["cpu_ms_per_s"])
                  for r in (quiet, attacked, quiet_after)], attacked["p99_ms"] / max(worse_quiet, 0.001)))
        self.assertLess(load_ended, first_close, "the first slow connection was closed before the warm load ended")
        self.assertEqual(set(answers), {b"HTTP/1.1 408"})
        self.assertGreaterEqual(times[0], self.HEAD_TIMEOUT - 0.1)  # never early
        self.assertLess(times[-1], self.HEAD_TIMEOUT + 10)
        for result in (quiet, attacked, quiet_after):
            self.assertEqual((result["statuses"], result["errors"]), ({"200": result["sent"]}, {}), result)
        self.assertLessEqual(attacked["p99_ms"], self.P99_BOUND * worse_quiet)


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of the process C{pid} so far."""
    with open("/proc/{}/stat".format(pid)) as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# 8. SIGTERM under load


class SigtermUnderLoad(_LoadCase):
    DRAIN = 5
    SLOW = 20
    HELD = 20
    WARM_CLIENTS = 4

    def test_sigterm_drains_in_flight_answers_held_and_exits(self):
        warm = self.instances.create(start=True)
        sleepy = self.instances.create(env={"STARTUP_DELAY": "60"})
        server = self.wakeproxy("--drain-timeout", "{}s".format(self.DRAIN))
        self.assertEqual(self.get(server, warm).status_code, 200)
        stop = threading.Event()
        signalled = []

        def warm_client(_):
            """Keep-alive GETs until the first failure after SIGTERM; (status, after SIGTERM) of each."""
            seen = []
            with requests.Session() as s:
                while not stop.is_set():
                    try:
                        r = s.get(server.proxy_url + "/status", headers=_cookie(warm), timeout=30)
                        seen.append((r.status_code, bool(signalled)))
                    except requests.RequestException:
                        seen.append(("refused or closed", bool(signalled)))
                        if signalled:
                            break
            return seen

        def timed(path, name):
            began = time.monotonic()
            try:
                r = self.get(server, name, path, timeout=90)
                return r.status_code, r.headers.get("retry-after"), time.monotonic() - began, time.monotonic()
            except requests.RequestException as e:
                return type(e).__name__, None, time.monotonic() - began, time.monotonic()

        pool = concurrent.futures.ThreadPoolExecutor(self.SLOW + self.HELD + self.WARM_CLIENTS + 1)
        self.addCleanup(pool.shutdown)
        warm_seen = [pool.submit(warm_client, i) for i in range(self.WARM_CLIENTS)]
        slow = [pool.submit(timed, "/slow?ms=3000", warm) for _ in range(self.SLOW)]
        endless = pool.submit(timed, "/slow?ms=60000", warm)
        held = [pool.submit(timed, "/", sleepy) for _ in range(self.HELD)]
        deadline = time.monotonic() + 15
        while metric(server, "wakeproxy_held_requests") < self.HELD or \
                metric(server, "wakeproxy_inflight_requests", 'instance="{}"'.format(warm)) < self.SLOW + 1:
            self.assertLess(time.monotonic(), deadline, "the load never got in flight")
            time.sleep(0.05)

        term = time.monotonic()
        signalled.append(term)
        server.process.send_signal(signal.SIGTERM)
        status = server.process.wait(self.DRAIN + 10)
        drain = time.monotonic() - term
        stop.set()
        slow_results = [f.result(30) for f in slow]
        held_results = [f.result(30) for f in held]
        endless_result = endless.result(30)
        warm_results = collections.Counter()
        for f in warm_seen:
            warm_results.update("{} {}".format(s, "after" if after else "before") for s, after in f.result(30))

        print("SIGTERM under load, --drain-timeout {}s: exit {} after {:.2f}s; {} in flight (3 s each): {}, "
              "finished {:.2f}-{:.2f}s after SIGTERM; held: {} (Retry-After {}) within {:.2f}s; the 60 s one: {} "
              "at {:.2f}s; warm keep-alive clients: {}".format(
                  self.DRAIN, status, drain, self.SLOW, dict(collections.Counter(r[0] for r in slow_results)),
                  min(r[3] for r in slow_results) - term, max(r[3] for r in slow_results) - term,
                  dict(collections.Counter(r[0] for r in held_results)),
                  sorted({r[1] for r in held_results}, key=str), max(r[3] for r in held_results) - term,
                  endless_result[0], endless_result[3] - term, dict(warm_results)))
        self.assertIn(status, (0, -signal.SIGTERM, 128 + signal.SIGTERM))
        self.assertEqual([r[0] for r in slow_results], [200] * self.SLOW)
        self.assertEqual([r[0] for r in held_results], [503] * self.HELD)
        self.assertTrue(all(r[1] and int(r[1]) > 0 for r in held_results))
        self.assertLess(max(r[3] for r in held_results) - term, 2)
        # cut at the drain deadline: its connection closed, or (no response byte sent yet) a 502 problem when
        # the reactor's shutdown drops the upstream connection before the client's abort has completed
        self.assertIn(endless_result[0], (502, "ConnectionError", "ChunkedEncodingError"))
        self.assertGreaterEqual(drain, self.DRAIN - 0.1)
        self.assertLess(drain, self.DRAIN + 5)
        self.assertLess(endless_result[3] - term, self.DRAIN + 5)
        self.assertEqual({k for k in warm_results if not re.match(r"(200 |refused or closed after)", k)}, set())
        log = server.log()
        self.assertIn("{} held requests answered 503".format(self.HELD), log)
