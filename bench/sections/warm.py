"""
warm: steady-state proxying of a running instance, wrk at several concurrencies, against

- the upstream directly (baseline 1),
- nginx as a reverse proxy with a keep-alive upstream pool (baseline 2),
- wakeproxy in router mode (C{--upstream URL}; the cookie names one running, healthy mock_app),
- wakeproxy in direct mode (mock_app upstream only: it forwards to the container's port label).

Upstreams: a static nginx (C{return 200 "ok"}) and mock_app (a running container, C{GET /}).
"""

from __future__ import annotations

from .. import client
from ..context import Context
from ..report import Section
from ..wrk import run_wrk

TARGET_RATIO = 0.50


def run(ctx: Context, section: Section) -> None:
    seconds = 2 if ctx.smoke else 10
    levels = [1, 32] if ctx.smoke else [1, 32, 256]

    static = ctx.nginx_static()
    app = ctx.mock("app")
    app.ensure_running()
    app.wait_healthy()  # router mode only forwards to an instance Docker reports healthy
    proxy = ctx.nginx_proxy({"static": static.ports["static"], "app": app.port})
    wp_static = ctx.wakeproxy("router-static", upstream="http://127.0.0.1:{}".format(static.ports["static"]))
    wp_app = ctx.wakeproxy("router-app", upstream="http://127.0.0.1:{}".format(app.port))
    wp_direct = ctx.wakeproxy("direct")

    targets = {
        "static": [("direct", static.ports["static"], "/"), ("nginx", proxy.ports["static"], "/"),
                   ("wakeproxy router", wp_static.port, "/")],
        "mock_app": [("direct", app.port, "/"), ("nginx", proxy.ports["app"], "/"),
                     ("wakeproxy router", wp_app.port, "/"), ("wakeproxy direct", wp_direct.port, "/")],
    }
    # prime: the first request through each wakeproxy settles the instance's readiness (no start)
    for upstream, paths in targets.items():
        for label, port, path in paths:
            r = client.try_request(port, path, cookie=app.name, timeout=30)
            if r.status != 200:
                if label.startswith("wakeproxy"):
                    ctx.problem("warm {} via {}: priming request answered {} {}".format(
                        upstream, label, r.status, r.body[:300]))
                else:
                    raise RuntimeError("baseline {} via {} answered {}".format(upstream, label, r.status))
            if not ctx.smoke:  # a 1 s wrk warm-up per target
                run_wrk(ctx.workdir, "http://127.0.0.1:{}{}".format(port, path), 32, 1, cookie=app.name)

    results: dict = {}
    for upstream, paths in targets.items():
        for c in levels:
            for label, port, path in paths:
                ctx.log("wrk {} via {} c={} {}s".format(upstream, label, c, seconds))
                res = run_wrk(ctx.workdir, "http://127.0.0.1:{}{}".format(port, path), c, seconds, cookie=app.name)
                results.setdefault(upstream, {}).setdefault(str(c), {})[label] = res
                bad = res["non2xx"] + sum(res["errors"].values())
                if bad:
                    what = "{} via {} c={}: {} non-2xx and errors {}".format(
                        upstream, label, c, res["non2xx"], res["errors"])
                    if label.startswith("wakeproxy"):
                        ctx.problem("warm " + what)
                    else:
                        ctx.log("baseline trouble: " + what)
    section.raw["wrk"] = results
    section.raw["seconds_per_run"] = seconds

    for upstream, by_c in results.items():
        for c, by_label in by_c.items():
            base = {"nginx": by_label["nginx"], "direct": by_label["direct"]}
            for label in by_label:
                if not label.startswith("wakeproxy"):
                    continue
                res = by_label[label]
                mode = label.split()[1]
                name = "{} c={} {}".format(upstream, c, mode)
                ratio = res["rps"] / base["nginx"]["rps"] if base["nginx"]["rps"] else 0.0
                section.add(name + " req/s", res["rps"], "req/s",
                            {k: v["rps"] for k, v in base.items()}, better="higher",
                            target="≥ {:.2f}x nginx".format(TARGET_RATIO), ok=ratio >= TARGET_RATIO)
                section.add(name + " p50", res["p50_ms"], "ms", {k: v["p50_ms"] for k, v in base.items()})
                section.add(name + " p99", res["p99_ms"], "ms", {k: v["p99_ms"] for k, v in base.items()})
