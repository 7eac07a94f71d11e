# -*- test-case-name: tests.test_headers -*-
"""
Tests for L{wakeproxy.http.headers}: the heads the relay sends, built from heads L{wakeproxy.http.wire} parsed.
Table-driven: each case is the raw head received and the header lines expected on the other side.
"""

from twisted.trial.unittest import SynchronousTestCase

from wakeproxy.http.headers import HOP_BY_HOP, is_origin_form, request_head, response_head
from wakeproxy.http.upstreampool import Upstream
from wakeproxy.http.wire import parse_request_head, parse_response_head


def _request(*lines: bytes, start: bytes = b"GET / HTTP/1.1") -> bytes:
    return b"\r\n".join((start,) + lines) + b"\r\n\r\n"


def _fields(head: bytes) -> list:
    """The header lines of a built head, without its first line and its blank line."""
    return head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]


class HopByHopTests(SynchronousTestCase):
    def test_constant(self):
        self.assertEqual(HOP_BY_HOP, frozenset({
            b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate", b"proxy-authorization",
            b"te", b"trailer", b"transfer-encoding", b"upgrade"}))


_FORWARDED = [b"X-Forwarded-For: 10.0.0.1", b"X-Forwarded-Proto: http", b"X-Forwarded-Host: h",
              b"Via: 1.1 wakeproxy"]


class RequestHeadTests(SynchronousTestCase):
    """(name, received lines, trusted, expected forwarded lines)."""

    cases = [
        ("plain", (b"Host: h", b"Accept: */*"), False, [b"Host: h", b"Accept: */*"] + _FORWARDED),
        ("order, case and duplicates kept", (b"Host: h", b"x-a: 1", b"X-B: 2", b"x-a: 3"), False,
         [b"Host: h", b"x-a: 1", b"X-B: 2", b"x-a: 3"] + _FORWARDED),
        ("hop-by-hop dropped", (b"Host: h", b"Connection: keep-alive", b"Keep-Alive: timeout=5", b"TE: trailers",
                                b"Trailer: X", b"Proxy-Authorization: Basic eA==", b"Proxy-Connection: x",
                                b"A: a"), False, [b"Host: h", b"A: a"] + _FORWARDED),
        ("Connection-nominated dropped", (b"Host: h", b"X-Secret: s", b"Connection: keep-alive, X-Secret",
                                          b"X-Public: p"), False, [b"Host: h", b"X-Public: p"] + _FORWARDED),
        ("nominations across Connection headers, any case", (b"Host: h", b"Connection: X-ONE", b"connection: x-two",
                                                             b"x-one: 1", b"X-Two: 2", b"X-Three: 3"), False,
         [b"Host: h", b"X-Three: 3"] + _FORWARDED),
        ("Host and Content-Length never nominable", (b"Host: h", b"Content-Length: 0", b"Connection: host, content-length"),
         False, [b"Host: h", b"Content-Length: 0"] + _FORWARDED),
        ("untrusted forwarding headers rebuilt", (b"Host: h", b"X-Forwarded-For: 1.2.3.4", b"X-Forwarded-Proto: https",
                                                  b"X-Forwarded-Host: evil", b"X-Forwarded-Port: 1", b"Forwarded: for=x",
                                                  b"X-Real-IP: 1.2.3.4"), False, [b"Host: h"] + _FORWARDED),
        ("trusted forwarding headers extended", (b"Host: h", b"X-Forwarded-For: 1.2.3.4, 5.6.7.8",
                                                 b"X-Forwarded-For: 9.9.9.9", b"X-Forwarded-Proto: https",
                                                 b"X-Forwarded-Host: front", b"X-Real-IP: 1.2.3.4"), True,
         [b"Host: h", b"X-Real-IP: 1.2.3.4", b"X-Forwarded-For: 1.2.3.4, 5.6.7.8, 9.9.9.9, 10.0.0.1",
          b"X-Forwarded-Proto: https", b"X-Forwarded-Host: front", b"Via: 1.1 wakeproxy"]),
        ("Via extended", (b"Host: h", b"Via: 1.0 fred, 1.1 p", b"Via: 2 q"), False,
         [b"Host: h"] + _FORWARDED[:3] + [b"Via: 1.0 fred, 1.1 p, 2 q, 1.1 wakeproxy"]),
        ("chunked restated", (b"Host: h", b"Transfer-Encoding: chunked"), False,
         [b"Host: h"] + _FORWARDED + [b"Transfer-Encoding: chunked"]),
        ("upgrade restated", (b"Host: h", b"Connection: Upgrade", b"Upgrade: websocket", b"Sec-WebSocket-Key: k"),
         False, [b"Host: h", b"Sec-WebSocket-Key: k"] + _FORWARDED + [b"Connection: upgrade", b"Upgrade: websocket"]),
        ("h2c stripped", (b"Host: h", b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c",
                          b"HTTP2-Settings: AAMAAABkAAQAAP__"), False, [b"Host: h"] + _FORWARDED),
        ("Expect kept", (b"Host: h", b"Content-Length: 3", b"Expect: 100-continue"), False,
         [b"Host: h", b"Content-Length: 3", b"Expect: 100-continue"] + _FORWARDED),
    ]

    def test_cases(self):
        for name, lines, trusted, expected in self.cases:
            head = parse_request_head(_request(*lines))
            built = request_head(head, b"/x", b"10.0.0.1", b"http", trusted)
            self.assertTrue(built.startswith(b"GET /x HTTP/1.1\r\n"), name)
            self.assertTrue(built.endswith(b"\r\n\r\n"), name)
            self.assertEqual(_fields(built), expected, name)

    def test_http10_without_host_gets_the_upstreams(self):
        head = parse_request_head(b"GET / HTTP/1.0\r\n\r\n")
        built = request_head(head, b"/", b"::1", b"https", False, Upstream("http", "127.0.0.1", 9001))
        self.assertEqual(_fields(built), [b"Host: 127.0.0.1:9001", b"X-Forwarded-For: ::1",
                                          b"X-Forwarded-Proto: https", b"Via: 1.1 wakeproxy"])


