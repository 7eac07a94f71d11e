"""
CPU per request of the warm forwarding path: a quick, contention-robust figure for work on the relay.

Starts what the warm section starts for its static row (an nginx C{return 200} upstream, a running
mock_app container whose name the cookie carries, wakeproxy in router mode in front of the static
upstream, nginx as a keep-alive reverse proxy), then runs C{wrk -t1 -c32} against wakeproxy and nginx in
turn and prints, for each, req/s and the proxy process's CPU time per request (utime + stime deltas
from C{/proc/<pid>/stat}; nginx: its one worker). On a shared machine req/s swings with the neighbours;
CPU per request barely does, so it is the figure to optimise.

    .venv/bin/python -m bench.cpu_per_request                     # 3 rounds of 5 s each
    .venv/bin/python -m bench.cpu_per_request --rounds 5 --seconds 10 -c 256
    .venv/bin/python -m bench.cpu_per_request --src /tmp/other    # another checkout's wakeproxy
    .venv/bin/python -m bench.cpu_per_request --compare /tmp/main  # + that tree's wakeproxy, interleaved (A/B)
    .venv/bin/python -m bench.cpu_per_request --profile /tmp/wp.prof   # plus a cProfile of wakeproxy

With C{--profile FILE}, one more wakeproxy runs under C{twistd --profiler cprofile --savestats}; after
its own wrk run it is stopped and the stats (C{pstats} format) land in FILE, the top of them printed.
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Optional

import docker.errors

from . import client, tools
from .containers import IMAGE
from .context import Context
from .procs import Wakeproxy, raise_nofile
from .wrk import run_wrk

__all__ = ["main", "measure"]


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> tuple[float, float, int]:
    """(user, system) CPU seconds of C{pid} (all its threads), and its minor page faults."""
    with open("/proc/{}/stat".format(pid)) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK, int(fields[7])


def measure(workdir: Path, port: int, pid: int, connections: int, seconds: float, cookie: str) -> dict:
    """One wrk run against C{port}; req/s, p99 and µs of C{pid}'s CPU per request."""
    user0, sys0, faults0 = _cpu(pid)
    res = run_wrk(workdir, "http://127.0.0.1:{}/".format(port), connections, seconds, cookie=cookie, threads=1)
    user1, sys1, faults1 = _cpu(pid)
    n = res["requests"] or 1
    return {"rps": res["rps"], "p99_ms": res["p99_ms"], "requests": res["requests"],
            "bad": res["non2xx"] + sum(res["errors"].values()), "us_per_req": (user1 - user0 + sys1 - sys0) / n * 1e6,
            "user_us": (user1 - user0) / n * 1e6, "sys_us": (sys1 - sys0) / n * 1e6,
            "faults": (faults1 - faults0) / n}


def _line(label: str, m: dict) -> str:
    return "{:<10} {:>9,.0f} req/s  p99 {:6.2f} ms  {:6.1f} µs/req (user {:.1f}, sys {:.1f}, {:.2f} faults){}".format(
        label, m["rps"], m["p99_ms"], m["us_per_req"], m["user_us"], m["sys_us"], m["faults"], "  ({} bad)".format(m["bad"]) if m["bad"] else "")


