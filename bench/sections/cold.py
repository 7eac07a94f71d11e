"""
cold: waking a stopped mock_app, per readiness mode, N times each:

- C{docker-health}: router mode (C{--upstream} = the container's own port, no health label): the wake
  completes only when Docker reports the image's HEALTHCHECK healthy;
- C{http}: direct mode, label C{wakeproxy.health-check=/status} (wakeproxy's HTTP probe);
- C{tcp}: direct mode, no health label and the image's HEALTHCHECK disabled (wakeproxy's TCP probe).

A wake run: stop the container, let wakeproxy see it, then time one request (send -> first byte) through
wakeproxy. A baseline run (alternating with the wake runs, same container): stop it, then time docker
start (SDK) -> the first 200 from C{/status} with an external probe every 1 ms ("app ready"); in
docker-health mode also -> Docker reports healthy. Overhead = wake p50 - app-ready p50.
"""

from __future__ import annotations

import time

from .. import client
from ..context import SETTLE, Context
from ..report import Section
from ..stats import percentile, summary

TARGET_OVERHEAD_MS = 20.0

MODES = (
    # name, router mode?, health label, Docker HEALTHCHECK kept?
    ("docker-health", True, None, True),
    ("http", False, "/status", True),
    ("tcp", False, None, False),
)


def wake_once(ctx: Context, app, port: int) -> dict:
    """Stop C{app}, then one timed request through wakeproxy on C{port}."""
    app.ensure_stopped()
    time.sleep(SETTLE)
    r = client.try_request(port, "/status", cookie=app.name, timeout=120)
    return {"status": r.status, "ttfb_ms": r.ttfb * 1000, "woke": r.headers.get("x-wakeproxy-woke"),
            "server_timing": r.server_timing, "body": r.error or r.body[:300].decode("latin-1") if r.status != 200 else ""}


def ready_once(app, docker_health: bool) -> dict:
    """Stop C{app}, then docker start -> first 200 from /status (and -> Docker healthy)."""
    app.ensure_stopped()
    time.sleep(SETTLE)
    t0 = time.perf_counter()
    app.api.start(app.id)
    t_started = time.perf_counter()
    t_ok = client.first_ok(app.port, "/status", timeout=60, pause=0.001)
    out = {"start_api_ms": (t_started - t0) * 1000, "ready_ms": (t_ok - t0) * 1000}
    if docker_health:
        out["healthy_ms"] = (app.wait_healthy(timeout=60, interval=0.005) - t0) * 1000
    return out


def run(ctx: Context, section: Section) -> None:
    n = 3 if ctx.smoke else 20
    apps = {}
    for mode, router, label, docker_health in MODES:
        apps[mode] = ctx.mock(mode, health_label=label, docker_health=docker_health)
    wakeproxies = {}
    for mode, router, label, docker_health in MODES:
        if router:  # one router-mode wakeproxy per such mode: its --upstream is that container's port
            wakeproxies[mode] = ctx.wakeproxy("router-" + mode, instances=len(apps),
                                              upstream="http://127.0.0.1:{}".format(apps[mode].port))
        else:
            if "direct" not in wakeproxies:
                wakeproxies["direct"] = ctx.wakeproxy("direct", instances=len(apps))
            wakeproxies[mode] = wakeproxies["direct"]

    for mode, router, label, docker_health in MODES:
        app = apps[mode]
        port = wakeproxies[mode].port
        if not ctx.smoke:  # one unmeasured cycle of each (first start of a fresh container)
            wake_once(ctx, app, port)
            ready_once(app, docker_health and router)
        wakes, readies = [], []
        for i in range(n):
            w = wake_once(ctx, app, port)
            wakes.append(w)
            if w["status"] != 200:
                ctx.problem("cold {} wake {}: status {} {}".format(mode, i, w["status"], w["body"]))
            elif w["woke"] != "1":
                ctx.problem("cold {} wake {}: 200 without X-Wakeproxy-Woke: 1 (not held?)".format(mode, i))
            readies.append(ready_once(app, docker_health and router))
        ctx.log("{}: wake p50 {:.0f} ms, app ready p50 {:.0f} ms".format(
            mode, percentile([w["ttfb_ms"] for w in wakes], 50), percentile([r["ready_ms"] for r in readies], 50)))
        section.raw[mode] = {"wakes": wakes, "ready": readies}
        _rows(section, mode, wakes, readies, router)


def _rows(section: Section, mode: str, wakes: list, readies: list, router: bool) -> None:
    ok = [w for w in wakes if w["status"] == 200]
    wake = summary(w["ttfb_ms"] for w in ok)
    ready = summary(r["ready_ms"] for r in readies)
    start_api = summary(r["start_api_ms"] for r in readies)
    base = {"app ready": ready["p50"]}
    healthy = None
    if router:
        healthy = summary(r["healthy_ms"] for r in readies)
        base["docker healthy"] = healthy["p50"]
    section.add("{} wake TTFB p50".format(mode), wake["p50"], "ms", base)
    base99 = {"app ready": ready["p99"]}
    if healthy:
        base99["docker healthy"] = healthy["p99"]
    section.add("{} wake TTFB p99".format(mode), wake["p99"], "ms", base99)
    overhead = wake["p50"] - ready["p50"] if wake["p50"] is not None else None
    section.add("{} overhead p50 (wake - ready)".format(mode), overhead, "ms", {"app ready": ready["p50"]},
                target="≤ {:.0f} ms".format(TARGET_OVERHEAD_MS),
                ok=overhead is not None and overhead <= TARGET_OVERHEAD_MS)
    if healthy and wake["p50"] is not None:
        section.add("{} overhead p50 (wake - healthy)".format(mode), wake["p50"] - healthy["p50"], "ms",
                    {"docker healthy": healthy["p50"]})
    timing = {k: percentile([w["server_timing"].get(k) for w in ok if k in w["server_timing"]], 50)
              for k in ("start", "health", "total")}
    section.add("{} Server-Timing start p50".format(mode), timing["start"], "ms", {"docker start API": start_api["p50"]})
    after_start = summary(r["ready_ms"] - r["start_api_ms"] for r in readies)
    health_base = {"app ready after start": after_start["p50"]}
    if healthy:
        health_base["healthy after start"] = percentile([r["healthy_ms"] - r["start_api_ms"] for r in readies], 50)
    section.add("{} Server-Timing health p50".format(mode), timing["health"], "ms", health_base)
    section.add("{} Server-Timing total p50".format(mode), timing["total"], "ms", {"client TTFB": wake["p50"]})
