"""
An open-loop latency probe: GET requests on a fixed schedule (C{rate} a second, whatever the answers do),
each timed from the moment it was I{scheduled} to be sent to the end of its answer, so that a stall of the
server shows in the latency of every request it delayed (no coordinated omission, unlike a closed loop such
as C{wrk}, whose clients simply send less while the server is slow). Keep-alive connections from a pool of
C{connections}; a request that finds none free waits for one, and that wait counts.

Run it in its own process (its figures must not share a GIL with the load it measures):

    .venv/bin/python -m bench.openloop --port 8080 --path /status --cookie instance=x --rate 300 --seconds 5

It prints one line of JSON: requests sent, answers by status, errors, latency p50/p90/p99/max in ms, and
how late the probe itself sent (its own scheduling noise, to tell apart from the server's).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time

from bench.stats import percentile

__all__ = ["probe"]


async def _answer(reader: asyncio.StreamReader) -> int:
    """Read one response (Content-Length bodies only; what the probe asks for); return its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _probe(host: str, port: int, path: str, headers: dict, rate: float, seconds: float,
                 connections: int, timeout: float) -> dict:
    request = "GET {} HTTP/1.1\r\nHost: {}:{}\r\n{}\r\n".format(
        path, host, port, "".join("{}: {}\r\n".format(k, v) for k, v in headers.items())).encode()
    idle: asyncio.Queue = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await asyncio.open_connection(host, port))
    latencies: list[float] = []
    statuses: collections.Counter = collections.Counter()
    errors: collections.Counter = collections.Counter()
    lateness: list[float] = []

    async def one(scheduled: float) -> None:
        conn = await idle.get()
        reader, writer = conn
        try:
            writer.write(request)
            status = await asyncio.wait_for(_answer(reader), timeout)
        except Exception as e:
            errors[type(e).__name__] += 1
            writer.close()
            try:
                conn = await asyncio.open_connection(host, port)
            except OSError:
                conn = None
        else:
            statuses[status] += 1
            latencies.append(time.monotonic() - scheduled)
        if conn is not None:
            idle.put_nowait(conn)

    total = int(rate * seconds)
    began = time.monotonic() + 0.05
    tasks = []
    for i in range(total):
        scheduled = began + i / rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        lateness.append(max(0.0, time.monotonic() - scheduled))
        tasks.append(asyncio.ensure_future(one(scheduled)))
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait()[1].close()

    def pct(values: list, p: float) -> float:
        value = percentile(values, p)
        return -1.0 if value is None else round(value * 1000, 3)

    return {"rate": rate, "seconds": seconds, "sent": total, "statuses": dict(statuses), "errors": dict(errors),
            "p50_ms": pct(latencies, 50), "p90_ms": pct(latencies, 90), "p99_ms": pct(latencies, 99),
            "max_ms": pct(latencies, 100), "late_p99_ms": pct(lateness, 99), "late_max_ms": pct(lateness, 100)}


def probe(port: int, path: str = "/", headers: dict = None, rate: float = 300, seconds: float = 5,
          connections: int = 16, host: str = "127.0.0.1", timeout: float = 10) -> dict:
    """Run the probe in this process (see the module's docstring for why a separate one is better)."""
    return asyncio.run(_probe(host, port, path, headers or {}, rate, seconds, connections, timeout))


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--cookie", default=None)
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args(argv)
    headers = {"Cookie": args.cookie} if args.cookie else {}
    print(json.dumps(probe(args.port, args.path, headers, args.rate, args.seconds, args.connections, args.host)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
