"""
warm: steady-state proxying of a running instance, wrk (keep-alive, one thread) at c=1, 32 and 256,
against

- the upstream directly (baseline 1),
- nginx as a reverse proxy with a keep-alive upstream pool (baseline 2),
- wakeproxy in router mode (C{--upstream URL}; the cookie names one running, healthy mock_app),
- wakeproxy in direct mode (mock_app upstream only: it forwards to the container's port label).

Upstreams: a static nginx (C{return 200 "ok"}) and mock_app (a running container, C{GET /}).

Then the plain upstream: C{tests/plainapp.py} (the standard library's C{http.server}, HTTP/1.1, head and
body in two writes) in a container of the mock_app image, at c=1 on one kept-alive connection, directly,
through nginx and through wakeproxy (direct mode): the Nagle / delayed-ACK stall of pooled upstream
connections shows here (44 ms a request), nowhere else.
"""

from __future__ import annotations

from typing import Optional

from .. import client
from ..context import Context
from ..procs import REPO
from ..report import Section
from ..stats import summary
from ..wrk import run_wrk

TARGET_RATIO = 0.50
TARGET_P99_RATIO = 3.0
#: the levels the req/s and p99 targets apply to (c=1 measures latency, not capacity)
TARGET_LEVELS = ("32", "256")
TARGET_PLAIN_MS = 1.0
LEVELS = (1, 32, 256)

PLAINAPP = REPO / "tests" / "plainapp.py"


def _wrk(ctx: Context, what: str, label: str, port: int, c: int, seconds: float, cookie: str) -> Optional[dict]:
    """One wrk run; wakeproxy's trouble (non-2xx, socket errors, wrk failing) is recorded as a problem."""
    ctx.log("wrk {} via {} c={} {}s".format(what, label, c, seconds))
    try:
        res = run_wrk(ctx.workdir, "http://127.0.0.1:{}/".format(port), c, seconds, cookie=cookie, threads=1)
    except RuntimeError as e:
        if not label.startswith("wakeproxy"):
            raise
        ctx.problem("warm {} via {} c={}: {}".format(what, label, c, str(e)[:300]))
        return None
    bad = res["non2xx"] + sum(res["errors"].values())
    if bad:
        text = "{} via {} c={}: {} non-2xx and errors {}".format(what, label, c, res["non2xx"], res["errors"])
        if label.startswith("wakeproxy"):
            ctx.problem("warm " + text)
        else:
            ctx.log("baseline trouble: " + text)
    return res


def _prime(ctx: Context, what: str, label: str, port: int, cookie: str) -> None:
    """The first request through each wakeproxy settles the instance's readiness (no start)."""
    r = client.try_request(port, "/", cookie=cookie, timeout=30)
    if r.status != 200:
        if label.startswith("wakeproxy"):
            ctx.problem("warm {} via {}: priming request answered {} {}".format(
                what, label, r.status, r.error or r.body[:300]))
        else:
            raise RuntimeError("baseline {} via {} answered {} {}".format(what, label, r.status, r.error))


def run(ctx: Context, section: Section) -> None:
    seconds = 1 if ctx.smoke else 10

    static = ctx.nginx_static()
    app = ctx.mock("app")
    plain = None
    if PLAINAPP.exists():
        plain = ctx.mock("plain", docker_health=False, command=["python3", "-u", "/app/plainapp.py", "{port}"],
                         files={PLAINAPP: "/app/plainapp.py"})
        plain.start()
    else:
        ctx.log("{} not found: no plain http.server rows".format(PLAINAPP))
    app.ensure_running()
    app.wait_healthy()  # router mode only forwards to an instance Docker reports healthy
    upstreams = {"static": static.ports["static"], "app": app.port}
    if plain is not None:
        client.first_ok(plain.port, "/", timeout=30)
        upstreams["plain"] = plain.port
    proxy = ctx.nginx_proxy(upstreams)
    wp_static = ctx.wakeproxy("router-static", upstream="http://127.0.0.1:{}".format(static.ports["static"]))
    wp_app = ctx.wakeproxy("router-app", upstream="http://127.0.0.1:{}".format(app.port))
    wp_direct = ctx.wakeproxy("direct")

    targets = {
        "static": [("direct", static.ports["static"]), ("nginx", proxy.ports["static"]),
                   ("wakeproxy router", wp_static.port)],
        "mock_app": [("direct", app.port), ("nginx", proxy.ports["app"]),
                     ("wakeproxy router", wp_app.port), ("wakeproxy direct", wp_direct.port)],
    }
    for upstream, paths in targets.items():
        for label, port in paths:
            _prime(ctx, upstream, label, port, app.name)
            if not ctx.smoke:  # a 1 s wrk warm-up per target
                _wrk(ctx, upstream + " (warm-up)", label, port, 32, 1, app.name)

    results: dict = {}
    for upstream, paths in targets.items():
        for c in LEVELS:
            for label, port in paths:
                res = _wrk(ctx, upstream, label, port, c, seconds, app.name)
                results.setdefault(upstream, {}).setdefault(str(c), {})[label] = res
    section.raw["wrk"] = results
    section.raw["seconds_per_run"] = seconds
    section.raw["wrk_threads"] = 1

    for upstream, by_c in results.items():
        for c, by_label in by_c.items():
            _wrk_rows(section, upstream, c, by_label)

    if plain is not None:
        _plain(ctx, section, plain, proxy.ports["plain"], wp_direct.port, seconds)


