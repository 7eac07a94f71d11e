# -*- test-case-name: tests.test_relay -*-
"""
Wire-level tests of the proxy listener's relay (L{wakeproxy.http.relay}, L{wakeproxy.http.upstreampool},
L{wakeproxy.http.dispatch}): clients and upstreams are protocols on C{StringTransport}s, time is a
C{MemoryReactorClock} and the once-a-second sweep is called by hand (L{tests.relaywire}).

L{RelayTableTests} runs a table of exchanges (client bytes in, scripted upstream responses, checks on what
each side received); the other classes take the cases that need steps: keep-alive and the pool,
pipelining order, timeouts, held requests while an instance wakes, upstream slots, activity and tunnels.
"""

from __future__ import annotations

import re

from twisted.internet.error import ConnectionLost
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.trial.unittest import SynchronousTestCase

from tests.relaywire import CLOSE, RESET, World, chunked, read_requests, read_responses, request, response
from wakeproxy.http.relay import PIPELINE_BUFFER, Timeouts
from wakeproxy.http.wsframes import close_frame

PROBLEM = b"application/problem+json"
WS_KEY = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
WS_ACCEPT = b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
WS_REQUEST = request(b"GET /ws", b"Connection: Upgrade", b"Upgrade: websocket", WS_KEY, b"Sec-WebSocket-Version: 13")
WS_101 = response(b"101 Switching Protocols", b"Upgrade: websocket", b"Connection: Upgrade", WS_ACCEPT)


def ws_frame(opcode: int, payload: bytes, masked: bool) -> bytes:
    """A small WebSocket frame (clients mask, servers do not)."""
    if not masked:
        return bytes((0x80 | opcode, len(payload))) + payload
    key = b"\x01\x02\x03\x04"
    return bytes((0x80 | opcode, 0x80 | len(payload))) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


CLIENT_TEXT = ws_frame(0x1, b"hello", masked=True)
CLIENT_PING = ws_frame(0x9, b"p", masked=True)
SERVER_TEXT = ws_frame(0x1, b"echo", masked=False)
SERVER_PONG = ws_frame(0xA, b"p", masked=False)

CHUNKED_BODY = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\nX-Other: 2\r\n\r\n"
CHUNKED_RESPONSE_BODY = chunked(b"abc", b"defgh" * 3, trailers=(b"Expires: never", b"X-Sum: 9"))

HYGIENE_REQUEST = request(
    b"GET /h", b"Connection: keep-alive, X-Drop-Me", b"Keep-Alive: timeout=5", b"TE: trailers",
    b"Proxy-Authorization: Basic eDp5", b"Proxy-Connection: keep-alive", b"Trailer: X-Sum", b"X-Drop-Me: 1",
    b"X-Keep: yes", b"Upgrade: websocket")
FORWARDING_REQUEST = request(
    b"GET /f", b"X-Forwarded-For: 6.6.6.6, 7.7.7.7", b"X-Forwarded-For: 8.8.8.8", b"X-Forwarded-Host: evil.test",
    b"X-Forwarded-Proto: https", b"X-Forwarded-Port: 443", b"Forwarded: for=6.6.6.6", b"X-Real-IP: 6.6.6.6",
    b"Via: 1.0 edge")


def case(name, client, upstream=(), options=None, peer="127.0.0.1", **expect):
    """
    One row: C{client} bytes (or a tuple of packets), the upstream's script (bytes to send, L{CLOSE}, L{RESET}),
    World C{options}, and what to expect (see L{RelayTableTests.check}).
    """
    return name, client if isinstance(client, tuple) else (client,), tuple(upstream), options or {}, peer, expect


def refused(name, client, status, options=None, **expect):
    """A request wakeproxy answers itself with problem+json and closes the connection; nothing goes upstream."""
    expect.setdefault("connects", 0)
    expect.setdefault("closed", "closed")
    return case(name, client, (), options, statuses=[status], problem=True, has=[(0, b"Connection", b"close")],
                **expect)


OK_HELLO = response(body=b"hello")

