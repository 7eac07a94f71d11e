# -*- test-case-name: tests.test_faults_engine_docker -*-
"""
Faults (issue 12), part two: bursts, vanishing clients, the engine restarted, wakeproxy killed. As in
L{tests.test_faults_docker}, each test asserts that every request gets a documented status within its
deadline, that wakeproxy's open fds return to their baseline and that no container is left behind; it
prints its figures (C{pytest -s}).

- Item 10: a burst of concurrent requests to one stopped instance, default listeners (listen backlog 4096,
  L{wakeproxy.listeners}): one start, every answer 200.
- Item 5: clients that reset their connections while held for a slow wake, in waves: wakeproxy's fds are
  back at once (not when the instance is ready) and no request of a vanished client reaches the app.
- Item 2: the engine (a private dockerd, with C{--live-restore}) restarted under warm load.
- Item 9: wakeproxy SIGKILLed and started again while instances run.

Sizes: C{FAULTS_BURST} (default 10000) and C{FAULTS_VANISH} (default 10000, in waves of 2500).

Markers: C{docker} and C{faults}.
"""

import asyncio
import gc
import os
import re
import socket
import statistics
import struct
import time

import docker
import pytest
import requests

from bench.client import herd
from bench.procfs import RssSampler, rss
from bench.procs import raise_nofile
from tests.dockerapp import Instances
from tests.privatedocker import PrivateDockerd
from tests.support import MOCK_IMAGE, can_connect, free_port, unique_name
from tests.test_faults_docker import _client_conns, _cookie, _FaultCase, _fds, _unix_fds

pytestmark = [pytest.mark.docker, pytest.mark.faults]

BURST = int(os.environ.get("FAULTS_BURST", "10000"))
VANISH = int(os.environ.get("FAULTS_VANISH", "10000"))
VANISH_WAVE = 2500
#: idle engine connections wakeproxy may keep beyond its baseline: the Docker SDK keeps one connection pool per
#: URL (per container and action), the 25 most recently used (docker.constants.DEFAULT_NUM_POOLS), so a few
#: concurrent wakes leave ~4 more keep-alive unix sockets each; bounded, not a leak
ENGINE_POOLS = 25


