# -*- test-case-name: tests.test_wire -*-
"""
HTTP/1.1 message framing (RFC 9112) for the relay, as plain functions and small state machines.

Heads are found by their blank line and parsed by C{httptools} (llhttp, the parser uvicorn uses); bodies
are framed here, so the bytes the relay forwards are exactly the bytes it received (chunk framing and
trailers included) and every message boundary is known to the byte:

  - L{parse_request_head} / L{parse_response_head}: one complete head -> L{RequestHead} /
    L{ResponseHead}, or L{WireError} with the status to answer (400, 431) and a sentence.
  - L{ChunkScanner}: walks a chunked body (sizes, extensions, trailers) without copying it; can also hand
    out the payload (for an HTTP/1.0 client, which cannot read chunked).
"""

from __future__ import annotations

from typing import Optional

import httptools

__all__ = [
    "ChunkError",
    "ChunkScanner",
    "RequestHead",
    "ResponseHead",
    "WireError",
    "chunk",
    "head_problem",
    "parse_request_head",
    "parse_response_head",
    "reason_phrase",
]

#: header fields in one head, at most (beyond: 431)
MAX_HEADERS = 100
#: request headers whose first value the proxy reads (noted while parsing, so nothing scans twice)
NOTED = frozenset({b"accept", b"user-agent", b"x-wakeproxy-status"})
#: longest chunk-size line (size, extensions) or trailer line accepted
MAX_CHUNK_LINE = 4096


class WireError(Exception):
    """A message that cannot be relayed: the status to answer and why, in one sentence."""

    def __init__(self, status: int, detail: str):
        Exception.__init__(self, detail)
        self.status = status
        self.detail = detail


class ChunkError(WireError):
    def __init__(self, detail: str):
        WireError.__init__(self, 400, detail)


class RequestHead:
    """
    A parsed request head.

    @ivar headers: C{(name, value)} byte pairs as received (order, case and duplicates kept).
    @ivar length: the Content-Length, C{-1} for a chunked body, C{0} for none.
    @ivar upgrade: the C{Upgrade} value when the client asks for one (C{Connection: upgrade}), else None.
    """

    __slots__ = ("method", "target", "version", "headers", "length", "keep_alive", "upgrade", "expect",
                 "host_count", "cookie", "host", "noted")

    def __init__(self, method: bytes, target: bytes, version: str, headers: list, length: int, keep_alive: bool,
                 upgrade: Optional[bytes], expect: bool, host_count: int, cookie: tuple, host: Optional[bytes],
                 noted: dict):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.length = length
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.expect = expect
        self.host_count = host_count
        self.cookie = cookie
        self.host = host
        #: first values of the headers in L{NOTED}, by lower-cased name (only those present)
        self.noted = noted


class ResponseHead:
    __slots__ = ("status", "reason", "headers", "length", "keep_alive", "chunked", "coding")

    def __init__(self, status: int, reason: bytes, headers: list, length: Optional[int], keep_alive: bool,
                 chunked: bool, coding: bytes = b"chunked"):
        self.status = status
        self.reason = reason
        self.headers = headers
        #: Content-Length, or None when absent
        self.length = length
        self.keep_alive = keep_alive
        self.chunked = chunked
        #: the Transfer-Encoding value (codings before the final chunked are passed on as they are)
        self.coding = coding


class _Collector:
    """Receives httptools' callbacks for one head."""

    __slots__ = ("url", "headers", "reason")

    def __init__(self):
        self.url = b""
        self.headers = []
        self.reason = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))


def parse_request_head(head: bytes) -> RequestHead:
    """C{head}: the bytes of one request head, up to and including its blank line."""
    collector = _Collector()
    parser = httptools.HttpRequestParser(collector)
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass  # an Upgrade (or CONNECT) head: parsed in full, the rest is not HTTP
    except httptools.HttpParserError as e:
        raise WireError(400, "the request is not valid HTTP/1.1: {}".format(_message(e)))
    headers = collector.headers
    if len(headers) > MAX_HEADERS:
        raise WireError(431, "the request has {} header fields; at most {} are accepted".format(
            len(headers), MAX_HEADERS))
    version = parser.get_http_version()
    if version not in ("1.1", "1.0"):
        raise WireError(505, "wakeproxy speaks HTTP/1.1 and HTTP/1.0, not HTTP/{}".format(version))
    length = 0
    hosts = 0
    host = None
    cookie = ()
    upgrade = None
    connection = b""
    expect = False
    coding = None
    noted = {}
    for name, value in headers:
        lower = name.lower()
        if lower in NOTED:
            noted.setdefault(lower, value)
        elif lower == b"cookie":
            cookie += (value,)
        elif lower == b"host":
            hosts += 1
            host = value
        elif lower == b"content-length":
            length = int(value)  # llhttp checked digits and duplicates
        elif lower == b"transfer-encoding":
            coding = value if coding is None else coding + b"," + value
        elif lower == b"connection":
            connection = connection + b"," + value.lower() if connection else value.lower()
        elif lower == b"upgrade":
            upgrade = value
        elif lower == b"expect":
            if value.strip().lower() == b"100-continue":
                expect = True
            else:
                raise WireError(417, "the only expectation wakeproxy knows is 100-continue, not {!r}".format(
                    value[:64].decode("latin-1")))
    if coding is not None:
        if version == "1.0":
            raise WireError(400, "an HTTP/1.0 request cannot use Transfer-Encoding")
        codings = [c.strip().lower() for c in coding.split(b",")]
        if codings != [b"chunked"]:
            raise WireError(400, "the only transfer coding accepted in a request is chunked, alone; got {!r}".format(
                coding[:64].decode("latin-1")))
        length = -1
    if version == "1.1" and hosts == 0:
        raise WireError(400, "an HTTP/1.1 request needs a Host header")
    if hosts > 1:
        raise WireError(400, "the request has more than one Host header")
    tokens = [t.strip() for t in connection.split(b",")] if connection else ()
    if upgrade is not None and (b"upgrade" not in tokens or upgrade.strip().lower() == b"h2c" or version == "1.0"):
        upgrade = None  # not nominated by Connection, or h2c: stripped, the request goes on as HTTP/1.1
    if version == "1.1":
        keep_alive = b"close" not in tokens
    else:
        keep_alive = False  # HTTP/1.0: one exchange per connection
    return RequestHead(parser.get_method(), collector.url, version, headers, length, keep_alive, upgrade, expect,
                       hosts, cookie, host, noted)


