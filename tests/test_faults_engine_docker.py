# -*- test-case-name: tests.test_faults_engine_docker -*-
"""
Faults (issue 12), part two: bursts, vanishing clients, the engine restarted, wakeproxy killed. As in
L{tests.test_faults_docker}, each test asserts that every request gets a documented status within its
deadline, that wakeproxy's open fds return to their baseline and that no container is left behind; it
prints its figures (C{pytest -s}).

- Item 10: a burst of concurrent requests to one stopped instance, default listeners (listen backlog 4096,
  L{wakeproxy.listeners}): one start, every answer 200.
- Item 5: clients that reset their connections while held for a slow wake, in waves (bodyless requests,
  and requests whose body is not read while held): wakeproxy's fds are back at once (not when the
  instance is ready) and no request of a vanished client reaches the app.
- Item 2: the engine (a private dockerd) restarted under warm load, with C{--live-restore} (every request
  200) and without (the instance dies with the engine: documented statuses, then a new wake).
- Item 9: wakeproxy SIGKILLed and started again while instances run.
- Item 2 again: containers a restart pinned (a start in flight when dockerd stopped leaves a containerd task
  Docker 20.10 cannot delete, moby/moby#44399): wakeproxy wakes them by putting a copy in their place.

Sizes: C{FAULTS_BURST} (default 10000); C{FAULTS_VANISH} (default 10000: bodyless waves of 2500, and two
waves of up to 1000 with bodies). The whole file takes about 4 minutes on a loaded 2-core machine.

Markers: C{docker} and C{faults}.
"""

import asyncio
import gc
import os
import re
import threading
import time

import docker
import pytest
import requests

from bench.client import herd
from bench.procfs import RssSampler
from bench.procs import raise_nofile
from tests.dockerapp import Instances
from tests.faultload import (ENGINE_POOLS, WarmLoad, metric, non_unix_fds, percentile, poll, runs,
                              vanishing_wave)
from tests.privatedocker import PrivateDockerd
from tests.support import MOCK_IMAGE, can_connect, free_port, unique_name
from tests.test_faults_docker import _client_conns, _cookie, _FaultCase, _fds, _unix_fds
from wakeproxy.runtime.engineerrors import pinned_by_stale_task

pytestmark = [pytest.mark.docker, pytest.mark.faults]

BURST = int(os.environ.get("FAULTS_BURST", "10000"))
VANISH = int(os.environ.get("FAULTS_VANISH", "10000"))
VANISH_WAVE = 2500
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
                  BURST, result.statuses, result.connect_seconds, wall, percentile(latencies, 0.5),
                  percentile(latencies, 0.99), max(latencies or [0]), memory.growth / 2 ** 20,
                  memory.growth / 1000 / BURST, runs(instances, name, expected=((1, 0),))[0][0]))
        self.assertEqual(result.statuses, {200: BURST})
        self.assertEqual(runs(instances, name, expected=((1, 0),)), ((1, 0),))
        self.assertEqual(_client_conns(server.proxy_port), 0)
        took = self.assertFdsBack(server, baseline, timeout=30, engine_slack=ENGINE_POOLS,
                                  baseline_unix=baseline_unix)
        print("[faults/burst] fds back to baseline {} ({} unix; now {}, {} unix) {:.1f}s after the last"
              " answer".format(baseline, baseline_unix, _fds(pid), _unix_fds(pid), took))


# 5. clients that vanish while held