def _percentile(values: list, p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


def _metric(server, name: str) -> float:
    """The sum of a metric's samples on wakeproxy's /metrics."""
    text = requests.get(server.api_url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def _tcp_fds(pid: int) -> int:
    """How many of the process's fds are TCP sockets (listeners and client or upstream connections)."""
    targets = []
    for fd in os.listdir("/proc/{}/fd".format(pid)):
        try:
            targets.append(os.readlink("/proc/{}/fd/{}".format(pid, fd)))
        except OSError:
            continue
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            inodes.update(line.split()[9] for line in f.readlines()[1:])
    return sum(1 for t in targets if t.startswith("socket:[") and t[8:-1] in inodes)


def _poll(what: str, check, timeout: float, interval: float = 0.05):
    """Call C{check} until it returns something true; return it (AssertionError after C{timeout})."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("{}: not within {}s".format(what, timeout))
        time.sleep(interval)


# 10. a burst of concurrent requests to one stopped instance


class BurstOnStoppedInstance(_FaultCase):
    def test_burst_default_listeners(self):
        """
        C{BURST} connections opened all at once (no batching: the listen backlog takes the burst), one
        request each, to one stopped instance: one start, every answer a 200.
        """
        raise_nofile()  # for this process and the twistd it starts (children inherit the limit)
        instances = Instances(owner=self.owner)
        self.addCleanup(instances.cleanup)
        name = instances.create()
        server = self.wakeproxy("--max-held-per-instance", str(BURST), "--wake-timeout", "60s")
        pid = server.process.pid
        time.sleep(0.3)
        baseline, baseline_unix = _fds(pid), _unix_fds(pid)
        t0 = time.monotonic()
        with RssSampler(pid) as memory:
            result = herd(server.proxy_port, BURST, path="/", cookie=name, timeout=90, connect_batch=BURST)
        wall = time.monotonic() - t0
        gc.collect()
        latencies = result.latencies
        print("\n[faults/burst] {} concurrent requests to one stopped instance, default listen backlog: answers {};"
              " connect {:.1f}s, all answered {:.1f}s after the first connect; p50 {:.2f}s p99 {:.2f}s max {:.2f}s"
              " (send -> end); RSS +{:.1f} MiB at peak ({:.1f} KB per held request); starts {}".format(
                  BURST, result.statuses, result.connect_seconds, wall, _percentile(latencies, 0.5),
                  _percentile(latencies, 0.99), max(latencies or [0]), memory.growth / 2 ** 20,
                  memory.growth / 1000 / BURST, instances.starts(name)))
        self.assertEqual(result.statuses, {200: BURST})
        self.assertEqual(instances.starts(name), 1)
        self.assertEqual(_client_conns(server.proxy_port), 0)
        took = self.assertFdsBack(server, baseline, timeout=30, engine_slack=ENGINE_POOLS,
                                  baseline_unix=baseline_unix)
        print("[faults/burst] fds back to baseline {} ({} unix; now {}, {} unix) {:.1f}s after the last"
              " answer".format(baseline, baseline_unix, _fds(pid), _unix_fds(pid), took))


# 5. clients that vanish while held


async def _vanishing_wave(port: int, count: int, name: str, first: int, held, timeout: float) -> dict:
    """
    Open C{count} connections, send one bodyless request on each (C{GET /vanish/<i>}), wait until
    C{held()} is true, then reset them all (SO_LINGER 0). Returns how many connected and whether any
    connection got an answer before the reset (it must not: it is held).
    """
    loop = asyncio.get_running_loop()
    conns = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(count)),
                                 return_exceptions=True)
    ok = [c for c in conns if not isinstance(c, BaseException)]
    for i, (_, writer) in enumerate(ok):
        writer.write("GET /vanish/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: instance={}\r\n\r\n".format(
            first + i, name).encode())
    deadline = loop.time() + timeout
    while not await loop.run_in_executor(None, held):
        if loop.time() > deadline:
            break
        await asyncio.sleep(0.05)
    answered = sum(1 for reader, _ in ok if reader._buffer or reader.at_eof())
    linger = struct.pack("ii", 1, 0)
    for _, writer in ok:
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        writer.transport.abort()
    await asyncio.sleep(0)
    return {"connected": len(ok), "errors": len(conns) - len(ok), "answered": answered}


class ClientsVanishWhileHeld(_FaultCase):
    STARTUP_DELAY = 25  # seconds before the woken app listens: every wave happens inside one wake

    def test_vanishing_clients_in_waves(self):
        raise_nofile()
        instances = Instances(owner=self.owner)
        self.addCleanup(instances.cleanup)
        waves = max(1, VANISH // VANISH_WAVE)
        size = min(VANISH, VANISH_WAVE)
        # no Docker health check: the image's would call the app unhealthy long before it listens
        names = [instances.create(env={"STARTUP_DELAY": str(self.STARTUP_DELAY)}, healthcheck={"test": ["NONE"]})
                 for _ in range(waves)]
        server = self.wakeproxy("--max-held-per-instance", str(size), "--wake-timeout", "90s")
        pid = server.process.pid
        time.sleep(0.3)
        baseline, baseline_unix, baseline_tcp = _fds(pid), _unix_fds(pid), _tcp_fds(pid)
        for wave, name in enumerate(names):
            t0 = time.monotonic()
            peaks = []

            def held() -> bool:
                peaks.append(_tcp_fds(pid))
                return _metric(server, "wakeproxy_held_requests") >= size

            outcome = asyncio.run(_vanishing_wave(server.proxy_port, size, name, wave * size, held, timeout=30))
            reset_at = time.monotonic()
            peak = peaks[-1]
            # at once: the clients' sockets (the engine's pool may hold more while the wakes go on)
            back = _poll("wakeproxy's TCP sockets back to {}".format(baseline_tcp),
                         lambda: _tcp_fds(pid) <= baseline_tcp and time.monotonic() - reset_at, 10, 0.02)
            held_after = _metric(server, "wakeproxy_held_requests")
            ready = can_connect(instances.ports[name])
            print("\n[faults/vanish] wave {}: {} held ({} connect errors, {} answered early) in {:.1f}s; TCP fds {} ->"
                  " baseline {} {:.2f}s after the resets; held now {:g}; instance listening yet: {}; engine"
                  " (unix) sockets {}".format(
                      wave, outcome["connected"], outcome["errors"], outcome["answered"], reset_at - t0, peak,
                      baseline_tcp, back, held_after, ready, _unix_fds(pid)))
            self.assertEqual(outcome, {"connected": size, "errors": 0, "answered": 0})
            self.assertEqual(held_after, 0)
            self.assertFalse(ready, "the wave took longer than the instance's startup delay: nothing is shown")

        # every wake still ends (the instances come up); then nothing of the vanished clients reaches them
        for name in names:
            _poll("{} ready".format(name), lambda: can_connect(instances.ports[name]), 90, 0.2)
            r = requests.get(server.proxy_url + "/", headers=dict(_cookie(name), Connection="close"), timeout=30)
            self.assertEqual(r.status_code, 200, r.text[:300])
        replayed = sum(len(re.findall(r"GET /vanish/", instances.logs(n))) for n in names)
        served = sum(len(re.findall(r"GET / 200", instances.logs(n))) for n in names)
        print("[faults/vanish] {} clients vanished in {} waves of {}; requests of vanished clients the apps"
              " received: {}; the check request after each wake: {} of {} logged by the apps".format(
                  waves * size, waves, size, replayed, served, waves))
        self.assertEqual(replayed, 0)
        self.assertEqual(served, waves)  # the logs are read right: the one real request per app is there
        self.assertEqual(sum(instances.starts(n) for n in names), waves)
        gc.collect()
        took = self.assertFdsBack(server, baseline, timeout=20, engine_slack=ENGINE_POOLS,
                                  baseline_unix=baseline_unix)
        print("[faults/vanish] all fds back to baseline {} ({} unix; now {}, {} unix) {:.1f}s after the last"
              " wake".format(baseline, baseline_unix, _fds(pid), _unix_fds(pid), took))
