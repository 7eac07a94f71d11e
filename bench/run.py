"""
C{python -m bench.run [--smoke] [--only NAME ...] [--wakeproxy-arg=ARG ...]}: run the benchmark sections,
print one table per section (each wakeproxy figure next to baselines measured in the same run, with
ratios), write C{bench/results/<timestamp>.json}. Exits 0 when every selected section ran (targets missed
included), 1 when the harness itself broke (a section raised), 130 when interrupted.

Cleanup (this run's processes and containers) runs in a C{finally}, from C{atexit}, and on SIGTERM.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path

from . import containers, tools
from .context import Context
from .procs import REPO, Wakeproxy, WakeproxyFailed, raise_nofile
from .report import Section, table, write_json
from .sections import SECTIONS

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.strip().splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="short variant: a few seconds per section")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="run only this section (repeatable or comma-separated): " + ", ".join(SECTIONS))
    p.add_argument("--results", type=Path, default=RESULTS, help="where to write the JSON (default bench/results)")
    p.add_argument("--src", type=Path, default=None,
                   help="run wakeproxy from this source tree (e.g. a `git archive` of another commit) "
                        "instead of the repository")
    p.add_argument("--keep-workdir", action="store_true", help="keep the scratch directory (logs, nginx configs)")
    p.add_argument("--wakeproxy-arg", action="append", default=[], metavar="ARG",
                   help="append ARG to every `twistd wakeproxy` command line (repeatable, one argument each; "
                        "write it with '=' when it starts with '-': --wakeproxy-arg=--idle-tunnel --wakeproxy-arg=open)")
    args = p.parse_args(argv)
    only = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    unknown = [n for n in only if n not in SECTIONS]
    if unknown:
        p.error("unknown section(s) {}; choose from {}".format(", ".join(unknown), ", ".join(SECTIONS)))
    args.sections = only or list(SECTIONS)
    return args


def _versions() -> dict:
    def out(argv):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (done.stdout + done.stderr).strip().splitlines()[0]
        except Exception:
            return None
    import twisted
    return {"python": platform.python_version(), "twisted": twisted.__version__,
            "nginx": out([shutil.which("nginx") or "/usr/sbin/nginx", "-v"]), "wrk": out(["wrk", "--version"]),
            "docker": out(["docker", "version", "--format", "{{.Server.Version}}"]),
            "git": out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
            "git_dirty": bool(out(["git", "-C", str(REPO), "status", "--porcelain", "--", "wakeproxy"])),
            "wakeproxy_src": str(Wakeproxy.src or REPO)}


def _shown(extra: list) -> str:
    """The extra wakeproxy arguments as a shell would take them, or "(none)"."""
    return " ".join(shlex.quote(a) for a in extra) if extra else "(none)"


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_id = uuid.uuid4().hex[:6]
    workdir = Path(tempfile.mkdtemp(prefix="wpbench-{}-".format(run_id)))
    nofile = raise_nofile()
    if args.src is not None:
        Wakeproxy.src = args.src.resolve()
    Wakeproxy.extra_args = tuple(args.wakeproxy_arg)

    tools.ensure_tools()
    docker_client = tools.ensure_docker()
    tools.ensure_image(docker_client)
    stale = containers.remove_stale(docker_client.api, run_id)

    ctx = Context(run_id, workdir, docker_client, args.smoke)
    cleaned = []

    def cleanup():
        if not cleaned:
            cleaned.append(True)
            ctx.cleanup()
            if not args.keep_workdir:
                shutil.rmtree(workdir, ignore_errors=True)

    atexit.register(cleanup)

    def on_signal(signum, frame):
        raise KeyboardInterrupt("signal {}".format(signum))

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    print("wakeproxy bench run {} ({}) sections: {}; wakeproxy args: {}; scratch {}; RLIMIT_NOFILE {}{}".format(
        run_id, "smoke" if args.smoke else "full", ", ".join(args.sections), _shown(args.wakeproxy_arg), workdir,
        nofile, "; removed {} stale containers".format(stale) if stale else ""), flush=True)
    started = time.monotonic()
    sections: list[Section] = []
    broken = interrupted = False
    try:
        for name in args.sections:
            section = Section(name)
            sections.append(section)
            ctx.section = name
            print("-- {} ...".format(name), flush=True)
            t0 = time.monotonic()
            try:
                SECTIONS[name](ctx, section)
            except KeyboardInterrupt:
                section.error = "interrupted"
                interrupted = True
                raise
            except WakeproxyFailed as e:  # wakeproxy's failure, recorded as such; the harness is fine
                section.error = "wakeproxy failed: {}".format(str(e).splitlines()[0])
                ctx.problem(str(e))
            except Exception as e:
                broken = True
                section.error = "{}: {}".format(type(e).__name__, e)
                traceback.print_exc()
            finally:
                try:
                    ctx.end_section()
                except Exception as e:
                    broken = True
                    print("cleanup of {} failed: {}".format(name, e), flush=True)
                section.seconds = time.monotonic() - t0
            print(table(section), flush=True)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        cleanup()

    total = time.monotonic() - started
    print()
    print("=" * 100)
    print("wakeproxy bench {} ({}), {:.0f} s, wakeproxy args: {}; ratio = wakeproxy / baseline (req/s, MB/s: "
          "higher is better; times, memory: lower is better)".format(
              run_id, "smoke" if args.smoke else "full", total, _shown(args.wakeproxy_arg)))
    for section in sections:
        print()
        print(table(section))
    if ctx.problems:
        print()
        print("wakeproxy problems seen ({}):".format(len(ctx.problems)))
        for p in ctx.problems:
            print("  [{}] {}".format(p["section"], p["problem"]))
    targets = [(s.name, r.metric, r.ok) for s in sections for r in s.rows if r.ok is not None]
    missed = [t for t in targets if not t[2]]
    print()
    print("targets: {} met, {} missed{}".format(len(targets) - len(missed), len(missed),
                                                ": " + "; ".join("{} {}".format(s, m) for s, m, _ in missed)
                                                if missed else ""))
    path = args.results / "{}.json".format(stamp)
    meta = {"run_id": run_id, "timestamp": stamp, "smoke": args.smoke, "sections": args.sections,
            "wakeproxy_args": list(args.wakeproxy_arg), "seconds": total,
            "host": {"cpus": os.cpu_count(), "kernel": platform.release()},
            "versions": _versions(), "interrupted": interrupted, "harness_broken": broken}
    write_json(path, meta, sections, ctx.problems)
    print("results: {}".format(path))
    if interrupted:
        return 130
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