class ClientsVanishWhileHeld(_FaultCase):
    STARTUP_DELAY = 25  # seconds before the woken app listens: every wave happens inside one wake

    def test_vanishing_clients_in_waves(self):
        """Bodyless requests: their connections are read while held, so a reset is seen at once."""
        self.vanish(max(1, VANISH // VANISH_WAVE), min(VANISH, VANISH_WAVE), body=False, at_once=3)

    def test_vanishing_clients_with_bodies(self):
        """
        Requests whose body is not read while held: the relay's once-a-second sweep peeks at their
        connections, so a reset is seen within about a second.
        """
        self.vanish(2, min(VANISH, 1000), body=True, at_once=4)

    def vanish(self, waves: int, size: int, body: bool, at_once: float) -> None:
        """
        C{waves} waves of C{size} clients each, each wave on its own instance that takes C{STARTUP_DELAY} to
        listen; the clients' sockets must be closed within C{at_once} seconds of their resets (a bound for
        a loaded 2-core machine: measured 0.03-0.5 s for bodyless waves of 2,500, ~1 s with bodies) and
        before the instance listens.
        """
        raise_nofile()
        instances = Instances(owner=self.owner)
        self.addCleanup(instances.cleanup)
        kind = "POST (body unread)" if body else "GET"
        # no Docker health check: the image's would call the app unhealthy long before it listens
        names = [instances.create(env={"STARTUP_DELAY": str(self.STARTUP_DELAY)}, healthcheck={"test": ["NONE"]})
                 for _ in range(waves)]
        server = self.wakeproxy("--max-held-per-instance", str(size), "--wake-timeout", "90s")
        pid = server.process.pid
        time.sleep(0.3)
        baseline, baseline_unix, baseline_other = _fds(pid), _unix_fds(pid), non_unix_fds(pid)
        for wave, name in enumerate(names):
            t0 = time.monotonic()
            peaks = []

            def held() -> bool:
                peaks.append(non_unix_fds(pid))
                return metric(server, "wakeproxy_held_requests") >= size

            outcome = asyncio.run(vanishing_wave(server.proxy_port, size, name, wave * size, held, timeout=30,
                                                  body=body))
            reset_at = time.monotonic()
            peak = peaks[-1]
            # at once: the clients' sockets (the engine's pool may hold more while the wakes go on)
            back = poll("wakeproxy's fds other than unix sockets back to {}".format(baseline_other),
                         lambda: non_unix_fds(pid) <= baseline_other and time.monotonic() - reset_at, 10, 0.02)
            held_after = metric(server, "wakeproxy_held_requests")
            ready = can_connect(instances.ports[name])
            print("\n[faults/vanish] {} wave {}: {} held ({} connect errors, {} answered early) in {:.1f}s; fds other than engine"
                  " sockets {} -> baseline {} {:.2f}s after the resets; held now {:g}; instance listening yet: {}; engine"
                  " (unix) sockets {}".format(
                      kind, wave, outcome["connected"], outcome["errors"], outcome["answered"], reset_at - t0, peak,
                      baseline_other, back, held_after, ready, _unix_fds(pid)))
            self.assertEqual(outcome, {"connected": size, "errors": 0, "answered": 0})
            self.assertEqual(held_after, 0)
            self.assertLess(back, at_once)
            self.assertFalse(ready, "the wave took longer than the instance's startup delay: nothing is shown")

        # every wake still ends (the instances come up); then nothing of the vanished clients reaches them
        for name in names:
            poll("{} ready".format(name), lambda: can_connect(instances.ports[name]), 90, 0.2)
            r = requests.get(server.proxy_url + "/", headers=dict(_cookie(name), Connection="close"), timeout=30)
            self.assertEqual(r.status_code, 200, r.text[:300])
        replayed = sum(len(re.findall(r"(GET|POST) /vanish/", instances.logs(n))) for n in names)
        # the app logs a request after answering it: wait for the check requests' lines
        served = poll("the apps logged the check requests", lambda: sum(
            len(re.findall(r"GET / 200", instances.logs(n))) for n in names) >= waves and sum(
            len(re.findall(r"GET / 200", instances.logs(n))) for n in names), 10, 0.1)
        print("[faults/vanish] {} {} clients vanished in {} waves of {}; requests of vanished clients the apps"
              " received: {}; the check request after each wake: {} of {} logged by the apps".format(
                  waves * size, kind, waves, size, replayed, served, waves))
        self.assertEqual(replayed, 0)
        self.assertEqual(served, waves)  # the logs are read right: the one real request per app is there
        self.assertEqual(runs(instances, *names, expected=((1, 0),) * waves), ((1, 0),) * waves)
        gc.collect()
        took = self.assertFdsBack(server, baseline, timeout=20, engine_slack=ENGINE_POOLS,
                                  baseline_unix=baseline_unix)
        print("[faults/vanish] all fds back to baseline {} ({} unix; now {}, {} unix) {:.1f}s after the last"
              " wake".format(baseline, baseline_unix, _fds(pid), _unix_fds(pid), took))


# 2. the engine restarted under warm load


class EngineRestartedUnderLoad(_FaultCase):
    def restart_under_load(self, *flags: str) -> tuple:
        """
        A private engine (dockerd C{flags}) restarted while four clients keep requesting a running instance;
        returns what the checks need. Every request must end within its 10 s deadline.
        """
        engine = PrivateDockerd(*flags)
        self.addCleanup(engine.remove)
        engine.start()
        engine.load_image(MOCK_IMAGE)
        self.client = client = docker.APIClient(base_url=engine.url, version="auto", timeout=30)
        self.addCleanup(client.close)
        self.name, port = unique_name(), free_port()
        self.create(self.name, port)
        self.server = server = self.wakeproxy("--docker-url", engine.url)
        pid = server.process.pid
        r = requests.get(server.proxy_url + "/", headers=dict(_cookie(self.name), Connection="close"), timeout=30)
        self.assertEqual((r.status_code, r.headers.get("x-wakeproxy-woke")), (200, "1"), r.text[:300])
        time.sleep(1.5)  # the wake's pooled upstream connection closes (--upstream-idle-timeout 1s)
        self.baseline = _fds(pid), _unix_fds(pid)

        load = WarmLoad(server, self.name)
        poll("warm load under way", lambda: len(load.results) >= 20, 10)
        down_at = time.monotonic()
        engine.restart()
        up_at = time.monotonic()
        poll("answers after the engine is back", lambda: sum(
            1 for r in load.results if r[0] > up_at and r[2] == 200) >= 100, 30)
        results = load.stop()
        during = [r for r in results if r[0] >= down_at and r[1] <= up_at]
        statuses: dict = {}
        for _, _, outcome, _ in results:
            statuses[outcome] = statuses.get(outcome, 0) + 1
        slowest = max(ended - started for started, ended, _, _ in results)
        ends = sorted(ended for _, ended, _, _ in results)
        gap = max(b - a for a, b in zip(ends, ends[1:]))
        print("\n[faults/engine-restart] dockerd {} restarted in {:.1f}s under 4 warm clients: {} requests ({} wholly"
              " within the restart), answers {}, slowest {:.3f}s, longest gap between answers {:.3f}s; woken"
              " again: {}; instance {}".format(
                  " ".join(flags) or "(no --live-restore)", up_at - down_at, len(results), len(during), statuses,
                  slowest, gap, sum(1 for r in results if r[3] == "1"),
                  client.inspect_container(self.name)["State"]["Status"]))
        self.assertLess(slowest, 10.5)
        return results, during, statuses

    def create(self, name: str, port: int) -> None:
        key, _, value = self.owner.partition("=")
        self.client.create_container(
            MOCK_IMAGE, name=name, labels={"wakeproxy.port": str(port), key: value},
            environment={"PORT": str(port), "HOST": "127.0.0.1", "IDLE": "0", "INSTANCE": name},
            host_config=self.client.create_host_config(network_mode="host"))

    def resynced(self) -> None:
        """
        The event stream resynced: a container created after the restart is seen (/healthz counts what the
        runtime knows) and its wake works; fds back to baseline, nothing left behind.
        """
        server, client = self.server, self.client
        other = unique_name()
        self.create(other, free_port())
        t0 = time.monotonic()
        poll("wakeproxy sees the new container", lambda: requests.get(
            server.api_url + "/healthz", timeout=5).json().get("instances") == 2, 10)
        seen = time.monotonic() - t0
        r = requests.get(server.proxy_url + "/", headers=dict(_cookie(other), Connection="close"), timeout=30)
        print("[faults/engine-restart] a container created after the restart seen in {:.2f}s; its wake: {} in"
              " {:.2f}s, X-Wakeproxy-Woke {}".format(seen, r.status_code, time.monotonic() - t0 - seen,
                                                     r.headers.get("x-wakeproxy-woke")))
        self.assertEqual((r.status_code, r.headers.get("x-wakeproxy-woke")), (200, "1"), r.text[:300])
        self.assertEqual(r.json()["instance"], other)
        gc.collect()
        self.assertEqual(_client_conns(server.proxy_port), 0)
        pid = server.process.pid
        took = self.assertFdsBack(server, self.baseline[0], timeout=20, engine_slack=ENGINE_POOLS,
                                  baseline_unix=self.baseline[1])
        print("[faults/engine-restart] fds back to baseline {} ({} unix; now {}, {} unix) in {:.1f}s".format(
            self.baseline[0], self.baseline[1], _fds(pid), _unix_fds(pid), took))
        self.assertEqual(sorted(c["Names"][0] for c in client.containers(all=True)),
                         sorted(["/" + self.name, "/" + other]))

    def test_live_restore(self):
        """
        With C{--live-restore} the instance keeps running through the engine's restart: every request is
        answered 200 (during the restart too), none waits for a wake.
        """
        results, during, statuses = self.restart_under_load("--live-restore")
        self.assertEqual(statuses, {200: len(results)})
        self.assertGreater(len(during), 0)
        self.assertEqual([r for r in results if r[3] == "1"], [])  # never woken: it kept running
        self.assertEqual(self.client.inspect_container(self.name)["State"]["Status"], "running")
        self.resynced()

    def test_without_live_restore(self):
        """
        Without C{--live-restore} the engine stops the instance when it stops (mock_app exits 0 on SIGTERM):
        requests meanwhile get a documented status (README "Waking") -- 200, 502 (connection refused by the
        dying app, or the instance exited while waking), 503/504 (the engine is away) -- and once the
        engine is back the instance is woken again and answers 200.
        """
        results, during, statuses = self.restart_under_load()
        self.assertLessEqual(set(statuses), {200, 502, 503, 504})
        self.assertEqual([r[2] for r in results[-20:]], [200] * 20)
        self.assertGreater(sum(1 for r in results if r[3] == "1"), 0)  # woken again after the restart
        self.resynced()


class PinnedByEngineRestart(_FaultCase):
    COUNT = 12
    create = EngineRestartedUnderLoad.create

    def pin(self, engine: PrivateDockerd, names: list) -> list:
        """
        Restart the engine while every container is started and stopped in a loop (by the SDK, not
        wakeproxy); return the names of those the engine can no longer start (a third to a half of them
        per restart here). At most three restarts.
        """
        for attempt in range(3):
            stop = threading.Event()

            def churn(name):
                c = docker.APIClient(base_url=engine.url, version="auto", timeout=30)
                while not stop.is_set():
                    try:
                        c.start(name)
                        c.stop(name, timeout=0)
                    except Exception:
                        time.sleep(0.05)
                c.close()

            threads = [threading.Thread(target=churn, args=(n,), daemon=True) for n in names]
            for t in threads:
                t.start()
            time.sleep(1.5)
            engine.restart()
            stop.set()
            for t in threads:
                t.join(40)
            pinned = []
            for name in names:
                try:
                    if self.client.inspect_container(name)["State"]["Running"]:
                        self.client.stop(name, timeout=0)
                        continue
                    self.client.start(name)
                    self.client.stop(name, timeout=0)
                except docker.errors.APIError as e:
                    if not pinned_by_stale_task(e):
                        raise
                    pinned.append(name)
            if pinned:
                return pinned
        self.skipTest("three engine restarts pinned no container: the engine's fault did not happen")

    def test_pinned_containers_are_replaced(self):
        """
        Every container the restart pinned answers 200 through wakeproxy (one wake), as a copy under the
        same name (unless the engine can start it again by then); the original is gone; stopping and
        waking a copy works as usual.
        """
        engine = PrivateDockerd()
        self.addCleanup(engine.remove)
        engine.start()
        engine.load_image(MOCK_IMAGE)
        self.client = docker.APIClient(base_url=engine.url, version="auto", timeout=30)
        self.addCleanup(self.client.close)
        names = [unique_name() for _ in range(self.COUNT)]
        for name in names:
            self.create(name, free_port())
        ids = {name: self.client.inspect_container(name)["Id"] for name in names}
        t0 = time.monotonic()
        pinned = self.pin(engine, names)
        pinned_in = time.monotonic() - t0
        server = self.wakeproxy("--docker-url", engine.url)
        answers = []
        copies = []
        for name in pinned:
            t0 = time.monotonic()
            r = requests.get(server.proxy_url + "/", headers=dict(_cookie(name), Connection="close"), timeout=30)
            answers.append((r.status_code, r.headers.get("x-wakeproxy-woke"), round(time.monotonic() - t0, 2)))
            self.assertEqual((r.status_code, r.headers.get("x-wakeproxy-woke")), (200, "1"), r.text[:300])
            self.assertEqual(r.json()["instance"], name)
            if self.client.inspect_container(name)["Id"] != ids[name]:
                copies.append(name)
        print("\n[faults/pinned] {} of {} containers pinned by engine restarts ({:.1f}s), {} replaced by a copy; "
              "through wakeproxy (status, woke, seconds): {}".format(len(pinned), len(names), pinned_in, len(copies),
                                                                   answers))
        # A container found pinned may start again by the time wakeproxy wakes it (the engine cleaned its
        # stale task up meanwhile; seen in CI): it is then started as it is, and nothing replaces it.
        self.assertTrue(copies, "no pinned container was replaced")
        log = [line for line in server.log().splitlines() if "copy" in line or "original" in line]
        print("\n".join(log))
        # the originals are gone, or dead when the engine could not remove their root filesystem (the stale
        # task's process still holds it): logged, left for a human; nothing else is left
        left = {c["Names"][0].lstrip("/"): c["State"] for c in self.client.containers(all=True)}
        originals = {n: state for n, state in left.items() if n not in names}
        print("[faults/pinned] originals left: {}".format(originals or "none"))
        self.assertEqual(sorted(set(left) - set(originals)), sorted(names))
        self.assertEqual({n.rpartition("-replaced-")[0] for n in originals} - set(copies), set())
        # "removing" too: the engine's list is a snapshot its failed removal wrote before clearing the
        # removal mark (moby's cleanupContainer checkpoints SetDead while RemovalInProgress is still set)
        self.assertEqual(set(originals.values()) - {"dead", "removing"}, set())
        self.assertEqual(len([line for line in log if "could not remove the original" in line]), len(originals))
        self.assertEqual(len([line for line in log if "and started it" in line]), len(copies), "\n".join(log))
        replaced = [line for line in server.log().splitlines() if "replaced" in line and "with a copy" in line]
        self.assertEqual(len(replaced), len(copies), "\n".join(replaced))
        again = copies[0]
        self.client.stop(again, timeout=0)
        poll("wakeproxy sees the copy stopped", lambda: requests.get(
            server.proxy_url + "/", headers=dict(_cookie(again), Connection="close"),
            timeout=30).headers.get("x-wakeproxy-woke") == "1", 10)


# 9. wakeproxy SIGKILLed and started again while instances run


class WakeproxyKilled(_FaultCase):
    IDLE = 6  # seconds: instance A's idle timeout (label)

    def test_sigkill_and_restart(self):
        """
        A (idle timeout 6 s) and B (the default 15 min) run, woken through a first wakeproxy; C sleeps. 4 s
        after A's last request the first wakeproxy is SIGKILLed and a second one started: it finds A and B
        running (B is answered without a wake), stops nothing wrongly, and stops A only once a fresh idle
        clock ran out -- at least 6 s after it started, not 2 s (the old clock); C still wakes.
        """
        instances = Instances(owner=self.owner)
        self.addCleanup(instances.cleanup)
        a = instances.create(labels={"wakeproxy.idle-timeout": "{}s".format(self.IDLE)})
        b, c = instances.create(), instances.create()
        first = self.wakeproxy()
        for name in (a, b):
            r = requests.get(first.proxy_url + "/", headers=dict(_cookie(name), Connection="close"), timeout=30)
            self.assertEqual((r.status_code, r.headers.get("x-wakeproxy-woke")), (200, "1"), r.text[:300])
        last_a = time.monotonic()
        time.sleep(self.IDLE - 2)
        first.process.kill()
        first.process.wait(10)
        self.assertEqual((instances.state(a), instances.state(b), instances.state(c)), ("running", "running", "exited")
                         if instances.state(c) == "exited" else ("running", "running", "created"))

        started_at = time.monotonic()
        second = self.wakeproxy()
        pid = second.process.pid
        ready_in = time.monotonic() - started_at
        baseline, baseline_unix = _fds(pid), _unix_fds(pid)
        # a running instance found at start-up is checked once for readiness before its first request (README,
        # "Scale to zero"): held for that check, not started again
        r = requests.get(second.proxy_url + "/", headers=dict(_cookie(b), Connection="close"), timeout=30)
        self.assertEqual(r.status_code, 200, r.text[:300])
        first_b = (r.headers.get("x-wakeproxy-woke"), r.headers.get("server-timing"))
        r = requests.get(second.proxy_url + "/", headers=dict(_cookie(b), Connection="close"), timeout=30)
        self.assertEqual((r.status_code, r.headers.get("x-wakeproxy-woke")), (200, None), r.text[:300])
        stopped_after = poll("A stopped by the second wakeproxy",
                              lambda: instances.state(a) == "exited" and time.monotonic() - started_at, 30, 0.05)
        print("\n[faults/wakeproxy-kill] SIGKILL {:.1f}s after A's last request; the second wakeproxy ready in"
              " {:.2f}s; A (idle {}s) stopped {:.1f}s after it started ({:.1f}s after its last request through"
              " the first); B's first request: X-Wakeproxy-Woke {}, Server-Timing {}; states now A {} B {}".format(
                  started_at - last_a, ready_in, self.IDLE, stopped_after, time.monotonic() - last_a,
                  first_b[0], first_b[1], instances.state(a), instances.state(b)))
        self.assertGreaterEqual(stopped_after, self.IDLE)
        self.assertEqual(instances.state(b), "running")
        # (started, stopped): A once each, B started once and never stopped, C never started
        self.assertEqual(runs(instances, a, b, c, expected=((1, 1), (1, 0), (0, 0))), ((1, 1), (1, 0), (0, 0)))

        for name in (c, a):  # the next wakes work
            r = requests.get(second.proxy_url + "/", headers=dict(_cookie(name), Connection="close"), timeout=30)
            self.assertEqual((r.status_code, r.headers.get("x-wakeproxy-woke")), (200, "1"), r.text[:300])
        self.assertEqual(runs(instances, a, b, c, expected=((2, 1), (1, 0), (1, 0))), ((2, 1), (1, 0), (1, 0)))
        self.assertEqual(_client_conns(second.proxy_port), 0)
        took = self.assertFdsBack(second, baseline, timeout=20, engine_slack=ENGINE_POOLS,
                                  baseline_unix=baseline_unix)
        print("[faults/wakeproxy-kill] fds back to baseline {} in {:.1f}s; starts A 2, B 1, C 1".format(baseline, took))
