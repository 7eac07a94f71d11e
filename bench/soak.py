"""
C{make soak} (issue 12; not in CI): wakeproxy under a long mixed load while its instances sleep and wake all
the time and the engine is restarted, then a table saying whether anything was lost or grew.

- A private dockerd (tests/privatedocker.py: own socket and data root; the machine's engine is never
  touched), C{mock-app:latest} copied into it, C{SOAK_INSTANCES} (50) stopped mock_app containers, ready
  when wakeproxy's probe of C{/status} answers (label C{wakeproxy.health-check}; no Docker HEALTHCHECK).
- One C{twistd wakeproxy} on that engine with C{--idle-timeout} C{SOAK_IDLE} (3s): an instance nobody uses
  for that long is stopped, and the next request wakes it.
- C{SOAK_CLIENTS} (16) client threads for C{SOAK_MINUTES} (30): each picks an instance from the "active"
  third (re-drawn every 8 s, so instances fall idle, sleep and are woken again) and one of: a GET (on a
  fresh connection), a POST of 64 KiB to /echo, a 1 MiB download, a WebSocket handshake with one echoed
  message.
- The engine is restarted (SIGTERM, start again) C{SOAK_ENGINE_RESTARTS} (2) times, evenly spaced. A
  dockerd without live-restore stops its containers when it goes down, so answers other than 200/101 in
  the window from the stop to 15 s after the engine is back are counted as "during an engine restart"
  (held requests get 502/503/504, a download is cut); anywhere else they are unexpected errors.

The table: requests and answers by kind and status, p50/p99, wakes (from wakeproxy's /metrics) against
starts (a line each container writes to a file of its own in a host directory when it starts: the files
survive an engine restart, and a container wakeproxy replaces with a copy, whose logs would go with it),
the containers wakeproxy replaced because a restart left them unable to start (its log), unexpected
errors, wakeproxy's RSS and open fds (by kind) before the load, at 10 %, 50 % and 98 % of it, and once it
has settled after the load. Exit status 1 when an unexpected error happened, when starts do not match the
wakes, or when fds did not come back (TCP sockets, pipes and files to before the load; unix sockets to the
engine to where they were in the first half of the run: the Docker SDK's per-URL pools fill up early and
stay).

    SOAK_MINUTES=3 SOAK_INSTANCES=10 .venv/bin/python -m bench.soak
"""

from __future__ import annotations

import collections
import json
import os
import random
import re
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Optional

import docker

from bench import client, wsclient
from bench.containers import IMAGE, OWNER_KEY, create_mock
from bench.procfs import fd_kinds, rss
from bench.procs import Wakeproxy, raise_nofile, stop_all
from bench.stats import percentile
from tests.privatedocker import PrivateDockerd

__all__ = ["main"]

KINDS = (("get", 60), ("post", 15), ("download", 10), ("websocket", 15))
POST_BYTES = 64 * 1024
DOWNLOAD_BYTES = 1 << 20
ACTIVE_EPOCH = 8.0
RESTART_GRACE = 15.0
#: what each kind answers when all is well
OK = {"get": 200, "post": 200, "download": 200, "websocket": 101}


