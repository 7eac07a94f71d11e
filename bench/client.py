"""
The benchmark's HTTP clients, on plain sockets so that what is timed is the server, not a library:

- L{request}: one request (C{Connection: close}), timing send -> first response byte and -> last byte;
- L{first_ok}: a tight readiness probe loop (1 ms between attempts);
- L{keepalive}: back-to-back requests on one kept-alive connection that acknowledges at once;
- L{download} / L{upload}: bulk transfers with the throughput;
- L{herd}: many concurrent requests on pre-opened connections (asyncio).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Optional

__all__ = ["Response", "download", "first_ok", "herd", "keepalive", "parse_server_timing", "request", "try_request",
           "upload"]

RECV = 1 << 20


def build_request(method: str, path: str, cookie: Optional[str] = None, length: Optional[int] = None,
                  extra: tuple = (), close: bool = True) -> bytes:
    lines = ["{} {} HTTP/1.1".format(method, path), "Host: 127.0.0.1", "User-Agent: wpbench"]
    if close:
        lines.append("Connection: close")
    if cookie:
        lines.append("Cookie: instance={}".format(cookie))
    if length is not None:
        lines.append("Content-Length: {}".format(length))
        lines.append("Content-Type: application/octet-stream")
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class Response:
    status: int
    headers: dict = field(default_factory=dict)  # lower-case name -> last value
    body: bytes = b""
    ttfb: float = 0.0  # seconds from the request's first byte sent to the response's first byte
    total: float = 0.0  # ... to the end of the response (connection closed by the server)
    error: str = ""  # set (with status 0) by try_request when there was no HTTP response at all

    @property
    def server_timing(self) -> dict:
        return parse_server_timing(self.headers.get("server-timing", ""))


def parse_head(data: bytes) -> tuple[int, dict, int]:
    """(status, headers, offset of the body) of a response head at the start of C{data}."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise ValueError("incomplete response head: {!r}".format(bytes(data[:120])))
    lines = bytes(data[:end]).decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError("not an HTTP response: {!r}".format(lines[0][:120]))
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers, end + 4


def parse_server_timing(value: str) -> dict:
    """C{start;dur=12.3, health;dur=4.5, total;dur=16.8} -> {"start": 12.3, ...} (milliseconds)."""
    timings = {}
    for part in value.split(","):
        name, *params = [p.strip() for p in part.split(";")]
        for param in params:
            key, _, number = param.partition("=")
            if key == "dur" and name:
                try:
                    timings[name] = float(number)
                except ValueError:
                    pass
    return timings


def _dechunk(body: bytes) -> bytes:
    out, pos = bytearray(), 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            return bytes(out)
        size = int(body[pos:eol].split(b";")[0] or b"0", 16)
        if size == 0:
            return bytes(out)
        out += body[eol + 2:eol + 2 + size]
        pos = eol + 2 + size + 2