def _wrk_rows(section: Section, upstream: str, c: str, by_label: dict) -> None:
    base = {"nginx": by_label["nginx"], "direct": by_label["direct"]}
    targeted = c in TARGET_LEVELS
    for label, res in by_label.items():
        if not label.startswith("wakeproxy"):
            continue
        name = "{} c={} {}".format(upstream, c, label.split()[1])
        rps = res["rps"] if res else None
        p99 = res["p99_ms"] if res else None
        rps_ok = p99_ok = None
        if targeted:
            nginx_rps, nginx_p99 = base["nginx"]["rps"], base["nginx"]["p99_ms"]
            rps_ok = rps is not None and nginx_rps > 0 and rps / nginx_rps >= TARGET_RATIO
            p99_ok = p99 is not None and p99 <= TARGET_P99_RATIO * nginx_p99
        section.add(name + " req/s", rps, "req/s", {k: v["rps"] for k, v in base.items()}, better="higher",
                    target="≥ {:.2f}x nginx".format(TARGET_RATIO) if targeted else "", ok=rps_ok)
        section.add(name + " p50", res["p50_ms"] if res else None, "ms", {k: v["p50_ms"] for k, v in base.items()})
        section.add(name + " p99", p99, "ms", {k: v["p99_ms"] for k, v in base.items()},
                    target="≤ {:.0f}x nginx".format(TARGET_P99_RATIO) if targeted else "", ok=p99_ok)


def _plain(ctx: Context, section: Section, plain, nginx_port: int, wp_port: int, seconds: float) -> None:
    """
    c=1 on one kept-alive connection to the plain http.server app: a client that acknowledges at once
    (TCP_QUICKACK after every read), so that the only delayed-ACK stall left is a proxy's own upstream
    connection's; and wrk (which, like most clients, delays its ACKs: directly it waits 44 ms too).
    """
    paths = [("direct", plain.port), ("nginx", nginx_port), ("wakeproxy", wp_port)]
    for label, port in paths:
        _prime(ctx, "plain", label, port, plain.name)
    quick: dict = {}
    wrk: dict = {}
    for label, port in paths:
        ctx.log("plain via {}: keep-alive client (TCP_QUICKACK) {}s".format(label, seconds))
        k = client.keepalive(port, "/", cookie=plain.name, seconds=seconds, max_requests=20000)
        s = summary(x * 1000 for x in k.latencies)
        quick[label] = {"statuses": k.statuses, "error": k.error, "ms": s,
                        "rps": s["n"] / seconds if s["n"] else 0.0}
        if k.error or set(k.statuses) - {200}:
            what = "plain via {}: statuses {} error {}".format(label, k.statuses, k.error)
            if label == "wakeproxy":
                ctx.problem("warm " + what)
            else:
                ctx.log("baseline trouble: " + what)
        wrk[label] = _wrk(ctx, "plain", label, port, 1, seconds, plain.name)
    section.raw["plain"] = {"keepalive_quickack": quick, "wrk_c1": wrk}

    def val(d: dict, label: str, key: str) -> Optional[float]:
        return d[label]["ms"][key] if d.get(label) else None

    wp50, direct50 = val(quick, "wakeproxy", "p50"), val(quick, "direct", "p50")
    ok = wp50 is not None and direct50 is not None and wp50 - direct50 <= TARGET_PLAIN_MS
    section.add("plain c=1 p50 (client QUICKACK)", wp50, "ms",
                {"direct": direct50, "nginx": val(quick, "nginx", "p50")},
                target="≤ direct + {:.0f} ms".format(TARGET_PLAIN_MS), ok=ok)
    section.add("plain c=1 p99 (client QUICKACK)", val(quick, "wakeproxy", "p99"), "ms",
                {"direct": val(quick, "direct", "p99"), "nginx": val(quick, "nginx", "p99")})
    wrk50 = {label: (r["p50_ms"] if r else None) for label, r in wrk.items()}
    section.add("plain c=1 wrk p50", wrk50["wakeproxy"], "ms", {"direct": wrk50["direct"], "nginx": wrk50["nginx"]},
                note="wrk delays its ACKs: directly it meets the app's Nagle stall too")