def _env(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


class Soak:
    def __init__(self, minutes: float, instances: int, clients: int, restarts: int, idle: str):
        self.seconds = minutes * 60
        self.count = instances
        self.clients = clients
        self.restarts = restarts
        self.idle = idle
        self.workdir = tempfile.mkdtemp(prefix="wp-soak-")
        self.engine = PrivateDockerd()
        self.apps: list = []
        self.proxy: Optional[Wakeproxy] = None
        self.active: list[str] = []
        self.results: list[tuple] = []  # (kind, status, seconds, when, error)
        self.windows: list[list[float]] = []  # [engine stopped, engine back + grace]
        self.samples: dict[str, tuple] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # setup

    def setup(self) -> None:
        raise_nofile()
        self.engine.start()
        self.engine.load_image(IMAGE)
        api = docker.APIClient(base_url=self.engine.url, version="auto", timeout=60)
        run = "soak{}".format(os.getpid())
        # readiness by wakeproxy's own probe of /status (README: what image authors should set), without the
        # image's Docker HEALTHCHECK: under this load its 2 s check times out three times in a row now and
        # then, Docker marks a running instance unhealthy, and wakeproxy answers its requests 503 until the
        # next check passes (seen in the first soak; docs/RELIABILITY.md)
        # each start writes a line to /starts/<name>, a host directory (see _starts)
        self.starts_dir = os.path.join(self.workdir, "starts")
        os.makedirs(self.starts_dir)
        command = ["sh", "-c", 'echo start >> "/starts/$INSTANCE"; exec python3 -u /app/app.py']
        self.apps = [create_mock(api, run, run, "{:03d}".format(i), health_label="/status", docker_health=False,
                                 command=command, writable={self.starts_dir: "/starts"})
                     for i in range(self.count)]
        api.close()
        self.proxy = Wakeproxy(self.workdir, "soak", "{}={}".format(OWNER_KEY, run), extra=[
            "--docker-url", self.engine.url, "--idle-timeout", self.idle, "--upstream-idle-timeout", "1s"]).start()
        self.proxy.wait_ready(instances=self.count)
        self.active = [a.name for a in self.apps]

    # load

    def _one(self, kind: str, name: str) -> tuple[int, float, str]:
        port = self.proxy.port
        if kind == "get":
            r = client.try_request(port, "/", name)
            return r.status, r.total, r.error or (_detail(r.body) if r.status != 200 else "")
        if kind == "post":
            t = client.upload(port, POST_BYTES, name)
            wrong = "" if t.status != 200 or t.echoed == POST_BYTES else "app read {} bytes".format(t.echoed)
            return t.status, t.seconds, t.error or wrong
        if kind == "download":
            t = client.download(port, DOWNLOAD_BYTES, name)
            short = "" if t.status != 200 or t.nbytes == DOWNLOAD_BYTES else "{} bytes".format(t.nbytes)
            return (t.status if not (t.error or short) else 0), t.seconds, t.error or short
        h = wsclient.handshake(port, cookie=name)
        return h.status if not h.error else (h.status or 0), h.seconds, h.error or ""

    def _client(self, seed: int) -> None:
        rng = random.Random(seed)
        kinds, weights = zip(*KINDS)
        while not self._stop.is_set():
            kind = rng.choices(kinds, weights)[0]
            name = rng.choice(self.active)
            status, seconds, error = self._one(kind, name)
            with self._lock:
                self.results.append((kind, status, seconds, time.monotonic(), error))

    def _sample(self, label: str) -> None:
        pid = self.proxy.pid
        self.samples[label] = (rss(pid) or 0, fd_kinds(pid))

    def _metrics(self) -> dict:
        with urllib.request.urlopen("http://127.0.0.1:{}/metrics".format(self.proxy.api_port), timeout=10) as r:
            text = r.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                values[key] = float(value)
        return values

    def run(self) -> None:
        began = time.monotonic()
        end = began + self.seconds
        restarts = [began + self.seconds * (i + 1) / (self.restarts + 1) for i in range(self.restarts)]
        self._sample("before the load")
        threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(self.clients)]
        for t in threads:
            t.start()
        rng = random.Random(0)
        next_epoch = began
        samples = [(began + self.seconds * 0.1, "start (10 %)"), (began + self.seconds / 2, "middle"),
                   (began + self.seconds * 0.98, "end (98 %)")]
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_epoch:
                self.active = rng.sample([a.name for a in self.apps], max(1, self.count // 3))
                next_epoch = now + ACTIVE_EPOCH
            if samples and now >= samples[0][0]:
                self._sample(samples.pop(0)[1])
            if restarts and now >= restarts[0]:
                restarts.pop(0)
                window = [time.monotonic(), 0.0]
                self.windows.append(window)
                print("soak: restarting the engine at {:.0f}s".format(now - began), flush=True)
                self.engine.restart()
                window[1] = time.monotonic() + RESTART_GRACE
                print("soak: engine back after {:.1f}s".format(time.monotonic() - window[0]), flush=True)
            time.sleep(0.2)
        self._stop.set()
        for t in threads:
            t.join(120)
        self._settle()
        self._sample("after the load")

    def _settle(self, timeout: float = 60.0) -> None:
        """Wait until wakeproxy holds nothing and has nothing in flight (its /metrics), then for its fds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self._metrics()
            if not m.get("wakeproxy_held_requests") and not any(
                    v for k, v in m.items() if k.startswith("wakeproxy_inflight_requests")):
                break
            time.sleep(0.2)
        while time.monotonic() < deadline and not self._fds_back():
            time.sleep(0.2)

    def _fds_back(self) -> bool:
        """
        No more TCP sockets, pipes or files than before the load, and no more unix sockets (to the engine)
        than in the first half of the run: the Docker SDK keeps one keep-alive pool per request URL (so per
        container), at most C{docker.constants.DEFAULT_NUM_POOLS} (25) of them, which fill up early in the
        load and stay; growth in the second half would be a leak.
        """
        before, now = self.samples["before the load"][1], fd_kinds(self.proxy.pid)
        early = max((self.samples.get(label, (0, {}))[1].get("unix", 0) for label in ("start (10 %)", "middle")),
                    default=0)
        return all(now.get(k, 0) <= (max(before.get(k, 0), early) if k == "unix" else before.get(k, 0))
                   for k in set(now) | set(before))

    # report

    def _in_window(self, when: float) -> bool:
        return any(w[0] <= when <= (w[1] or float("inf")) for w in self.windows)

    def _starts(self) -> int:
        """
        Starts, counted by the containers themselves (a line per start in a host file): the engine's own logs
        of a container are gone once wakeproxy has replaced it with a copy (README, "Waking").
        """
        total = 0
        for name in os.listdir(self.starts_dir):
            with open(os.path.join(self.starts_dir, name)) as f:
                total += sum(1 for _ in f)
        return total

    def _replacements(self) -> tuple[int, int]:
        """(containers wakeproxy replaced with a copy, originals it could not remove), from its log."""
        text = self.proxy.log_path.read_text(errors="replace")
        return text.count("with a copy, "), text.count("could not remove the original")

    def report(self) -> int:
        by_kind: dict = collections.defaultdict(collections.Counter)
        latencies: dict = collections.defaultdict(list)
        unexpected: collections.Counter = collections.Counter()
        during = collections.Counter()
        for kind, status, seconds, when, error in self.results:
            by_kind[kind][status] += 1
            if status == OK[kind] and not error:
                latencies[kind].append(seconds)
            elif self._in_window(when):
                during[status] += 1
            else:
                unexpected["{} {}: {}".format(kind, status, (error or "")[:120])] += 1
        metrics = self._metrics()
        wakes = {o: int(metrics.get('wakeproxy_wakes_total{{outcome="{}"}}'.format(o), 0))
                 for o in ("woken", "failed", "timeout", "rate_limited")}
        starts = self._starts()
        lines = ["| kind | requests | answers by status | p50 ms | p99 ms |", "|---|---|---|---|---|"]
        everything = []
        for kind, _ in KINDS:
            counts = by_kind.get(kind, collections.Counter())
            lat = latencies.get(kind, [])
            everything += lat
            lines.append("| {} | {} | {} | {} | {} |".format(
                kind, sum(counts.values()), ", ".join("{}: {}".format(s if s else "no answer", n)
                                                     for s, n in sorted(counts.items())),
                _ms(percentile(lat, 50)), _ms(percentile(lat, 99))))
        lines.append("| all | {} | | {} | {} |".format(len(self.results), _ms(percentile(everything, 50)),
                                                       _ms(percentile(everything, 99))))
        print("\n".join(lines))
        print()
        failed_wakes = wakes["failed"] + wakes["timeout"]
        starts_ok = wakes["woken"] <= starts <= wakes["woken"] + failed_wakes if self.windows \
            else starts == wakes["woken"] + failed_wakes
        print("| measure | value |\n|---|---|")
        print("| instances, clients, minutes | {}, {}, {:g} |".format(self.count, self.clients, self.seconds / 60))
        print("| engine restarts | {} ({}) |".format(len(self.windows), ", ".join(
            "{:.1f}s down".format(w[1] - RESTART_GRACE - w[0]) for w in self.windows) or "none"))
        print("| wakes (woken / failed / timeout / rate-limited) | {woken} / {failed} / {timeout} / {rate_limited} |"
              .format(**wakes))
        print("| starts (containers' own start lines) | {} ({}) |".format(
            starts, "equal to the wakes" if starts == wakes["woken"] + failed_wakes else
            "between woken and all wakes begun" if starts_ok else "MISMATCH"))
        replaced, left = self._replacements()
        print("| containers replaced with a copy (a restart left them unable to start) | {}{} |".format(
            replaced, " ({} of the originals left, dead: the engine could not remove their root filesystem)".format(left) if left else ""))
        print("| answers during an engine restart (not 200/101) | {} |".format(
            ", ".join("{}: {}".format(s if s else "no answer", n) for s, n in sorted(during.items())) or "0"))
        print("| unexpected errors | {} |".format(sum(unexpected.values())))
        for label, (size, fds) in self.samples.items():
            print("| wakeproxy {} | RSS {:.1f} MiB, {} fds ({}) |".format(
                label, size / 1048576, sum(fds.values()), ", ".join("{} {}".format(k, n) for k, n in sorted(fds.items()))))
        fds_back = self._fds_back()
        print("| fds back to before the load (unix sockets: to the first half's) | {} |".format(
            "yes" if fds_back else "NO"))
        for what, n in unexpected.most_common(10):
            print("unexpected: {} (x{})".format(what, n))
        for line in self.proxy.problems()[:10]:
            print("wakeproxy log: {}".format(line[:200]))
        return 0 if not unexpected and starts_ok and fds_back else 1

    def cleanup(self) -> None:
        stop_all()
        self.engine.remove()


def _detail(body: bytes) -> str:
    """The C{detail} of a problem+json answer, without instance names (so that answers can be counted)."""
    try:
        detail = json.loads(body)["detail"]
    except (ValueError, KeyError, TypeError):
        return body[:80].decode("latin-1")
    return re.sub(r"wpbench-\S+", "<instance>", detail)


def _ms(seconds: Optional[float]) -> str:
    return "-" if seconds is None else "{:.1f}".format(seconds * 1000)


def main() -> int:
    soak = Soak(_env("SOAK_MINUTES", 30), int(_env("SOAK_INSTANCES", 50)), int(_env("SOAK_CLIENTS", 16)),
                int(_env("SOAK_ENGINE_RESTARTS", 2)), os.environ.get("SOAK_IDLE") or "3s")
    try:
        soak.setup()
        print("soak: {} instances, {:g} minutes, wakeproxy pid {}, engine {}".format(
            soak.count, soak.seconds / 60, soak.proxy.pid, soak.engine.url), flush=True)
        soak.run()
        return soak.report()
    finally:
        soak.cleanup()


if __name__ == "__main__":
    sys.exit(main())
