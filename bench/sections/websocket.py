"""
websocket: mock_app's C{GET /ws} echo (RFC 6455) directly (baseline 1), through nginx with the Upgrade
headers (baseline 2: C{proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header
Connection "upgrade";}) and through wakeproxy (direct mode, HTTP probe on C{/status}), all in one run:

- echo round trips (send a message, wait for its echo, repeat) on 1 and on 32 connections: p50, p99 and
  messages/s (a Python asyncio client, the C{websockets} library: the direct figure is its ceiling);
- N idle tunnels at once (1,000; smoke 200): how many open and still echo after a second of idling, the
  time to open them, and the proxy's RSS per tunnel (wakeproxy's process; nginx's worker);
- the wake: the container is stopped, then a handshake through wakeproxy, timed from before the TCP
  connect to the C{101} head, N times (10; smoke 3), alternating with "app ready" runs (stop, docker
  start, then a handshake every 1 ms until C{101}) directly and through nginx.

A wakeproxy that cannot tunnel (an older checkout, run with C{--src}) records its failures as problems and leaves its
cells empty; the baselines still run. mock_app without C{/ws} (an image older than the endpoint) skips
the section.
"""

from __future__ import annotations

import time

from .. import client
from ..context import SETTLE, Context
from ..procfs import rss
from ..report import Section
from ..stats import summary
from ..wsclient import echo_load, first_upgrade, handshake, idle_tunnels

LABELS = ("wakeproxy", "nginx", "direct")


def run(ctx: Context, section: Section) -> None:
    seconds = 2 if ctx.smoke else 5
    tunnels = 200 if ctx.smoke else 1000
    wakes = 3 if ctx.smoke else 10

    app = ctx.mock("app", health_label="/status")
    app.ensure_running()
    probe = handshake(app.port, timeout=10)
    if probe.status != 101 or probe.error:
        section.error = "skipped: mock_app answers GET /ws with {} {} (an image older than the endpoint? " \
                        "make images)".format(probe.status, probe.error)
        ctx.log(section.error)
        return
    proxy = ctx.nginx_proxy({"app": app.port}, websocket=True)
    wp = ctx.wakeproxy("direct", instances=1)
    prime = client.try_request(wp.port, "/status", cookie=app.name, timeout=30)
    if prime.status != 200:
        ctx.problem("websocket: priming request answered {} {}".format(prime.status, prime.error or prime.body[:300]))
    ports = {"wakeproxy": wp.port, "nginx": proxy.ports["app"], "direct": app.port}
    pids = {"wakeproxy": wp.pid, "nginx": proxy.worker_pid, "direct": None}

    def trouble(label: str, text: str) -> None:
        if label == "wakeproxy":
            ctx.problem("websocket " + text)
        else:
            ctx.log("baseline trouble: " + text)

    echo: dict = {}
    for c in (1, 32):
        for label in LABELS:
            ctx.log("echo via {} c={} {}s".format(label, c, seconds))
            res = echo_load(ports[label], c, seconds, cookie=app.name)
            res["ms"] = summary(x * 1000 for x in res.pop("latencies"))
            echo.setdefault(str(c), {})[label] = res
            if res["failures"] or res["opened"] != c:
                trouble(label, "echo c={} via {}: {} of {} opened, failures {}".format(
                    c, label, res["opened"], c, res["failures"]))
    section.raw["echo"] = echo

    idle: dict = {}
    for label in LABELS:
        pid = pids[label]
        before = rss(pid) if pid else None
        ctx.log("{} idle tunnels via {}".format(tunnels, label))
        res = idle_tunnels(ports[label], tunnels, (lambda p=pid: rss(p) if p else None), cookie=app.name)
        res["rss_before"], res["rss_after"] = before, res.pop("measured")
        idle[label] = res
        if res["alive"] != tunnels or res["failures"]:
            trouble(label, "{} idle tunnels via {}: {} opened, {} echoed after idling, failures {}".format(
                tunnels, label, res["opened"], res["alive"], res["failures"]))
        time.sleep(0.5)  # let the closes finish on every side
    section.raw["idle"] = idle

    runs: dict = {label: [] for label in LABELS}
    for i in range(wakes):
        runs["wakeproxy"].append(_wake_once(app, wp.port))
        w = runs["wakeproxy"][-1]
        if w["status"] != 101 or w["error"]:
            trouble("wakeproxy", "wake {}: status {} {}".format(i, w["status"], w["error"]))
        for label in ("direct", "nginx"):
            runs[label].append(_ready_once(app, ports[label]))
    section.raw["wake"] = runs

    _rows(section, echo, idle, runs, tunnels)