class ResponseHeadTests(SynchronousTestCase):
    """(name, received head, extra, framing, close, expected lines)."""

    cases = [
        ("plain", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n", (),
         b"Content-Length: 2\r\n", False, [b"Content-Type: text/plain", b"Via: 1.1 wakeproxy", b"Content-Length: 2"]),
        ("hop-by-hop and nominated dropped, cookies kept",
         b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Internal\r\nKeep-Alive: timeout=5\r\nX-Internal: 1\r\n"
         b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nTransfer-Encoding: chunked\r\n\r\n", (),
         b"Transfer-Encoding: chunked\r\n", False,
         [b"Set-Cookie: a=1", b"Set-Cookie: b=2", b"Via: 1.1 wakeproxy", b"Transfer-Encoding: chunked"]),
        ("Via extended, extra added, close", b"HTTP/1.1 404 Not Found\r\nVia: 1.1 traefik\r\n\r\n",
         ((b"X-Wakeproxy-Woke", b"1"),), b"", True,
         [b"Via: 1.1 traefik, 1.1 wakeproxy", b"X-Wakeproxy-Woke: 1", b"Connection: close"]),
    ]

    def test_cases(self):
        for name, raw, extra, framing, close, expected in self.cases:
            head = parse_response_head(raw)
            built = response_head(head, extra, framing, close)
            self.assertEqual(built.split(b"\r\n", 1)[0], raw.split(b"\r\n", 1)[0], name)
            self.assertTrue(built.endswith(b"\r\n\r\n"), name)
            self.assertEqual(_fields(built), expected, name)

    def test_empty_reason_gets_the_standard_phrase(self):
        head = parse_response_head(b"HTTP/1.1 204 \r\n\r\n")
        self.assertTrue(response_head(head, (), b"", False).startswith(b"HTTP/1.1 204 No Content\r\n"))

    def test_upgrade(self):
        head = parse_response_head(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                   b"Sec-WebSocket-Accept: x\r\n\r\n")
        self.assertEqual(_fields(response_head(head, (), b"", False, upgrade=b"websocket")),
                         [b"Sec-WebSocket-Accept: x", b"Via: 1.1 wakeproxy", b"Connection: Upgrade",
                          b"Upgrade: websocket"])


class IsOriginFormTests(SynchronousTestCase):
    """
    Tests for L{is_origin_form}.
    """

    def test_cases(self):
        cases = [
            (b"/", True),
            (b"/a/b?c=d&e", True),
            (b"/?", True),
            (b"/a%20b", True),
            (b"/caf\xc3\xa9", True),  # raw bytes >= 0x80 are tolerated
            (b"/http://evil/", True),
            (b"//x", True),  # a path starting with "//" is origin-form
            (b"//evil.com/x", True),
            (b"/a:b@c", True),
            (b"/~user/;p=1", True),
            (b"", False),
            (b"*", False),
            (b"http://evil/", False),
            (b"HTTPS://evil/x", False),
            (b"evil.com:443", False),
            (b"a/b", False),
            (b"?q", False),
            (b"/a b", False),
            (b"/a\tb", False),
            (b"/a\r\nHost: evil", False),
            (b"/a\x00", False),
            (b"/a\x7f", False),
            (b"/a#frag", False),
            (b" /a", False),
            (b"/a ", False),
        ]
        for uri, expected in cases:
            self.assertEqual(is_origin_form(uri), expected, uri)
