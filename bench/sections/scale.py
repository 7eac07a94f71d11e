"""
scale: N managed, never-started instances (1,000; smoke 50; C{docker create}, host network, distinct
port labels). Starts wakeproxy and times spawn -> C{GET /healthz} 200 with C{instances == N}; then its
CPU (utime+stime) over an idle period (30 s; smoke 3 s) and its RSS. Baselines from the same run: the
same with zero instances (an owner label nothing carries) and the Docker list call wakeproxy's startup
makes (C{containers(all, label filter)}).
"""

from __future__ import annotations

import time

from .. import containers
from ..context import Context
from ..procfs import cpu_seconds, rss
from ..report import Section


def _measure(ctx: Context, name: str, instances: int, owner_label: str, idle: float) -> dict:
    wp = ctx.wakeproxy(name, owner_label=owner_label, instances=instances)
    ready = time.perf_counter() - wp.started_at
    time.sleep(0.5)  # let start-up work (thread pool, event stream) settle
    cpu0, t0 = cpu_seconds(wp.pid), time.perf_counter()
    time.sleep(idle)
    cpu1, t1 = cpu_seconds(wp.pid), time.perf_counter()
    out = {"ready_s": ready, "idle_cpu_pct": (cpu1 - cpu0) / (t1 - t0) * 100, "rss": rss(wp.pid),
           "startup_cpu_s": cpu0}
    ctx.stop_wakeproxy(wp)
    return out


def run(ctx: Context, section: Section) -> None:
    n = 50 if ctx.smoke else 1000
    idle = 3.0 if ctx.smoke else 30.0

    empty = _measure(ctx, "empty", 0, "wpbench.owner={}-none".format(ctx.run_id), idle)

    t0 = time.perf_counter()
    containers.create_many(ctx.api, ctx.run_id, ctx.owner, ctx.section, n)
    created = time.perf_counter() - t0
    ctx.log("created {} containers in {:.1f}s".format(n, created))
    t0 = time.perf_counter()
    listed = ctx.api.containers(all=True, filters={"label": [ctx.owner_label]})
    list_s = time.perf_counter() - t0
    if len(listed) != n:
        raise RuntimeError("expected {} containers with {}, Docker lists {}".format(n, ctx.owner_label, len(listed)))

    full = _measure(ctx, "full", n, ctx.owner_label, idle)
    t0 = time.perf_counter()
    removed = containers.remove_run(ctx.api, ctx.run_id, ctx.owner)
    ctx.log("removed {} containers in {:.1f}s".format(removed, time.perf_counter() - t0))

    section.raw.update({"n": n, "idle_s": idle, "create_s": created, "docker_list_s": list_s, "empty": empty,
                        "full": full})
    section.add("startup to /healthz instances={}".format(n), full["ready_s"], "s",
                {"0 instances": empty["ready_s"], "docker list": list_s})
    section.add("startup CPU (until idle)", full["startup_cpu_s"], "s", {"0 instances": empty["startup_cpu_s"]})
    section.add("idle CPU over {:g}s".format(idle), full["idle_cpu_pct"], "%", {"0 instances": empty["idle_cpu_pct"]})
    section.add("RSS", full["rss"] / 1e6, "MB", {"0 instances": empty["rss"] / 1e6})
    section.add("RSS per instance", (full["rss"] - empty["rss"]) / n / 1024, "KB", {})
