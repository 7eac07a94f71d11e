"""
What the fault tests of L{tests.test_faults_engine_docker} share: polling under a deadline, wakeproxy's
metrics and fd counts, a wave of clients that vanish while held, a warm load on threads.
"""

import asyncio
import os
import socket
import struct
import threading
import time

import requests

__all__ = ["ENGINE_POOLS", "WarmLoad", "metric", "non_unix_fds", "percentile", "poll", "runs", "vanishing_wave"]

#: idle engine connections wakeproxy may keep beyond its baseline: the Docker SDK keeps one connection pool per
#: URL (per container and action), the 25 most recently used (docker.constants.DEFAULT_NUM_POOLS), so a few
#: concurrent wakes leave ~4 more keep-alive unix sockets each; bounded, not a leak
ENGINE_POOLS = 25


def percentile(values: list, p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


def metric(server, name: str) -> float:
    """The sum of a metric's samples on wakeproxy's /metrics."""
    text = requests.get(server.api_url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def non_unix_fds(pid: int) -> int:
    """
    How many of the process's fds are not unix sockets (engine connections): its TCP sockets, listening or
    connected, whatever their state, and its files. The fds are listed before the unix socket table is
    read, so a unix socket closed in between counts once too many, never too few.
    """
    targets = []
    for fd in os.listdir("/proc/{}/fd".format(pid)):
        try:
            targets.append(os.readlink("/proc/{}/fd/{}".format(pid, fd)))
        except OSError:
            continue
    with open("/proc/net/unix") as f:
        unix = {line.split()[6] for line in f.readlines()[1:] if len(line.split()) > 6}
    return sum(1 for t in targets if not (t.startswith("socket:[") and t[8:-1] in unix))


def poll(what: str, check, timeout: float, interval: float = 0.05):
    """Call C{check} until it returns something true; return it (AssertionError after C{timeout})."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("{}: not within {}s".format(what, timeout))
        time.sleep(interval)


async def vanishing_wave(port: int, count: int, name: str, first: int, held, timeout: float,
                          body: bool = False) -> dict:
    """
    Open C{count} connections, send one request on each (C{GET /vanish/<i>}; with C{body}, C{POST
    /vanish/<i>} announcing 100 bytes and sending 10 of them), wait until C{held()} is true, then reset
    them all (SO_LINGER 0). Returns how many connected and whether any connection got an answer before
    the reset (it must not: it is held).
    """
    loop = asyncio.get_running_loop()
    conns = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(count)),
                                 return_exceptions=True)
    ok = [c for c in conns if not isinstance(c, BaseException)]
    for i, (_, writer) in enumerate(ok):
        writer.write("{} /vanish/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: instance={}\r\n{}\r\n{}".format(
            "POST" if body else "GET", first + i, name, "Content-Length: 100\r\n" if body else "",
            "0123456789" if body else "").encode())
    deadline = loop.time() + timeout
    while not await loop.run_in_executor(None, held):
        if loop.time() > deadline:
            break
        await asyncio.sleep(0.05)
    answered = sum(1 for reader, _ in ok if reader._buffer or reader.at_eof())
    linger = struct.pack("ii", 1, 0)
    for _, writer in ok:
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        writer.transport.abort()
    await asyncio.sleep(0)
    return {"connected": len(ok), "errors": len(conns) - len(ok), "answered": answered}


class WarmLoad:
    """Requests to one instance, one after another on each of C{clients} threads, until L{stop}."""

    def __init__(self, server, name: str, clients: int = 4, timeout: float = 10):
        self.results: list = []  # (started, ended, status or error name)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(server.proxy_url, name, timeout), daemon=True)
                         for _ in range(clients)]
        for thread in self._threads:
            thread.start()

    def _run(self, url: str, name: str, timeout: float) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    r = session.get(url + "/", headers={"Cookie": "instance={}".format(name)}, timeout=timeout)
                    outcome = r.status_code
                    woke = r.headers.get("x-wakeproxy-woke")
                except requests.RequestException as e:
                    outcome, woke = type(e).__name__, None
                self.results.append((t0, time.monotonic(), outcome, woke))

    def stop(self) -> list:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        return self.results


def runs(instances, *names: str, expected=None, timeout: float = 5) -> tuple:
    """
    How many times each app began listening (its "listening on" log lines) and stopped ("stopping ("):
    C{((listened, stopped), ...)} per name. Not the engine's start events: it keeps only its last 256
    events, which other tests on a shared engine push out within a minute. With C{expected}, poll until
    the counts equal it (the app writes its log lines asynchronously) for up to C{timeout} seconds.
    """
    def count() -> tuple:
        logs = [instances.logs(name) for name in names]
        return tuple((log.count("listening on "), log.count("stopping (")) for log in logs)

    deadline = time.monotonic() + timeout
    counts = count()
    while expected is not None and counts != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        counts = count()
    return counts
