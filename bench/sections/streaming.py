"""
streaming: a 1 GiB download (C{GET /bytes/N}) and a 1 GiB upload (C{POST /echo}, generated body) from a
running mock_app (smoke: 64 MiB), directly, through nginx and through wakeproxy (direct mode): MB/s,
and the proxy's RSS growth during the transfer (wakeproxy's process; nginx's worker as its baseline).
"""

from __future__ import annotations

from .. import client
from ..context import Context
from ..procs import RssSampler
from ..report import Section

TARGET_RSS_MB = 30.0


def run(ctx: Context, section: Section) -> None:
    size = (64 if ctx.smoke else 1024) * 1024 * 1024
    app = ctx.mock("app", health_label="/status")
    app.ensure_running()
    proxy = ctx.nginx_proxy({"app": app.port})
    wp = ctx.wakeproxy("direct", instances=1)
    prime = client.try_request(wp.port, "/status", cookie=app.name, timeout=30)
    if prime.status != 200:
        ctx.problem("streaming: priming request answered {} {}".format(prime.status, prime.body[:300]))

    paths = [("direct", app.port, None), ("nginx", proxy.ports["app"], proxy.worker_pid), ("wakeproxy", wp.port, wp.pid)]
    results: dict = {}
    for kind, transfer in (("download", client.download), ("upload", client.upload)):
        for label, port, pid in paths:
            ctx.log("{} {} MiB via {}".format(kind, size >> 20, label))
            if pid is not None:
                with RssSampler(pid) as sampler:
                    t = transfer(port, size, cookie=app.name)
                growth = sampler.growth
            else:
                t = transfer(port, size, cookie=app.name)
                growth = None
            res = {"status": t.status, "bytes": t.nbytes, "seconds": t.seconds, "mb_s": t.mb_per_s,
                   "echoed": t.echoed, "error": t.error, "rss_growth": growth}
            results.setdefault(kind, {})[label] = res
            complete = t.status == 200 and t.error is None and t.nbytes == size and (
                kind == "download" or t.echoed == size)
            if not complete:
                what = "{} of {} bytes via {}: status {}, {} bytes, echoed {}, error {}".format(
                    kind, size, label, t.status, t.nbytes, t.echoed, t.error)
                if label == "wakeproxy":
                    ctx.problem("streaming " + what)
                else:
                    ctx.log("baseline trouble: " + what)
    section.raw.update({"size": size, "results": results})

    for kind in ("download", "upload"):
        r = results[kind]
        section.add("{} {} MiB throughput".format(kind, size >> 20), r["wakeproxy"]["mb_s"], "MB/s",
                    {"nginx": r["nginx"]["mb_s"], "direct": r["direct"]["mb_s"]}, better="higher")
        growth = r["wakeproxy"]["rss_growth"] / 1e6
        section.add("{} proxy RSS growth".format(kind), growth, "MB", {"nginx": r["nginx"]["rss_growth"] / 1e6},
                    target="≤ {:.0f} MB".format(TARGET_RSS_MB), ok=growth <= TARGET_RSS_MB)
