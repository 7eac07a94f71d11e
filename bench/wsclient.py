"""
The benchmark's WebSocket clients (RFC 6455):

- L{handshake}: one handshake on a plain socket, timed from before the TCP connect to the end of the
  C{101} head, then (optionally) one echoed message to prove the tunnel carries frames;
- L{first_upgrade}: a tight readiness probe loop of handshakes (1 ms between attempts);
- L{echo_load}: C{n} connections each sending a message and waiting for its echo, for a while (asyncio,
  the C{websockets} library);
- L{idle_tunnels}: open many connections, hold them idle while the caller measures, check each still
  echoes, close them.

Failures are returned (status, error text, counts), never raised: a proxy that cannot tunnel is a
finding of the benchmark, not a harness error. The C{websockets} library is imported only when used.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import time
from dataclasses import dataclass
from typing import Callable, Optional

from .client import build_request, parse_head

__all__ = ["Handshake", "echo_load", "first_upgrade", "handshake", "idle_tunnels"]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MESSAGE = "wpbench echo 0123456789abcdef0123"  # 34 bytes of text


@dataclass
class Handshake:
    status: int  # 0: no HTTP answer at all
    seconds: float  # before TCP connect -> end of the response head
    error: Optional[str] = None
    echoed: Optional[bool] = None  # the message came back (None: not tried)


def _frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (masked), payload under 126 bytes."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def _read_frame(sock: socket.socket, buf: bytearray) -> tuple[int, bytes]:
    """(opcode, payload) of the next server frame (unmasked), reading more into C{buf} as needed."""
    def need(n: int) -> None:
        while len(buf) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed inside a frame")
            buf.extend(chunk)

    need(2)
    opcode, length = buf[0] & 0x0F, buf[1] & 0x7F
    pos = 2
    if length == 126:
        need(4)
        length, pos = int.from_bytes(buf[2:4], "big"), 4
    elif length == 127:
        need(10)
        length, pos = int.from_bytes(buf[2:10], "big"), 10
    need(pos + length)
    payload = bytes(buf[pos:pos + length])
    del buf[:pos + length]
    return opcode, payload


def handshake(port: int, path: str = "/ws", cookie: Optional[str] = None, timeout: float = 60.0,
              echo: bool = True) -> Handshake:
    """
    Connect, send a WebSocket handshake, read the answer's head; with C{echo} and a valid C{101}, send one
    text message and wait for it to come back, then close. Failures are returned in C{error}.
    """
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    data = build_request("GET", path, cookie, close=False, extra=(
        "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: " + key, "Sec-WebSocket-Version: 13"))
    t0 = time.perf_counter()
    t1 = None
    status = 0
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(data)
            buf = bytearray()
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("closed without a complete answer ({} bytes)".format(len(buf)))
                buf += chunk
            t1 = time.perf_counter()
            status, headers, offset = parse_head(buf)
            if status != 101:
                return Handshake(status, t1 - t0, "answered {} {!r}".format(status, bytes(buf[offset:offset + 200])))
            accept = base64.b64encode(hashlib.sha1((key + GUID).encode("ascii")).digest()).decode("ascii")
            if headers.get("sec-websocket-accept") != accept:
                return Handshake(status, t1 - t0, "101 with a wrong Sec-WebSocket-Accept {!r}".format(
                    headers.get("sec-websocket-accept")))
            if not echo:
                return Handshake(status, t1 - t0)
            del buf[:offset]
            s.sendall(_frame(0x1, MESSAGE.encode()))
            opcode, payload = _read_frame(s, buf)
            echoed = opcode == 0x1 and payload == MESSAGE.encode()
            s.sendall(_frame(0x8, (1000).to_bytes(2, "big")))
            return Handshake(status, t1 - t0, None if echoed else "echo: opcode {} {!r}".format(opcode, payload[:80]),
                             echoed)
    except (OSError, ValueError) as e:
        took = (t1 or time.perf_counter()) - t0
        return Handshake(status, took, "{}: {}".format(type(e).__name__, e))


def first_upgrade(port: int, path: str = "/ws", timeout: float = 30.0, pause: float = 0.001) -> float:
    """Handshake every C{pause} seconds until one answers C{101}; the C{perf_counter()} of that answer."""
    deadline = time.perf_counter() + timeout
    while True:
        h = handshake(port, path, timeout=2.0, echo=False)
        if h.status == 101 and h.error is None:
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError("127.0.0.1:{}{} gave no 101 within {:g}s (last: {})".format(
                port, path, timeout, h.error))
        time.sleep(pause)


# asyncio clients (websockets library)

def _why(e: BaseException) -> str:
    response = getattr(e, "response", None)
    status = getattr(response, "status_code", None)
    return "status {}".format(status) if status is not None else type(e).__name__


async def _open(port: int, path: str, cookie: Optional[str], timeout: float):
    from websockets.asyncio.client import connect
    headers = {"Cookie": "instance={}".format(cookie)} if cookie else None
    return await connect("ws://127.0.0.1:{}{}".format(port, path), additional_headers=headers, compression=None,
                         proxy=None, ping_interval=None, open_timeout=timeout, close_timeout=5,
                         user_agent_header="wpbench")


def _count(counts: dict, key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


async def _close_all(conns: list) -> None:
    await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)


async def _echo_load(port: int, connections: int, seconds: float, path: str, cookie: Optional[str],
                     timeout: float) -> dict:
    opened = await asyncio.gather(*(_open(port, path, cookie, timeout) for _ in range(connections)),
                                  return_exceptions=True)
    conns = [c for c in opened if not isinstance(c, BaseException)]
    failures: dict = {}
    for c in opened:
        if isinstance(c, BaseException):
            _count(failures, "open: " + _why(c))
    latencies: list = []
    deadline = time.perf_counter() + seconds

    async def loop(ws) -> None:
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                await ws.send(MESSAGE)
                got = await asyncio.wait_for(ws.recv(), timeout)
                if got != MESSAGE:
                    _count(failures, "wrong echo")
                    return
                latencies.append(time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - every failure is a counted finding
            _count(failures, "echo: " + _why(e))

    t0 = time.perf_counter()
    await asyncio.gather(*(loop(ws) for ws in conns))
    elapsed = time.perf_counter() - t0
    await _close_all(conns)
    return {"connections": connections, "opened": len(conns), "failures": failures, "latencies": latencies,
            "messages": len(latencies), "seconds": elapsed,
            "messages_per_s": len(latencies) / elapsed if conns and elapsed > 0 else 0.0}


def echo_load(port: int, connections: int, seconds: float, path: str = "/ws", cookie: Optional[str] = None,
              timeout: float = 10.0) -> dict:
    """
    Open C{connections} WebSockets, then on each send a message and wait for its echo, over and over, for
    C{seconds}: round-trip latencies (seconds), messages/s (all connections), failures by kind.
    """
    return asyncio.run(_echo_load(port, connections, seconds, path, cookie, timeout))


async def _idle(port: int, count: int, path: str, cookie: Optional[str], measure: Callable[[], object],
                batch: int, settle: float, timeout: float) -> dict:
    conns: list = []
    failures: dict = {}
    t0 = time.perf_counter()
    for i in range(0, count, batch):
        opened = await asyncio.gather(*(_open(port, path, cookie, timeout) for _ in range(min(batch, count - i))),
                                      return_exceptions=True)
        good = [c for c in opened if not isinstance(c, BaseException)]
        conns.extend(good)
        for c in opened:
            if isinstance(c, BaseException):
                _count(failures, "open: " + _why(c))
        if not good:  # the proxy refuses them all: do not wait out the timeout 1,000 times
            _count(failures, "gave up after a batch without one tunnel")
            break
    open_seconds = time.perf_counter() - t0
    await asyncio.sleep(settle)
    measured = measure()

    async def check(ws) -> bool:
        try:
            await ws.send(MESSAGE)
            return await asyncio.wait_for(ws.recv(), timeout) == MESSAGE
        except Exception as e:  # noqa: BLE001
            _count(failures, "idle echo: " + _why(e))
            return False

    alive = sum(await asyncio.gather(*(check(ws) for ws in conns)))
    await _close_all(conns)
    return {"count": count, "opened": len(conns), "alive": alive, "open_seconds": open_seconds,
            "measured": measured, "failures": failures}


def idle_tunnels(port: int, count: int, measure: Callable[[], object], path: str = "/ws",
                 cookie: Optional[str] = None, batch: int = 50, settle: float = 1.0, timeout: float = 10.0) -> dict:
    """
    Open C{count} WebSockets (C{batch} handshakes at a time, so that no listen backlog drops a SYN), leave
    them idle for C{settle} seconds, call C{measure()} (its result is returned as C{measured}), then send
    one message on each (C{alive}: how many echoed it) and close them all.
    """
    return asyncio.run(_idle(port, count, path, cookie, measure, batch, settle, timeout))
