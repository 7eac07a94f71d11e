"""
streaming: a 1 GiB download (C{GET /bytes/N}) and a 1 GiB upload (C{POST /echo}, generated body) from a
running mock_app (smoke: 64 MiB), directly, through nginx and through wakeproxy (direct mode): MB/s
(target ≥ 0.9x nginx), the proxy's RSS growth during the transfer (wakeproxy's process, target ≤ 5 MB;
nginx's worker as its baseline), and temp files: wakeproxy runs with a TMPDIR of its own, whose files
it holds open during the transfer (from /proc/PID/fd: a C{TemporaryFile} is unlinked at once) and any
left behind afterwards are counted (target: none); nginx's client-body and proxy temp files likewise,
for comparison (its default buffering spools large bodies to disk).
"""

from __future__ import annotations

from .. import client
from ..context import Context
from ..procfs import RssSampler, files_under
from ..report import Section

TARGET_RSS_MB = 5.0
TARGET_RATIO = 0.9


def run(ctx: Context, section: Section) -> None:
    size = (64 if ctx.smoke else 1024) * 1024 * 1024
    app = ctx.mock("app", health_label="/status")
    app.ensure_running()
    proxy = ctx.nginx_proxy({"app": app.port})
    wp = ctx.wakeproxy("direct", instances=1)
    prime = client.try_request(wp.port, "/status", cookie=app.name, timeout=30)
    if prime.status != 200:
        ctx.problem("streaming: priming request answered {} {}".format(prime.status, prime.body[:300]))

    paths = [("direct", app.port, None, ()),
             ("nginx", proxy.ports["app"], proxy.worker_pid, (proxy.prefix / "client_body", proxy.prefix / "proxy")),
             ("wakeproxy", wp.port, wp.pid, (wp.tmpdir,))]
    results: dict = {}
    for kind, transfer in (("download", client.download), ("upload", client.upload)):
        for label, port, pid, temp_dirs in paths:
            ctx.log("{} {} MiB via {}".format(kind, size >> 20, label))
            growth = None
            held: list = []
            if pid is not None:
                with RssSampler(pid, watch_dirs=temp_dirs) as sampler:
                    t = transfer(port, size, cookie=app.name)
                growth = sampler.growth
                held = sorted(sampler.open_files)
            else:
                t = transfer(port, size, cookie=app.name)
            left = [str(d / f) for d in temp_dirs for f in files_under(d)]
            res = {"status": t.status, "bytes": t.nbytes, "seconds": t.seconds, "mb_s": t.mb_per_s,
                   "echoed": t.echoed, "error": t.error, "rss_growth": growth,
                   "temp_files_open": held, "temp_files_left": left}
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
            if label == "wakeproxy" and (held or left):
                ctx.problem("streaming {} via wakeproxy used temp files in its TMPDIR: open {}, left {}".format(
                    kind, held[:5], left[:5]))
    section.raw.update({"size": size, "results": results, "wakeproxy_tmpdir": str(wp.tmpdir)})

    for kind in ("download", "upload"):
        r = results[kind]
        wp_res, nginx_res = r["wakeproxy"], r["nginx"]
        good = wp_res["status"] == 200 and wp_res["error"] is None
        mb_s = wp_res["mb_s"] if good else None
        section.add("{} {} MiB throughput".format(kind, size >> 20), mb_s, "MB/s",
                    {"nginx": nginx_res["mb_s"], "direct": r["direct"]["mb_s"]}, better="higher",
                    target="≥ {:.1f}x nginx".format(TARGET_RATIO),
                    ok=mb_s is not None and nginx_res["mb_s"] > 0 and mb_s / nginx_res["mb_s"] >= TARGET_RATIO)
        growth = wp_res["rss_growth"] / 1e6
        section.add("{} proxy RSS growth".format(kind), growth, "MB", {"nginx": nginx_res["rss_growth"] / 1e6},
                    target="≤ {:.0f} MB".format(TARGET_RSS_MB), ok=growth <= TARGET_RSS_MB)
        temp = len(set(wp_res["temp_files_open"]) | set(wp_res["temp_files_left"]))
        section.add("{} proxy temp files".format(kind), temp, "count",
                    {"nginx": len(set(nginx_res["temp_files_open"]) | set(nginx_res["temp_files_left"]))},
                    target="none", ok=temp == 0)
