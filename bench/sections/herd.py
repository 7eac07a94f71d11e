"""
herd: N concurrent requests (1,000; smoke 100) for one stopped instance (direct mode, HTTP probe on
C{/status}). Counts the container's start events on Docker's event stream (must be exactly 1), the
status codes, latency p50/p99, and wakeproxy's RSS before and at peak (sampled every 10 ms) -> bytes per
held request. Baselines from the same run: one lone wake of the same instance, and the same herd sent to
the instance once it is running (nothing held), through a second, fresh wakeproxy.
"""

from __future__ import annotations

import threading
import time

from .. import client
from ..context import SETTLE, Context
from ..procfs import RssSampler
from ..report import Section
from ..stats import summary

TARGET_BYTES_PER_HELD = 10 * 1024


class StartEvents:
    """Counts C{start} events of one container from Docker's event stream, in a thread."""

    def __init__(self, api, container_id: str):
        self.count = 0
        self._stream = api.events(decode=True, filters={"type": "container", "container": container_id,
                                                        "event": "start"})
        self._thread = threading.Thread(target=self._run, name="docker-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._stream:
                if event.get("Action", event.get("status")) == "start":
                    self.count += 1
        except Exception:
            pass  # closed

    def close(self) -> int:
        self._stream.close()
        self._thread.join(2.0)
        return self.count


def run(ctx: Context, section: Section) -> None:
    n = 100 if ctx.smoke else 1000
    app = ctx.mock("app", health_label="/status")
    wp = ctx.wakeproxy("direct", instances=1)

    solo = client.try_request(wp.port, "/status", cookie=app.name, timeout=120)
    if solo.status != 200:
        ctx.problem("herd: lone wake answered {} {}".format(solo.status, solo.body[:300]))
    app.ensure_stopped()
    time.sleep(SETTLE)

    events = StartEvents(ctx.api, app.id)
    time.sleep(0.2)  # the event subscription is in place before the herd
    with RssSampler(wp.pid) as cold_rss:
        cold = client.herd(wp.port, n, "/status", cookie=app.name, timeout=120)
    time.sleep(0.5)
    starts = events.close()
    ctx.log("cold herd of {}: {} starts, statuses {}, wall {:.2f}s".format(n, starts, cold.statuses, cold.wall_seconds))

    # the warm baseline in a fresh wakeproxy warmed up the same way (one request), so that memory the
    # cold herd left in the first one's allocator does not hide the warm herd's own growth
    ctx.stop_wakeproxy(wp)
    wp2 = ctx.wakeproxy("direct-warm", instances=1)
    prime = client.try_request(wp2.port, "/status", cookie=app.name, timeout=30)
    if prime.status != 200:
        ctx.problem("herd: priming the second wakeproxy answered {} {}".format(prime.status, prime.error))
    time.sleep(SETTLE)
    with RssSampler(wp2.pid) as warm_rss:
        warm = client.herd(wp2.port, n, "/status", cookie=app.name, timeout=120)
    ctx.log("warm herd of {}: statuses {}".format(n, warm.statuses))

    for name, res in (("cold", cold), ("warm", warm)):
        others = {k: v for k, v in res.statuses.items() if k != 200}
        if others:
            ctx.problem("herd {} of {}: not all 200: {}".format(name, n, res.statuses))
    if starts != 1:
        ctx.problem("herd: the container was started {} times for one herd".format(starts))

    c, w = summary(cold.latencies), summary(warm.latencies)
    ms = lambda v: None if v is None else v * 1000  # noqa: E731
    section.raw.update({
        "n": n, "starts": starts, "solo_status": solo.status, "solo_ttfb_ms": solo.ttfb * 1000,
        "solo_total_ms": solo.total * 1000, "solo_server_timing": solo.server_timing,
        "cold": {"statuses": cold.statuses, "latency_ms": {k: ms(v) if k != "n" else v for k, v in c.items()},
                 "connect_s": cold.connect_seconds, "wall_s": cold.wall_seconds,
                 "rss_before": cold_rss.before, "rss_peak": cold_rss.peak, "rss_samples": cold_rss.samples},
        "warm": {"statuses": warm.statuses, "latency_ms": {k: ms(v) if k != "n" else v for k, v in w.items()},
                 "connect_s": warm.connect_seconds, "wall_s": warm.wall_seconds,
                 "rss_before": warm_rss.before, "rss_peak": warm_rss.peak, "rss_samples": warm_rss.samples},
    })
    section.add("container starts for the herd", starts, "count", {"expected": 1}, target="== 1", ok=starts == 1)
    section.add("200 responses", cold.statuses.get(200, 0), "count", {"requests": n, "warm herd": warm.statuses.get(200, 0)},
                better="higher")
    section.add("latency p50 (n={})".format(n), ms(c["p50"]), "ms",
                {"lone wake": solo.total * 1000, "warm herd": ms(w["p50"])})
    section.add("latency p99 (n={})".format(n), ms(c["p99"]), "ms",
                {"lone wake": solo.total * 1000, "warm herd": ms(w["p99"])})
    section.add("wakeproxy RSS at peak", cold_rss.peak / 1e6, "MB", {"RSS before": cold_rss.before / 1e6,
                                                                     "warm herd peak": warm_rss.peak / 1e6})
    per_held = cold_rss.growth / n
    section.add("RSS growth per held request", per_held / 1024, "KB", {"warm herd, per request": warm_rss.growth / n / 1024},
                target="≤ {:.0f} KB".format(TARGET_BYTES_PER_HELD / 1024), ok=per_held <= TARGET_BYTES_PER_HELD)
