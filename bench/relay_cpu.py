"""
The relay's own Python work per warm request, measured in one process: no reactor, no sockets, no other
process competing for the caches, so the figure holds on a loaded machine where L{bench.cpu_per_request}
swings by ±15 %.

It builds the relay as the wire-level tests do (L{tests.relaywire.World}: dispatcher, waker, upstream
pool, relay factory on a memory reactor, in router mode here) and feeds one client connection and its
pooled upstream connection a wrk-like request and an nginx C{return 200} response, alternately, timing
C{time.process_time} over many rounds (best of five). What it leaves out: the reactor's per-event work
(epoll, Twisted's log-context wrapper, C{recv}/C{send}: about 2 x 2 µs here) and the kernel.

    .venv/bin/python -m bench.relay_cpu                      # this tree
    .venv/bin/python -m bench.relay_cpu --compare /tmp/main  # and another tree, alternately (A/B)
    .venv/bin/python -m bench.relay_cpu --profile            # plus cProfile's top 30 (tottime)
    .venv/bin/python -m bench.relay_cpu --instructions [--compare /tmp/main]   # CPU instructions instead

C{--instructions} counts the machine instructions per exchange under valgrind's cachegrind (needs the
C{valgrind} package): 2,500 exchanges minus 500, with hash seed 0, address randomisation off and the
garbage collector off, so the figure repeats exactly from run to run on a quiet machine (under load it
moves by a few per cent), where the µs figures swing by 10 %; use it to compare changes of a few per cent.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

__all__ = ["instructions", "main", "measure"]

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:20001\r\nCookie: instance=app\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 29 Nov 2026 20:23:18 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")


def _loop():
    """The relay with one warm client connection and its pooled upstream; a function running n exchanges."""
    from tests.relaywire import World
    from wakeproxy.http.upstreampool import Upstream

    world = World()
    world.dispatcher._upstream = Upstream("http", "127.0.0.1", 20002)  # router mode (--upstream)
    client = world.client()
    client.protocol.dataReceived(REQUEST)
    upstream = world.upstream()
    upstream.protocol.dataReceived(RESPONSE)
    if not client.received().endswith(b"\r\n\r\nok"):
        raise RuntimeError("the relay did not answer as expected: {!r}".format(client.received()[-300:]))
    to_relay, from_upstream = client.protocol.dataReceived, upstream.protocol.dataReceived
    sent, received = client.transport, upstream.transport

    def loop(n: int) -> None:
        for i in range(n):
            to_relay(REQUEST)
            from_upstream(RESPONSE)
            if not i & 255:
                sent.clear()
                received.clear()

    return loop


def measure(rounds: int = 5, n: int = 30000) -> float:
    """Best of C{rounds}: CPU µs per request of C{n} exchanges."""
    loop = _loop()
    loop(1000)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        loop(n)
        best = min(best, (time.process_time() - t0) / n * 1e6)
    return best


def _tree_env(tree: Path) -> dict:
    """The environment of a child process running C{tree}'s wakeproxy and tests (and this bench package)."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), str(Path(__file__).resolve().parents[1])]))


_IR_LOOP = ("import gc, sys; from bench.relay_cpu import _loop; loop = _loop(); loop(200); gc.collect(); "
            "gc.disable(); loop(int(sys.argv[1]))")


def instructions(tree: Path) -> int:
    """Instructions per warm exchange of C{tree}'s relay (cachegrind; deterministic, see the docstring)."""
    env = dict(_tree_env(tree), PYTHONHASHSEED="0")
    counts = []
    for n in (500, 2500):
        done = subprocess.run(["setarch", os.uname().machine, "-R", "valgrind", "--tool=cachegrind",
                               "--cache-sim=no", "--cachegrind-out-file=/dev/null", sys.executable, "-c", _IR_LOOP,
                               str(n)], cwd=tree, env=env, capture_output=True, text=True, timeout=900)
        found = [line for line in done.stderr.splitlines() if "I" in line and "refs:" in line]
        if done.returncode != 0 or not found:
            raise RuntimeError("cachegrind on {} failed: {}".format(tree, done.stderr[-500:]))
        counts.append(int(found[-1].split()[-1].replace(",", "")))
    return (counts[1] - counts[0]) // 2000


def _in(tree: Path) -> float:
    """The figure for another source tree (its wakeproxy and tests), in a child process."""
    env = _tree_env(tree)
    done = subprocess.run([sys.executable, "-c", "from bench.relay_cpu import measure; print(measure())"],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError("measuring {} failed: {}".format(tree, done.stderr[-500:]))
    return float(done.stdout.split()[-1])


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.relay_cpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--compare", type=Path, help="another source tree (with its tests/), measured alternately")
    p.add_argument("--repeat", type=int, default=3, help="alternations with --compare (default 3)")
    p.add_argument("--profile", action="store_true", help="also print cProfile's top 30 functions")
    p.add_argument("--instructions", action="store_true", help="instructions per exchange (cachegrind)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    here = Path.cwd()
    if args.instructions:
        own = instructions(here)
        print("relay instructions per warm request: {:,}".format(own), flush=True)
        if args.compare is not None:
            other = instructions(args.compare.resolve())
            print("{}: {:,} ({:.2f}x)".format(args.compare, other, own / other))
    elif args.compare is None:
        print("relay Python per warm request: {:.2f} µs".format(measure()))
    else:
        own, other = [], []
        for _ in range(args.repeat):
            own.append(_in(here))
            other.append(_in(args.compare.resolve()))
            print("this tree {:.2f} µs   {} {:.2f} µs".format(own[-1], args.compare, other[-1]), flush=True)
        print("best: this tree {:.2f} µs, other {:.2f} µs ({:.2f}x)".format(min(own), min(other),
                                                                            min(own) / min(other)))
    if args.profile:
        loop = _loop()
        profiler = cProfile.Profile()
        profiler.runcall(loop, 20000)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