def _profiled(ctx: Context, upstream: str, out: Path) -> Wakeproxy:
    wp = Wakeproxy(ctx.workdir, "cpu-profiled", ctx.owner_label, upstream=upstream)
    at = wp.argv.index("wakeproxy")
    wp.argv[at:at] = ["--profile", str(out), "--profiler", "cprofile", "--savestats"]
    wp.start()
    wp.wait_ready()
    return wp


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cpu_per_request", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="measurements of each proxy, alternating (default 3)")
    p.add_argument("--seconds", type=float, default=5, help="seconds per wrk run (default 5)")
    p.add_argument("-c", "--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--src", type=Path, help="run wakeproxy from this source tree")
    p.add_argument("--compare", type=Path, help="also run wakeproxy from this source tree, interleaved (label 'other')")
    p.add_argument("--profile", type=Path, help="also run a cProfiled wakeproxy; pstats to this file")
    p.add_argument("--perf", type=Path, help="also perf-record wakeproxy during one more run; perf.data to this file")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    raise_nofile()
    if args.src is not None:
        Wakeproxy.src = args.src.resolve()
    tools.ensure_tools()
    docker_client = tools.ensure_docker()
    try:
        docker_client.images.get(IMAGE)  # any mock_app will do: only its readiness matters here
    except docker.errors.ImageNotFound:
        tools.ensure_image(docker_client)
    run_id = uuid.uuid4().hex[:6]
    workdir = Path(tempfile.mkdtemp(prefix="wpcpu-{}-".format(run_id)))
    ctx = Context(run_id, workdir, docker_client, smoke=False)
    ctx.section = "cpu"

    try:
        return _run(args, ctx)
    finally:
        ctx.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def _run(args: argparse.Namespace, ctx: Context) -> int:
    workdir = ctx.workdir
    static = ctx.nginx_static()
    app = ctx.mock("app")
    app.ensure_running()
    app.wait_healthy()  # router mode forwards only to an instance Docker reports healthy
    upstream = "http://127.0.0.1:{}".format(static.ports["static"])
    proxy = ctx.nginx_proxy({"static": static.ports["static"]})
    wp = ctx.wakeproxy("router-static", upstream=upstream)
    targets = [("wakeproxy", wp.port, wp.pid), ("nginx", proxy.ports["static"], proxy.worker_pid)]
    if args.compare is not None:
        own, Wakeproxy.src = Wakeproxy.src, args.compare.resolve()
        try:
            other = ctx.wakeproxy("router-static-other", upstream=upstream)
        finally:
            Wakeproxy.src = own
        targets.insert(1, ("other", other.port, other.pid))
    for _, port, _ in targets:
        r = client.try_request(port, "/", cookie=app.name, timeout=30)
        if r.status != 200:
            print("priming 127.0.0.1:{} answered {} {}".format(port, r.status, r.error), file=sys.stderr)
            return 1
        run_wrk(workdir, "http://127.0.0.1:{}/".format(port), args.connections, 1, cookie=app.name)  # warm-up

    print("wrk -t1 -c{} -d{:g}s, static upstream, wakeproxy router mode; CPU of the proxy process".format(
        args.connections, args.seconds))
    got: dict = {label: [] for label, _, _ in targets}
    for i in range(args.rounds):
        for label, port, pid in targets:
            m = measure(workdir, port, pid, args.connections, args.seconds, app.name)
            got[label].append(m)
            print("round {}  {}".format(i + 1, _line(label, m)), flush=True)
    best = {label: min(ms, key=lambda m: m["us_per_req"]) for label, ms in got.items()}
    mean_rps = {label: sum(m["rps"] for m in ms) / len(ms) for label, ms in got.items()}
    for label in got:
        print("best     " + _line(label, best[label]))
    print("ratio (nginx µs / wakeproxy µs, best of each): {:.2f}x   req/s ratio (means): {:.2f}x".format(
        best["nginx"]["us_per_req"] / best["wakeproxy"]["us_per_req"], mean_rps["wakeproxy"] / mean_rps["nginx"]))
    if "other" in best:
        print("wakeproxy / other CPU per request (best of each): {:.2f}x".format(
            best["wakeproxy"]["us_per_req"] / best["other"]["us_per_req"]))

    if args.perf is not None:
        _perf(args, workdir, wp, app.name)
    if args.profile is not None:
        _cprofile(args, ctx, upstream, app.name)
    return 0


def _perf(args: argparse.Namespace, workdir: Path, wp: Wakeproxy, cookie: str) -> None:
    """C{perf record -g} of wakeproxy during one more wrk run; the shares by shared object."""
    rec = subprocess.Popen(["perf", "record", "-q", "-g", "-p", str(wp.pid), "-o", str(args.perf)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        m = measure(workdir, wp.port, wp.pid, args.connections, args.seconds, cookie)
    finally:
        rec.send_signal(signal.SIGINT)
        rec.wait(30)
    print("perf     " + _line("wakeproxy", m))
    report = subprocess.run(["perf", "report", "-i", str(args.perf), "--no-children", "--sort", "dso", "--stdio"],
                            capture_output=True, text=True)
    rows = [line for line in report.stdout.splitlines() if "%" in line and not line.startswith("#")
            and not line.lstrip().startswith(("|", "-"))]
    print("\n".join(rows[:15]))


def _cprofile(args: argparse.Namespace, ctx: Context, upstream: str, cookie: str) -> None:
    profiled = _profiled(ctx, upstream, args.profile.resolve())
    client.try_request(profiled.port, "/", cookie=cookie, timeout=30)
    m = measure(ctx.workdir, profiled.port, profiled.pid, args.connections, args.seconds, cookie)
    print("profiled " + _line("wakeproxy", m))
    profiled.stop(timeout=30)
    deadline = time.monotonic() + 30
    while not args.profile.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if args.profile.exists():
        pstats.Stats(str(args.profile)).sort_stats("tottime").print_stats(30)
    else:
        print("no profile written to {}".format(args.profile), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