def request(port: int, path: str = "/", cookie: Optional[str] = None, method: str = "GET",
            timeout: float = 60.0) -> Response:
    """One request on a fresh connection (connected before the clock starts); read to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = build_request(method, path, cookie)
        t0 = time.perf_counter()
        s.sendall(data)
        first = s.recv(65536)
        t1 = time.perf_counter()
        if not first:
            raise ConnectionError("127.0.0.1:{} closed the connection without answering".format(port))
        buf = bytearray(first)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        t2 = time.perf_counter()
    status, headers, offset = parse_head(buf)
    body = bytes(buf[offset:])
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return Response(status, headers, body, t1 - t0, t2 - t0)


def try_request(port: int, path: str = "/", cookie: Optional[str] = None, method: str = "GET",
                timeout: float = 60.0) -> Response:
    """L{request}, but a failure without an HTTP response is returned as status 0 with C{error} set."""
    t0 = time.perf_counter()
    try:
        return request(port, path, cookie, method, timeout)
    except (OSError, ValueError) as e:
        took = time.perf_counter() - t0
        return Response(0, {}, b"", took, took, error="{}: {}".format(type(e).__name__, e))


def first_ok(port: int, path: str = "/status", timeout: float = 30.0, pause: float = 0.001) -> float:
    """
    Probe C{GET path} every C{pause} seconds until it answers 200; the C{perf_counter()} of that answer.
    A refused connection costs microseconds on loopback, so the lag after the app is ready is ~1 ms.
    """
    deadline = time.perf_counter() + timeout
    while True:
        try:
            if request(port, path, timeout=1.0).status == 200:
                return time.perf_counter()
        except (OSError, ValueError):
            pass
        if time.perf_counter() > deadline:
            raise TimeoutError("127.0.0.1:{}{} did not answer 200 within {:g}s".format(port, path, timeout))
        time.sleep(pause)


@dataclass
class KeepAlive:
    latencies: list  # seconds, send -> last byte of each 200 response
    statuses: dict  # status -> count
    error: Optional[str] = None


def keepalive(port: int, path: str = "/", cookie: Optional[str] = None, seconds: float = 2.0,
              max_requests: int = 2000, quickack: bool = True) -> KeepAlive:
    """
    Requests one after the other on one kept-alive connection for C{seconds} (at most C{max_requests}),
    each timed from send to its last byte. With C{quickack} the client sets C{TCP_QUICKACK} after every
    read, so it never delays an ACK: an upstream that writes head and body in two writes (Nagle) stalls
    this client no more than a fresh connection would; any stall left is the path's (a proxy's pool).
    Responses need a Content-Length or chunked framing. A failure ends the loop and lands in C{error}.
    """
    out = KeepAlive([], {})
    data = build_request("GET", path, cookie, close=False)
    deadline = time.perf_counter() + seconds
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def recv() -> bytes:
                chunk = s.recv(65536)
                if quickack:
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                if not chunk:
                    raise ConnectionError("closed by the server after {} responses".format(len(out.latencies)))
                return chunk

            if quickack:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            buf = bytearray()
            while len(out.latencies) < max_requests and time.perf_counter() < deadline:
                t0 = time.perf_counter()
                s.sendall(data)
                while b"\r\n\r\n" not in buf:
                    buf += recv()
                status, headers, offset = parse_head(buf)
                del buf[:offset]
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    while not buf.endswith(b"0\r\n\r\n"):
                        buf += recv()
                    buf.clear()
                elif "content-length" in headers:
                    length = int(headers["content-length"])
                    while len(buf) < length:
                        buf += recv()
                    del buf[:length]
                else:
                    raise ValueError("a response without Content-Length or chunked framing")
                t1 = time.perf_counter()
                out.statuses[status] = out.statuses.get(status, 0) + 1
                if status == 200:
                    out.latencies.append(t1 - t0)
                if headers.get("connection", "").lower() == "close":
                    raise ConnectionError("the server closed the connection (Connection: close)")
    except (OSError, ValueError) as e:
        out.error = "{}: {}".format(type(e).__name__, e)
    return out


# bulk transfers

class _ChunkCounter:
    """Counts the payload bytes of a chunked body fed in pieces (no copies of the payload)."""

    def __init__(self) -> None:
        self.payload = 0
        self.done = False
        self._data_left = 0
        self._crlf_left = 0
        self._line = b""

    def feed(self, data: bytes) -> None:
        pos, n = 0, len(data)
        while pos < n and not self.done:
            if self._data_left:
                take = min(self._data_left, n - pos)
                self.payload += take
                self._data_left -= take
                pos += take
                if not self._data_left:
                    self._crlf_left = 2
            elif self._crlf_left:
                take = min(self._crlf_left, n - pos)
                self._crlf_left -= take
                pos += take
            else:
                eol = data.find(b"\n", pos)
                if eol < 0:
                    self._line += data[pos:]
                    return
                line, self._line = self._line + data[pos:eol], b""
                pos = eol + 1
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.done = True
                else:
                    self._data_left = size


@dataclass
class Transfer:
    status: int
    nbytes: int  # payload bytes received (download) or sent (upload)
    seconds: float
    echoed: Optional[int] = None  # upload: the length the app says it read
    error: Optional[str] = None

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / self.seconds / 1e6 if self.seconds > 0 else 0.0


def download(port: int, size: int, cookie: Optional[str] = None, timeout: float = 300.0) -> Transfer:
    """C{GET /bytes/<size>}; MB/s over send -> last byte. A failure is returned in C{error}, never raised."""
    t0 = time.perf_counter()
    try:
        return _download(port, size, cookie, timeout)
    except (OSError, ValueError) as e:
        return Transfer(0, 0, time.perf_counter() - t0, error="{}: {}".format(type(e).__name__, e))


def _download(port: int, size: int, cookie: Optional[str], timeout: float) -> Transfer:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        t0 = time.perf_counter()
        s.sendall(build_request("GET", "/bytes/{}".format(size), cookie))
        head = bytearray()
        while b"\r\n\r\n" not in head:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the response head")
            head += chunk
        status, headers, offset = parse_head(head)
        rest = bytes(head[offset:])
        chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        counter = _ChunkCounter() if chunked else None
        got = 0
        error = None
        try:
            while True:
                if counter is not None:
                    counter.feed(rest)
                else:
                    got += len(rest)
                rest = s.recv(RECV)
                if not rest:
                    break
        except OSError as e:
            error = "{}: {}".format(type(e).__name__, e)
        t1 = time.perf_counter()
    nbytes = counter.payload if counter is not None else got
    if counter is not None and not counter.done and error is None:
        error = "chunked body ended without its last chunk"
    return Transfer(status, nbytes, t1 - t0, error=error)


def upload(port: int, size: int, cookie: Optional[str] = None, timeout: float = 300.0) -> Transfer:
    """C{POST /echo} with a generated body of C{size} bytes; MB/s over first byte sent -> response end."""
    t0 = time.perf_counter()
    try:
        return _upload(port, size, cookie, timeout)
    except (OSError, ValueError) as e:
        return Transfer(0, 0, time.perf_counter() - t0, error="{}: {}".format(type(e).__name__, e))


def _upload(port: int, size: int, cookie: Optional[str], timeout: float) -> Transfer:
    block = bytes(range(256)) * 4096  # 1 MiB
    error = None
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        t0 = time.perf_counter()
        s.sendall(build_request("POST", "/echo", cookie, length=size))
        sent = 0
        view = memoryview(block)
        try:
            while sent < size:
                n = min(len(block), size - sent)
                s.sendall(view[:n])
                sent += n
        except OSError as e:
            error = "sending stopped after {} bytes: {}".format(sent, e)
        buf = bytearray()
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except OSError as e:
            error = error or "{}: {}".format(type(e).__name__, e)
        t1 = time.perf_counter()
    try:
        status, headers, offset = parse_head(buf)
    except ValueError as e:
        return Transfer(0, sent, t1 - t0, error=error or str(e))
    body = bytes(buf[offset:])
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    echoed = None
    try:
        echoed = json.loads(body).get("length")
    except (ValueError, AttributeError):
        pass
    return Transfer(status, sent, t1 - t0, echoed=echoed, error=error)


# the herd

@dataclass
class HerdResult:
    statuses: dict  # status (or error name) -> count
    latencies: list  # seconds, successful exchanges (any status)
    connect_seconds: float
    wall_seconds: float


async def _herd(port: int, count: int, path: str, cookie: Optional[str], timeout: float,
                connect_batch: int) -> HerdResult:
    t_connect = time.perf_counter()
    conns = []
    for i in range(0, count, connect_batch):
        batch = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port)
                                       for _ in range(min(connect_batch, count - i))), return_exceptions=True)
        conns.extend(batch)
    connect_seconds = time.perf_counter() - t_connect
    data = build_request("GET", path, cookie)
    statuses: dict = {}
    latencies: list = []

    async def one(conn) -> None:
        if isinstance(conn, BaseException):
            key = "connect:" + type(conn).__name__
            statuses[key] = statuses.get(key, 0) + 1
            return
        reader, writer = conn
        t0 = time.perf_counter()
        try:
            writer.write(data)
            answer = await asyncio.wait_for(reader.read(), timeout)
            t1 = time.perf_counter()
            key = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else "no-response"
            if key != "no-response":
                latencies.append(t1 - t0)
        except asyncio.TimeoutError:
            key = "timeout"
        except (OSError, IndexError, ValueError) as e:
            key = "error:" + type(e).__name__
        finally:
            writer.close()
        statuses[key] = statuses.get(key, 0) + 1

    t_wall = time.perf_counter()
    await asyncio.gather(*(one(c) for c in conns))
    return HerdResult(statuses, latencies, connect_seconds, time.perf_counter() - t_wall)


def herd(port: int, count: int, path: str = "/status", cookie: Optional[str] = None, timeout: float = 120.0,
         connect_batch: int = 50) -> HerdResult:
    """
    Open C{count} connections (in batches, so that the listen backlog does not drop SYNs), then send one
    request on each at once and read every response; latency is per request, send -> response end.
    """
    return asyncio.run(_herd(port, count, path, cookie, timeout, connect_batch))
