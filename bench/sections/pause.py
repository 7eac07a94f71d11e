"""
pause: an instance whose container is paused (C{docker pause}); one request through wakeproxy (which
unpauses it), send -> first byte, N times (20; smoke 3). Baselines from the same run: a warm request to
the running instance through wakeproxy (after the same idle gap), and docker unpause (SDK) -> first 200
from C{/status} probed every 1 ms.
"""

from __future__ import annotations

import time

from .. import client
from ..context import SETTLE, Context
from ..report import Section
from ..stats import summary


def run(ctx: Context, section: Section) -> None:
    n = 3 if ctx.smoke else 20
    app = ctx.mock("app", health_label="/status")
    app.ensure_running()
    wp = ctx.wakeproxy("direct", instances=1)
    prime = client.try_request(wp.port, "/status", cookie=app.name, timeout=30)
    if prime.status != 200:
        ctx.problem("pause: priming request answered {} {}".format(prime.status, prime.body[:300]))

    warm, paused, unpause = [], [], []
    for i in range(n):
        # the same idle gap as before a paused request: back-to-back requests on wakeproxy's keep-alive
        # upstream connection would wait for mock_app's delayed-ACK stall (see README), idle ones do not
        time.sleep(SETTLE)
        r = client.try_request(wp.port, "/status", cookie=app.name, timeout=30)
        warm.append(r.ttfb * 1000)
        if r.status != 200:
            ctx.problem("pause: warm request {} answered {}".format(i, r.status))

    for i in range(n):
        app.pause()
        time.sleep(SETTLE)
        r = client.try_request(wp.port, "/status", cookie=app.name, timeout=60)
        paused.append({"status": r.status, "ttfb_ms": r.ttfb * 1000, "woke": r.headers.get("x-wakeproxy-woke"),
                       "server_timing": r.server_timing})
        if r.status != 200:
            ctx.problem("pause: request to the paused instance {} answered {} {}".format(i, r.status, r.body[:300]))
        elif r.headers.get("x-wakeproxy-woke") != "1":
            ctx.problem("pause: paused request {} answered 200 without X-Wakeproxy-Woke".format(i))
        if app.status == "paused":
            ctx.problem("pause: the container is still paused after the request")
            app.unpause()

    # baseline runs last: wakeproxy does not take a container unpaused behind its back as ready again
    for i in range(n):
        app.pause()
        time.sleep(SETTLE)
        t0 = time.perf_counter()
        api_s = app.unpause()
        t_ok = client.first_ok(app.port, "/status", timeout=30, pause=0.001)
        unpause.append({"unpause_api_ms": api_s * 1000, "ready_ms": (t_ok - t0) * 1000})

    ok = [p["ttfb_ms"] for p in paused if p["status"] == 200]
    p, w = summary(ok), summary(warm)
    u = summary(x["ready_ms"] for x in unpause)
    section.raw.update({"n": n, "warm_ttfb_ms": warm, "paused": paused, "unpause": unpause})
    section.add("paused TTFB p50", p["p50"], "ms", {"warm request": w["p50"], "unpause->ready": u["p50"]})
    section.add("paused TTFB p99", p["p99"], "ms", {"warm request": w["p99"], "unpause->ready": u["p99"]})
    st = summary(x["server_timing"].get("total") for x in paused if "total" in x["server_timing"])
    section.add("paused Server-Timing total p50", st["p50"], "ms", {"unpause->ready": u["p50"]})