def head_problem(partial: bytes) -> Optional[WireError]:
    """What is already wrong with the start of a request head (a TLS hello, a bare-LF head), or None."""
    parser = httptools.HttpRequestParser(_Collector())
    try:
        parser.feed_data(partial)
    except httptools.HttpParserUpgrade:
        return None
    except httptools.HttpParserError as e:
        return WireError(400, "the request is not valid HTTP/1.1: {}".format(_message(e)))
    return None


def parse_response_head(head: bytes) -> ResponseHead:
    """C{head}: the bytes of one response head, up to and including its blank line."""
    collector = _Collector()
    parser = httptools.HttpResponseParser(collector)
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass
    except httptools.HttpParserError as e:
        raise WireError(502, "the upstream's response is not valid HTTP/1.1: {}".format(_message(e)))
    headers = collector.headers
    if len(headers) > MAX_HEADERS:
        raise WireError(502, "the upstream's response has {} header fields; at most {} are relayed".format(
            len(headers), MAX_HEADERS))
    length = None
    chunked = False
    coding = b""
    close = parser.get_http_version() != "1.1"
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-length":
            length = int(value)
        elif lower == b"transfer-encoding":
            coding = coding + b", " + value.strip() if coding else value.strip()
            chunked = coding.lower().endswith(b"chunked")
        elif lower == b"connection":
            tokens = [t.strip().lower() for t in value.split(b",")]
            if b"close" in tokens:
                close = True
            elif b"keep-alive" in tokens:
                close = False
    if chunked:
        length = None
    return ResponseHead(parser.get_status_code(), collector.reason, headers, length, not close, chunked,
                        coding or b"chunked")


def _message(error: Exception) -> str:
    text = str(error)
    return text[0].lower() + text[1:] if text else type(error).__name__


class ChunkScanner:
    """
    Follows a chunked body through any split of its bytes. C{feed(data)} returns how many bytes of
    C{data} belong to the body; C{done} is set once the last chunk and the trailers have passed. With
    C{decode}, the payload bytes are collected in C{payload} (a list the caller empties).
    """

    __slots__ = ("done", "payload_bytes", "_left", "_line", "_state", "_decode", "payload")

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self, decode: bool = False):
        self.done = False
        self.payload_bytes = 0
        self._left = 0
        self._line = b""
        self._state = self._SIZE
        self._decode = decode
        self.payload: list = []

    def feed(self, data: bytes) -> int:
        i = 0
        n = len(data)
        while i < n and not self.done:
            state = self._state
            if state == self._DATA:
                take = min(self._left, n - i)
                if self._decode:
                    self.payload.append(data[i:i + take])
                i += take
                self._left -= take
                if self._left == 0:
                    self._state = self._DATA_END
                continue
            end = data.find(b"\n", i)
            if end < 0:
                self._line += data[i:]
                if len(self._line) > MAX_CHUNK_LINE:
                    raise ChunkError("a chunk-size or trailer line is longer than {} bytes".format(MAX_CHUNK_LINE))
                return n
            line = self._line + data[i:end]
            self._line = b""
            i = end + 1
            if len(line) > MAX_CHUNK_LINE:
                raise ChunkError("a chunk-size or trailer line is longer than {} bytes".format(MAX_CHUNK_LINE))
            if line.endswith(b"\r"):
                line = line[:-1]
            else:
                raise ChunkError("a chunked body line does not end in CRLF")
            if state == self._SIZE:
                size = line.split(b";", 1)[0].strip(b" \t")
                if not size or len(size) > 16 or size.strip(b"0123456789abcdefABCDEF"):
                    raise ChunkError("bad chunk size {!r}".format(line[:32].decode("latin-1")))
                self._left = int(size, 16)
                self.payload_bytes += self._left
                self._state = self._DATA if self._left else self._TRAILER
            elif state == self._DATA_END:
                if line:
                    raise ChunkError("a chunk is longer than its size says")
                self._state = self._SIZE
            else:  # trailer section: field lines until an empty line
                if not line:
                    self.done = True
        return i


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body holding C{data} (not empty)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


_REASONS = {
    100: b"Continue", 101: b"Switching Protocols", 103: b"Early Hints", 200: b"OK", 201: b"Created",
    202: b"Accepted", 204: b"No Content", 206: b"Partial Content", 301: b"Moved Permanently", 302: b"Found",
    303: b"See Other", 304: b"Not Modified", 307: b"Temporary Redirect", 308: b"Permanent Redirect",
    400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
    405: b"Method Not Allowed", 408: b"Request Timeout", 413: b"Content Too Large", 417: b"Expectation Failed",
    429: b"Too Many Requests", 431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
    502: b"Bad Gateway", 503: b"Service Unavailable", 504: b"Gateway Timeout", 505: b"HTTP Version Not Supported",
}


def reason_phrase(status: int) -> bytes:
    return _REASONS.get(status, b"Status")