CASES = [
    # forwarding, framing and keep-alive
    case("get with content-length", request(b"GET /a?b=1"), [OK_HELLO],
         statuses=[200], bodies=[b"hello"], closed="open", connects=1, sent=[(b"GET", b"/a?b=1")],
         has=[(0, b"Content-Length", b"5"), (0, b"Via", b"1.1 wakeproxy"), (0, b"Connection", None),
              (0, b"X-Wakeproxy-Woke", None)],
         sent_has=[(0, b"Host", b"example.test"), (0, b"Cookie", b"instance=app"), (0, b"Content-Length", None),
                   (0, b"Transfer-Encoding", None)],
         sent_version=b"HTTP/1.1", idle=1),
    case("hop-by-hop and Connection-nominated headers are not forwarded", HYGIENE_REQUEST, [OK_HELLO],
         statuses=[200],
         sent_has=[(0, b"Connection", None), (0, b"Keep-Alive", None), (0, b"TE", None),
                   (0, b"Proxy-Authorization", None), (0, b"Proxy-Connection", None), (0, b"Trailer", None),
                   (0, b"X-Drop-Me", None), (0, b"Upgrade", None), (0, b"X-Keep", b"yes"),
                   (0, b"X-Forwarded-For", b"127.0.0.1"), (0, b"X-Forwarded-Proto", b"http"),
                   (0, b"X-Forwarded-Host", b"example.test"), (0, b"Via", b"1.1 wakeproxy")]),
    case("Connection cannot nominate Host or Content-Length",
         request(b"POST /n", b"Connection: Host, Content-Length", b"Content-Length: 3", body=b"abc"),
         [OK_HELLO], statuses=[200],
         sent_has=[(0, b"Host", b"example.test"), (0, b"Content-Length", b"3")], sent_bodies=[b"abc"]),
    case("an untrusted peer's forwarding headers are replaced", FORWARDING_REQUEST, [OK_HELLO], peer="10.1.2.3",
         statuses=[200],
         sent_has=[(0, b"X-Forwarded-For", b"10.1.2.3"), (0, b"X-Forwarded-Host", b"example.test"),
                   (0, b"X-Forwarded-Proto", b"http"), (0, b"X-Forwarded-Port", None), (0, b"Forwarded", None),
                   (0, b"X-Real-IP", None), (0, b"Via", b"1.0 edge, 1.1 wakeproxy")]),
    case("a trusted peer's X-Forwarded-For is extended", FORWARDING_REQUEST, [OK_HELLO], peer="10.1.2.3",
         options=dict(trusted=lambda ip: ip == "10.1.2.3"),
         statuses=[200],
         sent_has=[(0, b"X-Forwarded-For", b"6.6.6.6, 7.7.7.7, 8.8.8.8, 10.1.2.3"),
                   (0, b"X-Forwarded-Port", b"443"), (0, b"Forwarded", b"for=6.6.6.6"), (0, b"X-Real-IP", b"6.6.6.6"),
                   (0, b"Via", b"1.0 edge, 1.1 wakeproxy")]),
    case("response hop-by-hop headers are dropped, Via extended, duplicates kept", request(b"GET /r"),
         [response(b"200 OK", b"Connection: keep-alive, X-Secret", b"Keep-Alive: timeout=5", b"X-Secret: s",
                   b"Proxy-Authenticate: Basic", b"Upgrade: foo", b"Trailer: X-Sum", b"Via: 1.1 app",
                   b"Set-Cookie: a=1", b"Set-Cookie: b=2", b"X-Public: p", body=b"ok")],
         statuses=[200], bodies=[b"ok"],
         has=[(0, b"Connection", None), (0, b"Keep-Alive", None), (0, b"X-Secret", None),
              (0, b"Proxy-Authenticate", None), (0, b"Upgrade", None), (0, b"Trailer", None),
              (0, b"Via", b"1.1 app, 1.1 wakeproxy"), (0, b"X-Public", b"p"), (0, b"Content-Length", b"2")],
         set_cookies=[b"a=1", b"b=2"]),
    case("HTTP/1.0 client: one exchange, then close", request(b"GET /old", version=b"HTTP/1.0"), [OK_HELLO],
         statuses=[200], bodies=[b"hello"], has=[(0, b"Connection", b"close"), (0, b"Content-Length", b"5")],
         closed="closed", sent_version=b"HTTP/1.1", idle=1),
    case("HTTP/1.0 Connection: keep-alive is not honoured",
         request(b"GET /old", b"Connection: keep-alive", version=b"HTTP/1.0"), [OK_HELLO],
         statuses=[200], has=[(0, b"Connection", b"close")], closed="closed"),
    case("Connection: close from an HTTP/1.1 client", request(b"GET /c", b"Connection: close"), [OK_HELLO],
         statuses=[200], has=[(0, b"Connection", b"close")], closed="closed",
         sent_has=[(0, b"Connection", None)], idle=1),
    case("Content-Length request body forwarded exactly",
         request(b"POST /up", b"Content-Length: 11", b"Content-Type: text/plain", body=b"hello world"),
         [response(b"201 Created", body=b"")],
         statuses=[201], sent=[(b"POST", b"/up")], sent_bodies=[b"hello world"],
         sent_has=[(0, b"Content-Length", b"11"), (0, b"Transfer-Encoding", None)], closed="open", idle=1),
    case("chunked request body with extensions and trailers forwarded exactly",
         request(b"POST /up", b"Transfer-Encoding: chunked", body=CHUNKED_BODY), [OK_HELLO],
         statuses=[200], sent_raw=[CHUNKED_BODY], sent_bodies=[b"hello world"],
         sent_has=[(0, b"Transfer-Encoding", b"chunked"), (0, b"Content-Length", None)],
         sent_trailers=[(b"X-Checksum: abc", b"X-Other: 2")], closed="open", idle=1),
    case("chunked request body in pieces", (
        request(b"POST /up", b"Transfer-Encoding: chunked") + CHUNKED_BODY[:7],
        CHUNKED_BODY[7:20], CHUNKED_BODY[20:]), [OK_HELLO],
         statuses=[200], sent_raw=[CHUNKED_BODY]),
    case("chunked response with trailers passed on to an HTTP/1.1 client", request(b"GET /t"),
         [response(b"200 OK", b"Transfer-Encoding: chunked") + CHUNKED_RESPONSE_BODY],
         statuses=[200], raw=[CHUNKED_RESPONSE_BODY], bodies=[b"abc" + b"defgh" * 3],
         trailers=[(b"Expires: never", b"X-Sum: 9")],
         has=[(0, b"Transfer-Encoding", b"chunked"), (0, b"Content-Length", None)], closed="open", idle=1),
    case("chunked response in pieces", request(b"GET /t"),
         [response(b"200 OK", b"Transfer-Encoding: chunked") + CHUNKED_RESPONSE_BODY[:4],
          CHUNKED_RESPONSE_BODY[4:9], CHUNKED_RESPONSE_BODY[9:-3], CHUNKED_RESPONSE_BODY[-3:]],
         statuses=[200], raw=[CHUNKED_RESPONSE_BODY], closed="open", idle=1),
    case("chunked response de-chunked for an HTTP/1.0 client", request(b"GET /t", version=b"HTTP/1.0"),
         [response(b"200 OK", b"Transfer-Encoding: chunked") + CHUNKED_RESPONSE_BODY[:6],
          CHUNKED_RESPONSE_BODY[6:]],
         statuses=[200], raw=[b"abc" + b"defgh" * 3],
         has=[(0, b"Transfer-Encoding", None), (0, b"Content-Length", None), (0, b"Connection", b"close")],
         closed="closed", idle=1),
    case("close-delimited response re-chunked for an HTTP/1.1 client", request(b"GET /cd"),
         [response(b"200 OK", b"Content-Type: text/plain") + b"abc", b"defg", CLOSE],
         statuses=[200], bodies=[b"abcdefg"], raw=[b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"],
         has=[(0, b"Transfer-Encoding", b"chunked"), (0, b"Content-Length", None), (0, b"Connection", None)],
         closed="open", idle=0),
    case("HTTP/1.0 upstream's close-delimited response re-chunked", request(b"GET /cd"),
         [response(b"200 OK", version=b"HTTP/1.0") + b"abc", CLOSE],
         statuses=[200], raw=[b"3\r\nabc\r\n0\r\n\r\n"], closed="open"),
    case("after a close-delimited response the next request takes a new upstream connection",
         request(b"GET /cd") + request(b"GET /next"), [response(b"200 OK") + b"abc", CLOSE, OK_HELLO],
         statuses=[200, 200], bodies=[b"abc", b"hello"], connects=2, closed="open", idle=1),
    case("close-delimited response passed as it is, with close, to an HTTP/1.0 client",
         request(b"GET /cd", version=b"HTTP/1.0"), [response(b"200 OK") + b"abc", b"defg", CLOSE],
         statuses=[200], raw=[b"abcdefg"],
         has=[(0, b"Transfer-Encoding", None), (0, b"Content-Length", None), (0, b"Connection", b"close")],
         closed="closed"),
    case("100 Continue relayed",
         request(b"PUT /f", b"Expect: 100-continue", b"Content-Length: 4", body=b"data"),
         [response(b"100 Continue"), response(b"204 No Content")],
         statuses=[100, 204], sent_has=[(0, b"Expect", b"100-continue")], sent_bodies=[b"data"], closed="open"),
    case("103 Early Hints relayed", request(b"GET /page"),
         [response(b"103 Early Hints", b"Link: </style.css>; rel=preload"), OK_HELLO],
         statuses=[103, 200], has=[(0, b"Link", b"</style.css>; rel=preload")], bodies=[None, b"hello"]),
    case("interim responses are not sent to an HTTP/1.0 client", request(b"GET /page", version=b"HTTP/1.0"),
         [response(b"103 Early Hints", b"Link: </a>"), response(b"100 Continue"), OK_HELLO],
         statuses=[200], bodies=[b"hello"]),
    case("HEAD: Content-Length kept, no body, the next response framed right",
         request(b"HEAD /h") + request(b"GET /after"),
         [response(b"200 OK", b"Content-Length: 5"), response(body=b"after")],
         statuses=[200, 200], bodies=[b"", b"after"], has=[(0, b"Content-Length", b"5")],
         sent=[(b"HEAD", b"/h"), (b"GET", b"/after")], closed="open", connects=1),
    case("HEAD with a chunked response: no body",
         request(b"HEAD /h") + request(b"GET /after"),
         [response(b"200 OK", b"Transfer-Encoding: chunked"), response(body=b"after")],
         statuses=[200, 200], bodies=[b"", b"after"], connects=1),
    case("204: no body", request(b"DELETE /x") + request(b"GET /after"),
         [response(b"204 No Content", b"X-A: 1"), response(body=b"after")],
         statuses=[204, 200], bodies=[b"", b"after"],
         has=[(0, b"Content-Length", None), (0, b"Transfer-Encoding", None), (0, b"X-A", b"1")], connects=1),
    case("304: Content-Length kept, no body", request(b"GET /c", b"If-None-Match: \"x\"") + request(b"GET /after"),
         [response(b"304 Not Modified", b"ETag: \"x\"", b"Content-Length: 10"), response(body=b"after")],
         statuses=[304, 200], bodies=[b"", b"after"], has=[(0, b"Content-Length", b"10"), (0, b"ETag", b"\"x\"")],
         connects=1),
    case("POST with Content-Length: 0", request(b"POST /empty", b"Content-Length: 0"), [OK_HELLO],
         statuses=[200], sent_bodies=[b""], sent_has=[(0, b"Content-Length", b"0")], closed="open", idle=1),
    case("Content-Length: 0 response", request(b"GET /z"), [response(body=b"")],
         statuses=[200], has=[(0, b"Content-Length", b"0")], bodies=[b""], closed="open", idle=1),
    case("an upstream's Connection: close ends that upstream connection, not the client's", request(b"GET /z"),
         [response(b"200 OK", b"Connection: close", body=b"bye")],
         statuses=[200], bodies=[b"bye"], has=[(0, b"Connection", None)], closed="open", idle=0,
         upstream_state="closed"),
    case("an upstream's HTTP/1.0 response is not pooled", request(b"GET /z"),
         [response(b"200 OK", body=b"x", version=b"HTTP/1.0")], statuses=[200], idle=0, closed="open"),
    case("bytes after the response: the upstream connection is not reused", request(b"GET /z"),
         [response(body=b"abc") + b"junk"], statuses=[200], bodies=[b"abc"], idle=0, closed="open"),
    case("the upstream answers before the request body is complete",
         (request(b"POST /big", b"Content-Length: 10", body=b"abc"),),
         [response(b"413 Content Too Large", body=b"no")],
         statuses=[413], bodies=[b"no"], closed="closed", upstream_state="closed", idle=0),

    # pipelining
    case("three pipelined requests, responses in order",
         request(b"GET /one") + request(b"GET /two") + request(b"GET /three"),
         [response(body=b"one"), response(body=b"two"), response(body=b"three")],
         statuses=[200, 200, 200], bodies=[b"one", b"two", b"three"],
         sent=[(b"GET", b"/one"), (b"GET", b"/two"), (b"GET", b"/three")], connects=1, closed="open"),
    case("pipelined after a body",
         request(b"POST /p", b"Content-Length: 3", body=b"abc") + request(b"POST /q", b"Transfer-Encoding: chunked",
                                                                          body=chunked(b"de")) + request(b"GET /r"),
         [response(body=b"1"), response(body=b"2"), response(body=b"3")],
         statuses=[200, 200, 200], bodies=[b"1", b"2", b"3"], sent_bodies=[b"abc", b"de", b""],
         sent=[(b"POST", b"/p"), (b"POST", b"/q"), (b"GET", b"/r")]),
    case("pipelined after Connection: close: the rest is not read",
         request(b"GET /one", b"Connection: close") + request(b"GET /two"), [response(body=b"one")],
         statuses=[200], sent=[(b"GET", b"/one")], closed="closed"),
    case("a bad request after a good one: answered in order, then closed",
         request(b"GET /one") + request(b"GET /two", host=None), [response(body=b"one")],
         statuses=[200, 400], bodies=[b"one", None], sent=[(b"GET", b"/one")], closed="closed", problem=True),

    # refusals
    refused("Content-Length with Transfer-Encoding",
            request(b"POST /", b"Content-Length: 5", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"), 400),
    refused("two different Content-Lengths",
            request(b"POST /", b"Content-Length: 5", b"Content-Length: 6", body=b"hello!"), 400),
    refused("transfer coding gzip, chunked",
            request(b"POST /", b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"), 400),
    refused("transfer coding chunked, gzip",
            request(b"POST /", b"Transfer-Encoding: chunked, gzip", body=b"0\r\n\r\n"), 400),
    refused("two Host headers", request(b"GET /", b"Host: other.test"), 400),
    refused("no Host on HTTP/1.1", request(b"GET /", host=None), 400),
    refused("absolute-form target", request(b"GET http://example.test/"), 400),
    refused("authority-form target", request(b"CONNECT example.test:443"), 400),
    refused("asterisk-form target", request(b"OPTIONS *"), 400),
    refused("garbage", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", 400),
    refused("head over 64 KiB", request(b"GET /", b"X-Big: " + b"x" * (64 * 1024)), 431),
    refused("head over --max-head-bytes before its end arrived", b"GET / HTTP/1.1\r\nX-Big: " + b"x" * 2000, 431,
            options=dict(max_head=1024)),
    refused("more than 100 header fields", request(b"GET /", *[b"X-F%d: v" % i for i in range(100)]), 431),
    refused("Expect other than 100-continue", request(b"POST /", b"Expect: 200-ok", b"Content-Length: 1",
                                                     body=b"x"), 417),
    case("TRACE: 405, the connection stays usable", request(b"TRACE /") + request(b"GET /after"),
         [response(body=b"after")],
         statuses=[405, 200], problem=True, has=[(0, b"Allow", b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")],
         sent=[(b"GET", b"/after")], closed="open"),
    case("a bad chunk size in the request body: 400 and both connections closed",
         request(b"POST /up", b"Transfer-Encoding: chunked", body=b"5\r\nhello\r\nzz\r\n"),
         statuses=[400], problem=True, has=[(0, b"Connection", b"close")], closed="closed",
         upstream_state="aborted", connects=1),
    case("a chunk without its CRLF in the request body",
         (request(b"POST /up", b"Transfer-Encoding: chunked"), b"5\r\nhelloX\r\n"),
         statuses=[400], problem=True, closed="closed", upstream_state="aborted"),
    refused("--max-body: a declared Content-Length over it, from the head alone",
            request(b"POST /up", b"Content-Length: 11"), 413, options=dict(max_body=10)),
    case("--max-body: a chunked body passing it", request(b"POST /up", b"Transfer-Encoding: chunked",
                                                          body=b"6\r\n123456\r\n5\r\n12345\r\n"),
         options=dict(max_body=10), statuses=[413], problem=True, closed="closed", upstream_state="aborted"),
    case("--max-body: a body of exactly the limit passes", request(b"POST /up", b"Content-Length: 10",
                                                                   body=b"0123456789"),
         [OK_HELLO], options=dict(max_body=10), statuses=[200], sent_bodies=[b"0123456789"]),

    # upstream failures
    case("upstream closes before the response head: 502", request(b"GET /"), [CLOSE],
         statuses=[502], problem=True, closed="closed"),
    case("upstream resets before the response head: 502", request(b"GET /"), [RESET],
         statuses=[502], problem=True, closed="closed"),
    case("upstream sends garbage: 502", request(b"GET /"), [b"SSH-2.0-OpenSSH_9.6\r\n\r\n"],
         statuses=[502], problem=True, closed="closed", upstream_state="aborted"),
    case("upstream's head too large: 502", request(b"GET /"), [b"HTTP/1.1 200 OK\r\nX: " + b"x" * 70000],
         statuses=[502], problem=True, closed="closed", upstream_state="aborted"),
    case("upstream closes inside a Content-Length body: the client connection is aborted", request(b"GET /"),
         [response(b"200 OK", b"Content-Length: 10") + b"abc", CLOSE],
         statuses=[200], truncated=True, closed="aborted"),
    case("upstream closes inside a chunked body: aborted", request(b"GET /"),
         [response(b"200 OK", b"Transfer-Encoding: chunked") + b"3\r\nabc\r\n", CLOSE],
         statuses=[200], truncated=True, closed="aborted"),
    case("upstream sends a bad chunk: aborted", request(b"GET /"),
         [response(b"200 OK", b"Transfer-Encoding: chunked") + b"3\r\nabc\r\nxyz\r\n"],
         statuses=[200], truncated=True, closed="aborted", upstream_state="aborted"),

    # upgrades
    case("WebSocket: 101 relayed, then raw bytes both ways", WS_REQUEST + CLIENT_TEXT, [WS_101 + SERVER_TEXT],
         statuses=[101], has=[(0, b"Connection", b"Upgrade"), (0, b"Upgrade", b"websocket"),
                              (0, b"Sec-WebSocket-Accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")],
         tail=SERVER_TEXT, sent_tail=CLIENT_TEXT, closed="open",
         sent_has=[(0, b"Connection", b"upgrade"), (0, b"Upgrade", b"websocket"),
                   (0, b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="), (0, b"Sec-WebSocket-Version", b"13")]),
    case("WebSocket refused by the upstream: an ordinary exchange",
         WS_REQUEST + request(b"GET /after"), [response(b"426 Upgrade Required", body=b"no"), OK_HELLO],
         statuses=[426, 200], bodies=[b"no", b"hello"], closed="open", connects=1),
    case("h2c upgrade stripped: the request goes on as HTTP/1.1",
         request(b"GET /", b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c", b"HTTP2-Settings: AAMAAABkAAQ"),
         [OK_HELLO], statuses=[200], bodies=[b"hello"], closed="open",
         sent_has=[(0, b"Upgrade", None), (0, b"Connection", None), (0, b"HTTP2-Settings", None)]),
    case("Upgrade without Connection: upgrade is ignored", request(b"GET /", b"Upgrade: websocket"), [OK_HELLO],
         statuses=[200], sent_has=[(0, b"Upgrade", None), (0, b"Connection", None)], closed="open"),

    # wakeproxy's own answers
    case("unknown instance: 404, the connection stays usable", request(b"GET /", cookie=b"instance=nope"),
         statuses=[404], problem=True, closed="open", connects=0, has=[(0, b"Connection", None)]),
    case("unknown instance, HEAD: no body", request(b"HEAD /", cookie=b"instance=nope"),
         statuses=[404], bodies=[b""], closed="open", connects=0),
    case("unknown instance with an unread body: 404 and close",
         request(b"POST /", b"Content-Length: 5", cookie=b"instance=nope"),
         statuses=[404], problem=True, closed="closed", has=[(0, b"Connection", b"close")], connects=0),
    case("no instance, a browser: 302 home", request(b"GET /", b"Accept: text/html", cookie=None),
         statuses=[302], has=[(0, b"Location", b"/home")], closed="open", connects=0),
    case("status header: the loading page's poll, answered here", request(b"GET /", b"X-Wakeproxy-Status: 1"),
         statuses=[200], json=[(0, "instance", "app"), (0, "ready", True)], connects=0, closed="open"),
]


def _methods(data: bytes) -> list:
    return re.findall(rb"(?m)^([A-Z]+) \S+ HTTP/1\.[01]\r$", data)


class RelayTableTests(SynchronousTestCase):
    """Each row of L{CASES} in a fresh world; every failing row is reported."""

    def test_cases(self):
        self.assertGreaterEqual(len(CASES), 40)
        self.assertEqual(len({c[0] for c in CASES}), len(CASES), "case names are unique")
        failures = []
        for row in CASES:
            name = row[0]
            try:
                self.run_case(*row)
            except Exception as e:
                failures.append("{}: {}: {}".format(name, type(e).__name__, e))
            logged = self.flushLoggedErrors()
            if logged:
                failures.append("{}: logged {}".format(name, [f.getErrorMessage() for f in logged]))
        if failures:
            self.fail("{} of {} cases failed:\n".format(len(failures), len(CASES)) + "\n".join(failures))

    def run_case(self, name, packets, script, options, peer, expect):
        world = World(**options)
        try:
            client = world.client(peer)
            for packet in packets:
                client.send(packet)
            world.connect()
            for item in script:
                end = world.active()
                if item == CLOSE:
                    end.close()
                elif item == RESET:
                    end.reset()
                else:
                    end.send(item)
                world.connect()
            self.check(world, client, b"".join(packets), expect)
        finally:
            world.cleanup()

    def check(self, world, client, sent_by_client, expect):
        """
        What a row may expect. Of the client: C{statuses} (1xx included), C{bodies} (payload), C{raw} (body
        bytes as framed), C{trailers}, C{has} ((index, name, value or None for absent)), C{set_cookies},
        C{json} ((index, key, value)), C{problem} (every 4xx/5xx is problem+json), C{truncated}, C{tail}
        (bytes after a 101), C{closed} (C{open}, C{closed} or C{aborted}), C{methods}. Of the upstream side:
        C{connects}, C{sent} ((method, target)), C{sent_version}, C{sent_bodies}, C{sent_raw},
        C{sent_trailers}, C{sent_has}, C{sent_tail}, C{upstream_state} (of the last connection), C{idle}
        (pooled connections).
        """
        received = client.received()
        responses, tail = read_responses(received, expect.get("methods") or _methods(sent_by_client))
        got = [r.status for r in responses]
        self.assertEqual(got, expect["statuses"], received[:600])
        if not expect.get("truncated"):
            self.assertTrue(all(r.complete for r in responses), "a response is truncated")
        else:
            self.assertFalse(responses[-1].complete, "the last response should be cut short")
        for i, r in enumerate(responses):
            self.assertEqual(r.start[0], b"HTTP/1.1")
            if expect.get("problem") and r.status >= 400:
                self.assertEqual(r.header(b"Content-Type"), PROBLEM)
                doc = r.json()
                self.assertEqual(doc["status"], r.status)
                self.assertTrue(doc["detail"])
                self.assertEqual(r.header(b"Content-Length"), b"%d" % len(r.body))
        for key, attribute in (("bodies", "body"), ("raw", "raw"), ("trailers", "trailers")):
            if key in expect:
                for i, value in enumerate(expect[key]):
                    if value is not None:
                        self.assertEqual(getattr(responses[i], attribute), value, "{} of response {}".format(key, i))
        for i, name, value in expect.get("has", ()):
            self.assertEqual(responses[i].header(name), value, "{!r} in response {}".format(name, i))
        if "set_cookies" in expect:
            self.assertEqual(responses[0].values(b"set-cookie"), expect["set_cookies"])
        for i, key, value in expect.get("json", ()):
            self.assertEqual(responses[i].json()[key], value)
        if "tail" in expect:
            self.assertEqual(tail, expect["tail"])
        self.assertEqual(client.state, expect.get("closed", client.state), "the client connection")
        if "connects" in expect:
            self.assertEqual(world.connects, expect["connects"], "connectTCP calls")
        for end in world.upstreams:
            self.assertEqual((end.host, end.port, end.timeout), ("127.0.0.1", 9001, 5.0))
        sent = world.sent()
        if "sent" in expect:
            self.assertEqual([(m.method, m.target) for m in sent], expect["sent"])
        if "sent_version" in expect:
            self.assertEqual({m.start[2] for m in sent}, {expect["sent_version"]})
        for key, attribute in (("sent_bodies", "body"), ("sent_raw", "raw"), ("sent_trailers", "trailers")):
            if key in expect:
                self.assertEqual([getattr(m, attribute) for m in sent], expect[key], key)
        for i, name, value in expect.get("sent_has", ()):
            self.assertEqual(sent[i].header(name), value, "{!r} sent upstream in request {}".format(name, i))
        if "sent_tail" in expect:
            self.assertEqual(read_requests(world.upstreams[-1].received())[1], expect["sent_tail"])
        if "upstream_state" in expect:
            self.assertEqual(world.upstreams[-1].state, expect["upstream_state"], "the upstream connection")
        if "idle" in expect:
            self.assertEqual(world.pool.idle_count(), expect["idle"], "idle pooled connections")


class _WorldCase(SynchronousTestCase):
    def world(self, **options) -> World:
        world = World(**options)
        self.addCleanup(world.cleanup)
        return world


class KeepAliveTests(_WorldCase):
    """The pooled upstream connection, reuse, staleness and connection failures."""

    def test_second_request_reuses_the_pooled_connection(self):
        world = self.world()
        client = world.client()
        client.send(request(b"GET /one"))
        upstream = world.upstream()
        upstream.send(response(body=b"one"))
        self.assertEqual(world.pool.idle_count(), 1)
        client.send(request(b"GET /two"))
        self.assertEqual(world.connects, 1, "no second connectTCP")
        self.assertEqual([m.target for m in upstream.requests()], [b"/one", b"/two"])
        upstream.send(response(body=b"two"))
        self.assertEqual([r.body for r in client.responses()], [b"one", b"two"])
        other = world.client()
        other.send(request(b"GET /three"))
        self.assertEqual(world.connects, 1, "another client gets the same pooled connection")
        upstream.send(response(body=b"three"))
        self.assertEqual(other.response().body, b"three")

    def test_new_connection_after_the_upstream_closed(self):
        world = self.world()
        client = world.client()
        client.send(request(b"GET /one"))
        first = world.upstream()
        first.send(response(b"200 OK", b"Connection: close", body=b"one"))
        self.assertEqual(first.state, "closed")
        client.send(request(b"GET /two"))
        second = world.upstream()
        second.send(response(body=b"two"))
        self.assertEqual([r.body for r in client.responses()], [b"one", b"two"])

    def test_idle_connections_closed_after_30s(self):
        world = self.world()
        client = world.client()
        client.send(request(b"GET /one"))
        upstream = world.upstream()
        upstream.send(response(body=b"one"))
        world.pool.start()
        self.addCleanup(world.pool.stop)
        world.reactor.advance(25)
        self.assertEqual(upstream.state, "open")
        world.reactor.advance(10)
        self.assertEqual(upstream.state, "closed")
        world.settle()
        self.assertEqual(world.pool.idle_count(), 0)

    def test_bytes_from_an_idle_connection_close_it(self):
        world = self.world()
        client = world.client()
        client.send(request(b"GET /one"))
        upstream = world.upstream()
        upstream.send(response(body=b"one"))
        upstream.send(b"HTTP/1.1 200 OK\r\n")
        self.assertEqual(upstream.state, "closed")
        self.assertEqual(world.pool.idle_count(), 0)
        client.send(request(b"GET /two"))
        self.assertEqual(world.connects, 2)

    def pooled(self, world):
        """A client whose first exchange left its upstream connection in the pool."""
        client = world.client()
        client.send(request(b"GET /one"))
        upstream = world.upstream()
        upstream.send(response(body=b"one"))
        client.transport.clear()
        return client, upstream

    def test_stale_pooled_connection_retried_once_without_a_body(self):
        world = self.world()
        client, stale = self.pooled(world)
        client.send(request(b"GET /two"))
        self.assertEqual(world.connects, 1)
        stale.close()  # the upstream had closed its idle connection: the request met the FIN
        fresh = world.upstream()
        self.assertEqual([m.target for m in fresh.requests()], [b"/two"])
        fresh.send(response(body=b"two"))
        self.assertEqual(client.response().body, b"two")
        self.assertEqual(client.state, "open")

    def test_stale_retry_happens_once(self):
        world = self.world()
        client, stale = self.pooled(world)
        client.send(request(b"GET /two"))
        stale.reset()
        world.upstream().close()
        self.assertEqual(world.connects, 2, "one retry only")
        answer = client.response()
        self.assertEqual(answer.status, 502)
        self.assertEqual(answer.header(b"Content-Type"), PROBLEM)

    def test_stale_connection_not_retried_with_a_body(self):
        world = self.world()
        client, stale = self.pooled(world)
        client.send(request(b"POST /two", b"Content-Length: 3", body=b"abc"))
        self.assertEqual(stale.requests()[-1].body, b"abc")
        stale.close()
        self.assertEqual(world.connects, 1, "a request with a body is not sent twice")
        self.assertEqual(client.response().status, 502)
        self.assertEqual(client.state, "closed")

    def test_fresh_connection_closing_is_not_retried(self):
        world = self.world()
        client = world.client()
        client.send(request(b"GET /"))
        world.upstream().close()
        self.assertEqual(world.connects, 1)
        self.assertEqual(client.response().status, 502)

    def test_connect_failure_502(self):
        world = self.world()
        client = world.client()
        client.send(request(b"GET /"))
        self.assertEqual(world.reactor.tcpClients[-1][:2], ("127.0.0.1", 9001))
        self.assertEqual(world.reactor.tcpClients[-1][3], 5.0, "connect timeout")
        world.refuse()
        answer = client.response()
        self.assertEqual(answer.status, 502)
        self.assertEqual(answer.header(b"Content-Type"), PROBLEM)
        self.assertIn("did not accept the connection", answer.json()["detail"])
        self.assertEqual(client.state, "closed")

    def test_connect_timeout_502(self):
        world = self.world()
        client = world.client()
        client.send(request(b"GET /"))
        world.refuse(reason=ConnectTimeout())
        self.assertEqual(client.response().status, 502)

    def test_client_gone_while_connecting_leaves_the_connection_in_the_pool(self):
        world = self.world()
        client = world.client()
        client.send(request(b"GET /"))
        client.lose()
        upstream = world.upstream()
        self.assertEqual(upstream.received(), b"", "nothing is sent for a client that left")
        self.assertEqual(world.pool.idle_count(), 1)
        self.assertEqual(world.waker.describe("app")["inflight"], 0)

    def test_client_gone_mid_response_aborts_the_upstream(self):
        world = self.world()
        client = world.client()
        client.send(request(b"GET /"))
        upstream = world.upstream()
        upstream.send(response(b"200 OK", b"Content-Length: 100") + b"partial")
        client.lose(ConnectionLost())
        self.assertEqual(upstream.state, "aborted")
        self.assertEqual(world.pool.idle_count(), 0)
        self.assertEqual(world.waker.describe("app")["inflight"], 0)

    def test_backpressure_both_ways(self):
        """
        Each transport has a streaming producer for its lifetime: a full client buffer stops reading the
        current exchange's upstream, a full upstream buffer stops reading the client; nothing stays paused
        once the exchange is over.
        """
        world = self.world()
        client = world.client()
        client.send(request(b"POST /up", b"Content-Length: 100", body=b"x" * 10))
        upstream = world.upstream()
        self.assertTrue(client.transport.streaming)
        self.assertIs(upstream.transport.producer, upstream.protocol)
        self.assertFalse(client.paused)
        upstream.transport.producer.pauseProducing()  # the upstream cannot take more of the body
        self.assertTrue(client.paused)
        upstream.transport.producer.resumeProducing()
        self.assertFalse(client.paused)
        client.transport.producer.pauseProducing()  # the client cannot take more of the response
        self.assertEqual(upstream.transport.producerState, "paused")
        client.transport.producer.resumeProducing()
        self.assertEqual(upstream.transport.producerState, "producing")
        client.transport.producer.pauseProducing()  # paused again, and the exchange ends meanwhile
        upstream.transport.producer.pauseProducing()
        client.send(b"y" * 90)
        upstream.send(response(body=b"done"))
        self.assertEqual(upstream.transport.producerState, "producing", "pooled connections are read")
        self.assertFalse(client.paused, "the next request is read")
        self.assertEqual(upstream.requests()[0].body, b"x" * 10 + b"y" * 90)

    def test_request_body_split_anywhere(self):
        """Head and body cut at every point: the upstream receives the same bytes."""
        for framing, body in ((b"Content-Length: 11", b"hello world"),
                              (b"Transfer-Encoding: chunked", CHUNKED_BODY)):
            data = request(b"POST /up", framing, body=body) + request(b"GET /next")
            for cut in range(1, len(data)):
                world = World()
                try:
                    client = world.client()
                    client.send(data[:cut])
                    world.connect()
                    client.send(data[cut:])
                    world.connect()
                    upstream = world.upstreams[0]
                    self.assertEqual(upstream.requests()[0].raw, body, cut)
                    upstream.send(response(body=b"1"))
                    upstream.send(response(body=b"2"))
                    self.assertEqual([m.target for m in upstream.requests()], [b"/up", b"/next"], cut)
                    self.assertEqual([r.body for r in client.responses()], [b"1", b"2"], cut)
                finally:
                    world.cleanup()

    def test_unrequested_101_is_a_502(self):
        world = self.world()
        client = world.client()
        client.send(request(b"GET /"))
        world.upstream().send(response(b"101 Switching Protocols", b"Upgrade: h2c", b"Connection: Upgrade"))
        self.assertEqual(client.response().status, 502)

    def test_reset_inside_a_close_delimited_body_aborts(self):
        world = self.world()
        client = world.client()
        client.send(request(b"GET /"))
        upstream = world.upstream()
        upstream.send(response(b"200 OK") + b"partial")
        upstream.reset()
        self.assertEqual(client.state, "aborted")

    def test_forwarded_request_always_has_a_host(self):
        world = self.world()
        client = world.client()
        client.send(request(b"GET /", version=b"HTTP/1.0", host=None))
        sent = world.upstream().requests()[0]
        self.assertEqual(sent.start[2], b"HTTP/1.1")
        self.assertIsNotNone(sent.header(b"Host"))


class PipeliningTests(_WorldCase):
    def test_second_request_waits_for_the_first_response(self):
        world = self.world()
        client = world.client()
        client.send(request(b"GET /one") + request(b"GET /two"))
        upstream = world.upstream()
        self.assertEqual([m.target for m in upstream.requests()], [b"/one"])
        upstream.send(response(b"200 OK", b"Content-Length: 7") + b"on")
        self.assertEqual([m.target for m in upstream.requests()], [b"/one"], "not before the first body ended")
        upstream.send(b"e-one")
        self.assertEqual(world.connects, 1)
        self.assertEqual([m.target for m in upstream.requests()], [b"/one", b"/two"])
        upstream.send(response(body=b"two"))
        self.assertEqual([r.body for r in client.responses()], [b"one-one", b"two"])

    def test_each_pipelined_request_selects_its_instance(self):
        world = self.world()
        world.runtime.add_managed("other", labels={"wakeproxy.port": "9002"}, state="running")
        world.make_ready("other")
        client = world.client()
        client.send(request(b"GET /a") + request(b"GET /b", cookie=b"instance=other")
                    + request(b"GET /c", cookie=b"instance=nope"))
        first = world.upstream()
        first.send(response(body=b"a"))
        second = world.upstream()
        self.assertEqual(second.port, 9002)
        self.assertEqual([m.target for m in second.requests()], [b"/b"])
        second.send(response(body=b"b"))
        self.assertEqual([r.status for r in client.responses()], [200, 200, 404])

    def test_pipelined_request_to_a_sleeping_instance_waits_in_order(self):
        world = self.world()
        world.runtime.add_managed("other", labels={"wakeproxy.port": "9002"})
        client = world.client()
        client.send(request(b"GET /b", cookie=b"instance=other") + request(b"GET /a"))
        self.assertEqual(world.connects, 0, "held: the second request waits behind it")
        world.plan.probes[-1].callback(True)
        world.upstream().send(response(body=b"b"))
        world.upstream().send(response(body=b"a"))
        responses = client.responses()
        self.assertEqual([r.body for r in responses], [b"b", b"a"])
        self.assertEqual(responses[0].header(b"X-Wakeproxy-Woke"), b"1")
        self.assertIsNone(responses[1].header(b"X-Wakeproxy-Woke"))

    def test_pipeline_buffer_is_bounded(self):
        world = self.world(max_head=4 * PIPELINE_BUFFER)
        client = world.client()
        client.send(request(b"GET /one"))
        upstream = world.upstream()
        self.assertFalse(client.paused)
        client.send(request(b"GET /more", b"X-Pad: " + b"p" * PIPELINE_BUFFER))
        self.assertTrue(client.paused, "reading pauses while the buffered requests exceed the bound")
        upstream.send(response(body=b"one"))
        self.assertFalse(client.paused)
        self.assertEqual(upstream.requests()[-1].target, b"/more")


class TimeoutTests(_WorldCase):
    """The once-a-second sweep: head, body, keep-alive and upstream timeouts."""

    def test_head_timeout_408(self):
        world = self.world()
        client = world.client()
        client.send(b"GET / HTTP/1.1\r\nHost: exa")
        world.tick(15)  # a timeout fires after T full ticks: between T and T+1 seconds, never early
        client.send(b"mple.test\r\n")
        self.assertEqual(client.received(), b"")
        world.tick(1)
        answer = client.response()
        self.assertEqual(answer.status, 408)
        self.assertEqual(answer.header(b"Connection"), b"close")
        self.assertEqual(answer.header(b"Content-Type"), PROBLEM)
        self.assertEqual(client.state, "closed")
        self.assertEqual(world.connects, 0)

    def test_head_in_time(self):
        world = self.world(timeouts=Timeouts(head=3))
        client = world.client()
        client.send(b"GET / HTTP/1.1\r\n")
        world.tick(2)
        client.send(b"Host: example.test\r\nCookie: instance=app\r\n\r\n")
        world.upstream().send(response(body=b"ok"))
        world.tick(2)
        self.assertEqual(client.response().status, 200)
        self.assertEqual(client.state, "open")

    def test_body_timeout_408(self):
        world = self.world()
        client = world.client()
        client.send(request(b"POST /up", b"Content-Length: 10", body=b"abc"))
        upstream = world.upstream()
        world.tick(30)
        client.send(b"def")
        world.tick(60)
        self.assertEqual(client.received(), b"")
        world.tick(1)
        answer = client.response()
        self.assertEqual(answer.status, 408)
        self.assertEqual(answer.header(b"Content-Type"), PROBLEM)
        self.assertEqual(client.state, "closed")
        self.assertEqual(upstream.state, "aborted")
        self.assertEqual(world.waker.describe("app")["inflight"], 0)

    def test_body_timeout_after_the_response_started_aborts(self):
        world = self.world(timeouts=Timeouts(body=5))
        client = world.client()
        client.send(request(b"POST /up", b"Content-Length: 10", body=b"abc"))
        upstream = world.upstream()
        upstream.send(response(b"200 OK", b"Transfer-Encoding: chunked") + b"3\r\nabc\r\n")
        world.tick(6)
        self.assertEqual(client.state, "aborted")
        self.assertEqual(upstream.state, "aborted")

    def test_keepalive_timeout(self):
        world = self.world()
        client = world.client()
        client.send(request(b"GET /"))
        world.upstream().send(response(body=b"ok"))
        world.tick(75)
        self.assertEqual(client.state, "open")
        world.tick(1)
        self.assertEqual(client.state, "closed")
        self.assertEqual(len(client.responses()), 1, "closed without a word")

    def test_idle_new_connection_closes_like_keepalive(self):
        world = self.world(timeouts=Timeouts(keepalive=5))
        client = world.client()
        world.tick(6)
        self.assertEqual(client.state, "closed")
        self.assertEqual(client.received(), b"")

    def test_upstream_timeout_504(self):
        world = self.world(timeouts=Timeouts(upstream=3))
        client = world.client()
        client.send(request(b"GET /slow"))
        upstream = world.upstream()
        world.tick(3)
        self.assertEqual(client.received(), b"")
        world.tick(1)
        answer = client.response()
        self.assertEqual(answer.status, 504)
        self.assertEqual(answer.header(b"Content-Type"), PROBLEM)
        self.assertEqual(upstream.state, "aborted")
        self.assertEqual(client.state, "closed")

    def test_upstream_timeout_only_until_the_head(self):
        world = self.world(timeouts=Timeouts(upstream=3))
        client = world.client()
        client.send(request(b"GET /slow"))
        upstream = world.upstream()
        world.tick(2)
        upstream.send(response(b"200 OK", b"Content-Length: 6") + b"abc")
        world.tick(10)
        upstream.send(b"def")
        self.assertEqual(client.response().body, b"abcdef")

    def test_no_upstream_timeout_by_default(self):
        world = self.world()
        client = world.client()
        client.send(request(b"GET /slow"))
        upstream = world.upstream()
        world.tick(600)
        self.assertEqual(client.received(), b"")
        upstream.send(response(body=b"late"))
        self.assertEqual(client.response().body, b"late")

    def test_upstream_timeout_counts_after_the_body(self):
        world = self.world(timeouts=Timeouts(upstream=3))
        client = world.client()
        client.send(request(b"POST /up", b"Content-Length: 10", body=b"a"))
        upstream = world.upstream()
        for _ in range(9):
            world.tick(1)
            client.send(b"b")  # a slow upload, one byte a second
        self.assertEqual(client.received(), b"")
        self.assertEqual(upstream.requests()[0].body, b"a" + b"b" * 9)

    def test_body_timeout_counts_from_the_attach(self):
        world = self.world(state="exited", ready=False, wake_timeout=300)
        client = world.client()
        client.send(request(b"PUT /up", b"Content-Length: 5", b"Expect: 100-continue"))
        world.tick(61)
        world.plan.probes[-1].callback(True)
        upstream = world.upstream()
        self.assertEqual(upstream.requests()[0].header(b"Expect"), b"100-continue")
        world.tick(1)
        self.assertEqual(client.received(), b"")
        upstream.send(response(b"100 Continue"))
        client.send(b"hello")
        upstream.send(response(b"201 Created", body=b""))
        self.assertEqual([r.status for r in client.responses()], [100, 201])


class GarbageTests(_WorldCase):
    def test_garbage_without_a_blank_line_is_never_forwarded(self):
        """
        Bytes that never make a CRLF CRLF (bare-LF heads, a TLS hello on a plain listener) are answered by
        the head timeout at the latest, never sent upstream.
        """
        for data in (b"GET / HTTP/1.1\nHost: example.test\nCookie: instance=app\n\n",
                     b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(32))):
            world = World()
            try:
                client = world.client()
                client.send(data)
                world.tick(15)
                self.assertIn(client.response().status, (400, 408))
                self.assertEqual(client.state, "closed")
                self.assertEqual(world.connects, 0)
            finally:
                world.cleanup()

    def test_response_transfer_codings_kept(self):
        world = self.world()
        client = world.client()
        client.send(request(b"GET /"))
        world.upstream().send(response(b"200 OK", b"Transfer-Encoding: gzip, chunked") + chunked(b"\x1f\x8b..."))
        answer = client.response()
        self.assertIn(b"gzip", answer.header(b"Transfer-Encoding") or b"")


class HoldTests(_WorldCase):
    """Requests for an instance that is not ready: held, never read, forwarded once it is."""

    def test_held_request_body_not_read_then_streamed(self):
        world = self.world(state="exited", ready=False)
        client = world.client()
        client.send(request(b"POST /up", b"Content-Length: 10", body=b"0123"))
        self.assertEqual(world.runtime.calls["start"], 1)
        self.assertEqual(world.connects, 0, "nothing upstream while it wakes")
        self.assertTrue(client.paused, "the body stays in the client's buffers")
        self.assertEqual(world.waker.describe("app")["held"], 1)
        world.tick(5)
        self.assertEqual(client.received(), b"", "no 100 Continue, no loading page")
        world.plan.probes[-1].callback(True)
        upstream = world.upstream()
        self.assertFalse(client.paused)
        sent = upstream.requests()[0]
        self.assertEqual((sent.method, sent.target), (b"POST", b"/up"))
        self.assertEqual(sent.body, b"0123", "the bytes that came with the head")
        client.send(b"456789")
        self.assertEqual(upstream.requests()[0].body, b"0123456789")
        upstream.send(response(b"201 Created", body=b"stored"))
        answer = client.response()
        self.assertEqual(answer.status, 201)
        self.assertEqual(answer.header(b"X-Wakeproxy-Woke"), b"1")
        self.assertIn(b"dur=", answer.header(b"Server-Timing"))
        self.assertEqual(client.state, "open")

    def test_held_expect_continue_goes_upstream_with_its_expect(self):
        world = self.world(state="exited", ready=False)
        client = world.client()
        client.send(request(b"PUT /up", b"Content-Length: 5", b"Expect: 100-continue"))
        self.assertEqual(client.received(), b"", "nobody asks for the body early")
        world.plan.probes[-1].callback(True)
        upstream = world.upstream()
        self.assertEqual(upstream.requests()[0].header(b"Expect"), b"100-continue")
        upstream.send(response(b"100 Continue"))
        self.assertEqual([r.status for r in client.responses()], [100])
        client.send(b"hello")
        upstream.send(response(b"201 Created", body=b""))
        self.assertEqual([r.status for r in client.responses()], [100, 201])
        self.assertEqual(upstream.requests()[0].body, b"hello")

    def test_held_websocket_upgrade_wakes(self):
        world = self.world(state="exited", ready=False)
        client = world.client()
        client.send(request(b"GET /ws", b"Connection: Upgrade", b"Upgrade: websocket", b"Accept: text/html"))
        self.assertEqual(world.connects, 0)
        self.assertEqual(client.received(), b"")
        world.plan.probes[-1].callback(True)
        upstream = world.upstream()
        upstream.send(WS_101)
        answer = client.responses()[0]
        self.assertEqual(answer.status, 101)
        self.assertEqual(answer.header(b"X-Wakeproxy-Woke"), b"1")

    def test_client_gone_while_held_is_never_forwarded(self):
        world = self.world(state="exited", ready=False)
        client = world.client()
        client.send(request(b"GET /a"))
        self.assertEqual(world.waker.describe("app")["held"], 1)
        client.lose()
        self.assertEqual(world.waker.describe("app")["held"], 0)
        world.plan.probes[-1].callback(True)
        self.assertEqual(world.connects, 0)
        self.assertEqual(world.waker.describe("app")["inflight"], 0)

    def test_wake_failure_answered(self):
        world = self.world(state="exited", ready=False, wake_timeout=10)
        client = world.client()
        client.send(request(b"GET /a"))
        world.reactor.advance(10)
        answer = client.response()
        self.assertEqual(answer.status, 504)
        self.assertEqual(answer.header(b"Content-Type"), PROBLEM)
        self.assertEqual(world.connects, 0)

    def test_no_wake_path_does_not_wake(self):
        world = self.world(state="exited", ready=False)
        client = world.client()
        client.send(request(b"GET /favicon.ico"))
        self.assertEqual(client.response().status, 503)
        self.assertEqual(world.runtime.calls.get("start", 0), 0)


class SlotTests(_WorldCase):
    """--max-upstream-per-instance: the rest wait in arrival order; activity counts what is in flight."""

    def send_all(self, world, count):
        clients = []
        for i in range(count):
            client = world.client()
            client.send(request(b"GET /r%d" % i))
            clients.append(client)
        world.connect()
        return clients

    def targets(self, world):
        return [m.target for m in world.sent()]

    def answer(self, world, target, body=b"ok"):
        """The upstream connection holding C{target}'s exchange answers it."""
        for end in world.upstreams:
            if end.bound and end.requests() and end.requests()[-1].target == target:
                end.send(response(body=body))
                world.connect()
                return
        raise AssertionError("no upstream connection waits on {!r}".format(target))

    def test_cap_and_fifo(self):
        world = self.world(max_upstream=2)
        self.send_all(world, 5)
        self.assertEqual(self.targets(world), [b"/r0", b"/r1"])
        self.answer(world, b"/r1")
        self.assertEqual(self.targets(world)[2:], [b"/r2"])
        self.answer(world, b"/r0")
        self.answer(world, b"/r2")
        self.assertEqual(sorted(self.targets(world)), [b"/r0", b"/r1", b"/r2", b"/r3", b"/r4"])
        self.assertEqual(world.connects, 2, "the queued requests take the pooled connections")

    def test_client_gone_while_queued_is_never_forwarded(self):
        world = self.world(max_upstream=1)
        clients = self.send_all(world, 3)
        clients[1].lose()
        self.answer(world, b"/r0")
        self.assertEqual(self.targets(world), [b"/r0", b"/r2"])

    def test_client_gone_while_queued_frees_no_slot(self):
        world = self.world(max_upstream=2)
        clients = self.send_all(world, 3)
        clients[2].lose()
        self.assertEqual(self.targets(world), [b"/r0", b"/r1"])
        late = world.client()
        late.send(request(b"GET /late"))
        world.connect()
        self.assertEqual(self.targets(world), [b"/r0", b"/r1"], "two in flight already: /late waits")

    def test_inflight_activity(self):
        world = self.world()
        client = world.client()
        client.send(request(b"GET /a"))
        upstream = world.upstream()
        self.assertEqual(world.waker.describe("app")["inflight"], 1)
        self.assertIsNone(world.waker.idle_since("app"))
        world.reactor.advance(7)
        upstream.send(response(body=b"ok"))
        self.assertEqual(world.waker.describe("app")["inflight"], 0)
        self.assertEqual(world.waker.idle_since("app"), world.reactor.seconds())

    def test_no_wake_requests_are_not_activity(self):
        world = self.world()
        client = world.client()
        client.send(request(b"GET /robots.txt"))
        upstream = world.upstream()
        self.assertEqual(world.waker.describe("app")["inflight"], 0, "proxied, but not activity")
        upstream.send(response(body=b"ok"))
        self.assertEqual(client.response().status, 200)

    def test_answers_are_not_activity(self):
        world = self.world()
        client = world.client()
        client.send(request(b"TRACE /") + request(b"GET /", b"X-Wakeproxy-Status: 1"))
        self.assertEqual(world.waker.describe("app")["inflight"], 0)
        self.assertEqual([r.status for r in client.responses()], [405, 200])


class TunnelTests(_WorldCase):
    """Upgraded connections: raw relay, activity by data frames, close 1001 before sleep."""

    def tunnel(self, world):
        client = world.client()
        client.send(WS_REQUEST)
        upstream = world.upstream()
        upstream.send(WS_101)
        self.assertEqual(client.responses()[0].status, 101)
        client.transport.clear()
        return client, upstream

    def test_raw_bytes_both_ways(self):
        world = self.world()
        client, upstream = self.tunnel(world)
        junk = b"not even a frame \r\n\r\n GET / HTTP/1.1\r\n\r\n"
        client.send(CLIENT_TEXT + junk)
        self.assertTrue(upstream.received().endswith(CLIENT_TEXT + junk))
        upstream.send(SERVER_TEXT + b"HTTP/1.1 200 OK\r\n\r\n")
        self.assertEqual(client.received(), SERVER_TEXT + b"HTTP/1.1 200 OK\r\n\r\n")
        world.tick(600)
        self.assertEqual((client.state, upstream.state), ("open", "open"), "no timeout applies to a tunnel")

    def test_data_frames_are_activity_pings_are_not(self):
        world = self.world()
        client, upstream = self.tunnel(world)
        opened = world.reactor.seconds()
        self.assertEqual(world.waker.describe("app")["inflight"], 0, "the upgrade exchange is over")
        world.reactor.advance(10)
        client.send(CLIENT_PING)
        upstream.send(SERVER_PONG)
        self.assertEqual(world.waker.describe("app")["last_activity"], opened)
        client.send(CLIENT_TEXT)
        self.assertEqual(world.waker.describe("app")["last_activity"], opened + 10)
        world.reactor.advance(10)
        upstream.send(SERVER_TEXT)
        self.assertEqual(world.waker.describe("app")["last_activity"], opened + 20)
        self.assertEqual(upstream.received()[-len(CLIENT_PING + CLIENT_TEXT):], CLIENT_PING + CLIENT_TEXT)
        self.assertEqual(client.received(), SERVER_PONG + SERVER_TEXT)

    def test_open_mode_keeps_the_instance_busy(self):
        world = self.world(idle_tunnel="open")
        client, upstream = self.tunnel(world)
        self.assertEqual(world.waker.describe("app")["inflight"], 1)
        client.send(CLIENT_PING)
        self.assertIsNone(world.waker.idle_since("app"))
        client.lose()
        self.assertEqual(world.waker.describe("app")["inflight"], 0)

    def test_open_mode_from_the_label(self):
        world = self.world(labels={"wakeproxy.idle-tunnel": "open"})
        self.tunnel(world)
        self.assertEqual(world.waker.describe("app")["inflight"], 1)

    def test_close_tunnels_sends_close_1001(self):
        world = self.world()
        client, upstream = self.tunnel(world)
        self.assertEqual(world.dispatcher.tunnels("app"), 1)
        world.dispatcher.close_tunnels("app")
        self.assertEqual(client.received(), close_frame(1001, b"going away"))
        self.assertEqual(client.received()[:4], b"\x88\x0c\x03\xe9")
        world.settle()
        self.assertTrue(client.lost and upstream.lost)
        self.assertEqual(client.state, "closed", "closed, not aborted: the close frame is flushed")
        self.assertEqual(world.dispatcher.tunnels("app"), 0)

    def test_halt_sends_close_1001(self):
        """The deploy API's stop (the waker's halt) closes the instance's tunnels first."""
        world = self.world()
        client, upstream = self.tunnel(world)
        world.waker.halt("app", 10)
        self.assertEqual(client.received(), close_frame())
        self.assertEqual(world.runtime.get("app").state, "exited")
        self.assertEqual(client.state, "closed")

    def test_idle_sleep_with_a_ping_only_tunnel(self):
        world = self.world()
        client, upstream = self.tunnel(world)
        world.reactor.advance(60)
        client.send(CLIENT_PING)
        upstream.send(SERVER_PONG)
        self.assertIsNotNone(world.waker.idle_since("app"), "pings are not activity")
        slept = []
        world.waker.sleep("app").addCallback(slept.append)
        self.assertEqual(slept, [True])
        self.assertTrue(client.received().endswith(close_frame()))

    def test_client_bytes_before_the_101_follow_it(self):
        world = self.world()
        client = world.client()
        client.send(WS_REQUEST)
        upstream = world.upstream()
        client.send(CLIENT_TEXT)
        self.assertEqual(read_requests(upstream.received())[1], b"", "not before the upstream switched")
        upstream.send(WS_101)
        self.assertEqual(read_requests(upstream.received())[1], CLIENT_TEXT)

    def test_close_1001_only_between_frames(self):
        world = self.world()
        client, upstream = self.tunnel(world)
        upstream.send(b"\x82\x7e\x03\xe8" + b"x" * 10)  # a 1000-byte binary frame, 10 bytes of it so far
        world.waker.halt("app", 10)
        self.assertEqual(client.received(), b"\x82\x7e\x03\xe8" + b"x" * 10)
        self.assertEqual(client.state, "closed")

    def test_other_upgrades_count_bytes(self):
        world = self.world()
        client = world.client()
        client.send(request(b"GET /x", b"Connection: upgrade", b"Upgrade: foo/1"))
        upstream = world.upstream()
        upstream.send(response(b"101 Switching Protocols", b"Upgrade: foo/1", b"Connection: upgrade"))
        self.assertEqual(client.responses()[0].header(b"Upgrade"), b"foo/1")
        client.transport.clear()
        client.send(b"\x89\x00")  # a WebSocket ping's bytes mean nothing here: bytes are bytes
        self.assertEqual(upstream.received()[-2:], b"\x89\x00")
        world.dispatcher.close_tunnels("app")
        self.assertEqual(client.received(), b"", "no WebSocket close frame for another protocol")
        self.assertEqual(client.state, "closed")

    def test_tunnel_gives_its_slot_back(self):
        world = self.world(max_upstream=1)
        self.tunnel(world)
        client = world.client()
        client.send(request(b"GET /next"))
        upstream = world.upstream()
        upstream.send(response(body=b"ok"))
        self.assertEqual(client.response().body, b"ok")

    def test_eof_passes_on(self):
        """
        A half-close from one side is passed to the other (as a whole close here: a StringTransport has no
        socket to shut down for writing, so the relay falls back to loseConnection).
        """
        world = self.world()
        client, upstream = self.tunnel(world)
        client.protocol.readConnectionLost()
        self.assertEqual(upstream.state, "closed")
        world = self.world()
        client, upstream = self.tunnel(world)
        upstream.protocol.readConnectionLost()
        self.assertEqual(client.state, "closed")

    def test_upstream_gone_closes_the_client(self):
        world = self.world()
        client, upstream = self.tunnel(world)
        upstream.send(SERVER_TEXT)
        upstream.close()
        self.assertEqual(client.state, "closed")
        self.assertEqual(client.received(), SERVER_TEXT)

    def test_client_gone_closes_the_upstream(self):
        world = self.world()
        client, upstream = self.tunnel(world)
        client.lose()
        self.assertEqual(upstream.state, "closed")
        self.assertEqual(world.dispatcher.tunnels("app"), 0)


class CrashTests(_WorldCase):
    """A bug in wakeproxy's own code answers the request and leaks nothing (slots, activity, connections)."""

    def test_a_raising_forward_answers_every_request_and_frees_its_slot(self):
        world = self.world(max_upstream=2)
        acquire = world.pool.acquire

        def broken(*args, **kwargs):
            raise RuntimeError("injected fault")

        world.pool.acquire = broken
        for i in range(200):
            client = world.client()
            client.send(request(b"GET /r%d" % i))
            (answer,) = client.responses()
            self.assertEqual(answer.status, 502)
            self.assertIn("wakeproxy failed", answer.json()["detail"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 200)
        self.assertEqual(world.waker.describe("app")["inflight"], 0)
        world.pool.acquire = acquire
        clients = [world.client() for _ in range(2)]
        for client in clients:
            client.send(request(b"GET /after"))
        world.connect()
        self.assertEqual([m.target for m in world.sent()], [b"/after", b"/after"])  # both slots are free

    def test_a_raising_response_path_aborts_and_frees(self):
        world = self.world(max_upstream=1)
        client = world.client()
        client.send(request(b"GET /x"))
        upstream = world.upstream()
        exchange = world.factory.connections and next(iter(world.factory.connections)).exchange

        def broken(head, body=b"", reusable=True):
            raise RuntimeError("injected fault")

        exchange.response_head = broken
        exchange.response_whole = broken  # a small response's head and body arrive together: its own path
        upstream.send(response(body=b"hello"))
        (answer,) = client.responses()
        self.assertEqual(answer.status, 502)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(world.waker.describe("app")["inflight"], 0)
        second = world.client()
        second.send(request(b"GET /next"))
        world.connect()
        self.assertEqual(world.sent()[-1].target, b"/next")


class DrainTests(_WorldCase):
    """Graceful stop: idle connections close at once, exchanges in flight finish, the rest is closed later."""

    def test_idle_closes_in_flight_finishes_then_closes(self):
        world = self.world()
        idle = world.client()
        idle.send(request(b"GET /a"))
        world.upstream().send(response(body=b"a"))
        busy = world.client()
        busy.send(request(b"GET /b"))
        world.connect()
        drained = world.factory.drain(10)
        world.settle()
        self.assertEqual(idle.state, "closed")
        self.assertEqual(busy.state, "open")
        self.assertNoResult(drained)
        world.upstreams[-1].send(response(body=b"b"))
        self.assertEqual(busy.responses()[-1].body, b"b")
        self.assertEqual(busy.state, "closed")
        world.reactor.advance(0.1)
        self.successResultOf(drained)

    def test_deadline_closes_the_rest_and_websockets_get_1001(self):
        world = self.world()
        busy = world.client()
        busy.send(request(b"GET /slow"))
        tunnel = world.client()
        tunnel.send(request(b"GET /ws", b"Connection: Upgrade", b"Upgrade: websocket", b"Sec-WebSocket-Key: k",
                            b"Sec-WebSocket-Version: 13"))
        ends = world.connect()
        ends[-1].send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        drained = world.factory.drain(2)
        world.reactor.advance(1)
        self.assertNoResult(drained)
        world.reactor.advance(1.1)
        world.settle()
        self.successResultOf(drained)
        self.assertEqual(busy.state, "aborted")
        self.assertTrue(tunnel.received().endswith(b"\x88\x0c\x03\xe9going away"))

    def test_held_requests_are_answered_503(self):
        world = self.world(state="exited", ready=False)
        client = world.client()
        client.send(request(b"GET /held"))
        from wakeproxy.waking.waker import WakeFailure

        self.assertEqual(world.waker.release_held(WakeFailure(503, "shutting down", retry_after=2)), 1)
        (answer,) = client.responses()
        self.assertEqual((answer.status, answer.header(b"retry-after")), (503, b"2"))


class TenantPortTests(_WorldCase):
    """A tenant's instance (owner label) is forwarded to only within the allowed ports; answers name no address."""

    def test_port_outside_the_allowed_ranges_is_refused(self):
        world = self.world(labels={"wakeproxy.owner": "bob", "wakeproxy.port": "22"})
        client = world.client()
        client.send(request(b"GET /"))
        (answer,) = client.responses()
        self.assertEqual(answer.status, 502)
        self.assertNotIn("22", answer.json()["detail"])
        self.assertEqual(world.reactor.tcpClients, [])

    def test_operators_instances_are_trusted(self):
        world = self.world(labels={"wakeproxy.port": "22"})
        client = world.client()
        client.send(request(b"GET /"))
        self.assertEqual(world.reactor.tcpClients[-1][1], 22)