def _wake_once(app, port: int) -> dict:
    """Stop C{app}; one handshake through wakeproxy (it wakes the instance), then one echo."""
    app.ensure_stopped()
    time.sleep(SETTLE)
    h = handshake(port, cookie=app.name, timeout=120)
    return {"status": h.status, "ms": h.seconds * 1000, "echoed": h.echoed, "error": h.error}


def _ready_once(app, port: int) -> dict:
    """Stop C{app}, then docker start -> the first 101 on C{port} (a handshake every 1 ms)."""
    app.ensure_stopped()
    time.sleep(SETTLE)
    t0 = time.perf_counter()
    app.api.start(app.id)
    try:
        return {"ms": (first_upgrade(port, timeout=60) - t0) * 1000, "error": None}
    except TimeoutError as e:
        return {"ms": None, "error": str(e)}


def _rows(section: Section, echo: dict, idle: dict, runs: dict, tunnels: int) -> None:
    def ok_stat(res: dict, key: str):
        return res["ms"][key] if res["opened"] and not res["failures"] else None

    for c, by_label in echo.items():
        base = [label for label in LABELS if label != "wakeproxy"]
        for key in ("p50", "p99"):
            section.add("echo c={} round trip {}".format(c, key), ok_stat(by_label["wakeproxy"], key), "ms",
                        {label: ok_stat(by_label[label], key) for label in base})
        mps = {label: (r["messages_per_s"] if r["opened"] and not r["failures"] else None)
               for label, r in by_label.items()}
        section.add("echo c={} messages/s".format(c), mps["wakeproxy"], "msg/s",
                    {label: mps[label] for label in base}, better="higher")

    wp = idle["wakeproxy"]
    section.add("idle tunnels open and echoing", wp["alive"], "count",
                {"nginx": idle["nginx"]["alive"], "direct": idle["direct"]["alive"]},
                target="all {:,}".format(tunnels), ok=wp["alive"] == tunnels and not wp["failures"])

    def per_tunnel(res: dict):
        if res["rss_before"] is None or res["rss_after"] is None or not res["opened"]:
            return None
        return (res["rss_after"] - res["rss_before"]) / res["opened"] / 1024

    section.add("RSS per idle tunnel", per_tunnel(wp) if wp["opened"] else None, "KB",
                {"nginx worker": per_tunnel(idle["nginx"])})
    opened = {label: (r["open_seconds"] if r["opened"] == tunnels else None) for label, r in idle.items()}
    section.add("time to open {:,} tunnels".format(tunnels), opened["wakeproxy"], "s",
                {"nginx": opened["nginx"], "direct": opened["direct"]})

    good = [w["ms"] for w in runs["wakeproxy"] if w["status"] == 101 and not w["error"]]
    wake = summary(good)
    ready = {label: summary(r["ms"] for r in runs[label] if r["ms"] is not None) for label in ("direct", "nginx")}
    names = {"direct": "app ready", "nginx": "app ready via nginx"}
    wakes = len(runs["wakeproxy"])
    section.add("wakes answered 101 and echoed", len(good), "count", {"wakes": wakes},
                target="all {}".format(wakes), ok=len(good) == wakes)
    for key in ("p50", "p99"):
        section.add("wake: connect -> 101 {}".format(key), wake[key], "ms",
                    {names[label]: ready[label][key] for label in ("direct", "nginx")})
    overhead = wake["p50"] - ready["direct"]["p50"] if wake["p50"] is not None and ready["direct"]["p50"] else None
    section.add("wake overhead p50 (wake - app ready)", overhead, "ms", {"app ready": ready["direct"]["p50"]})
