# -*- test-case-name: tests.test_wire -*-
"""
Tests for L{wakeproxy.http.wire}: request and response heads (table-driven: what is accepted, what is refused
with which status), the C plain paths against llhttp's, and the field scanner's two twins.
"""

from unittest import SkipTest

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from wakeproxy.answers import reason_phrase
from wakeproxy.http import wire
from wakeproxy.http.wire import MAX_HEADERS, WireError, parse_request_head, parse_response_head


def head(first: bytes, *fields: bytes) -> bytes:
    """A head from its start line and field lines, CRLF-terminated, with its blank line."""
    return b"".join(line + b"\r\n" for line in (first,) + fields) + b"\r\n"


GET = b"GET / HTTP/1.1"
POST = b"POST /upload HTTP/1.1"
HOST = b"Host: example.test"

#: name, head, attributes of the RequestHead it parses into
VALID_REQUESTS = [
    ("plain get", head(GET, HOST),
     dict(method=b"GET", target=b"/", version="1.1", length=0, keep_alive=True, upgrade=None, expect=False,
          host=b"example.test", host_count=1, cookie=())),
    ("target with query", head(b"GET /a/b?x=1&y=%20 HTTP/1.1", HOST), dict(target=b"/a/b?x=1&y=%20")),
    ("content-length", head(POST, HOST, b"Content-Length: 12"), dict(method=b"POST", length=12)),
    ("content-length zero", head(POST, HOST, b"Content-Length: 0"), dict(length=0)),
    ("chunked", head(POST, HOST, b"Transfer-Encoding: chunked"), dict(length=-1)),
    ("chunked any case", head(POST, HOST, b"transfer-encoding: Chunked"), dict(length=-1)),
    ("http/1.0 without host", head(b"GET / HTTP/1.0"), dict(version="1.0", host=None, host_count=0,
                                                              keep_alive=False)),
    ("http/1.0 keep-alive is not honoured", head(b"GET / HTTP/1.0", b"Connection: keep-alive"),
     dict(keep_alive=False)),
    ("http/1.0 with host", head(b"GET / HTTP/1.0", HOST), dict(host=b"example.test", keep_alive=False)),
    ("connection close", head(GET, HOST, b"Connection: close"), dict(keep_alive=False)),
    ("connection close any case, in a list", head(GET, HOST, b"Connection: keep-alive, Close"),
     dict(keep_alive=False)),
    ("connection close in a second header", head(GET, HOST, b"Connection: keep-alive", b"Connection: close"),
     dict(keep_alive=False)),
    ("connection keep-alive", head(GET, HOST, b"Connection: keep-alive"), dict(keep_alive=True)),
    ("expect 100-continue", head(POST, HOST, b"Content-Length: 3", b"Expect: 100-continue"),
     dict(expect=True, length=3)),
    ("expect any case", head(POST, HOST, b"Content-Length: 3", b"Expect: 100-Continue"), dict(expect=True)),
    ("websocket upgrade", head(GET, HOST, b"Connection: Upgrade", b"Upgrade: websocket"),
     dict(upgrade=b"websocket", keep_alive=True)),
    ("upgrade in a connection list", head(GET, HOST, b"Connection: keep-alive, upgrade", b"Upgrade: websocket"),
     dict(upgrade=b"websocket")),
    ("other protocol upgrade", head(GET, HOST, b"Connection: upgrade", b"Upgrade: foo/2"), dict(upgrade=b"foo/2")),
    ("upgrade without connection: upgrade is ignored", head(GET, HOST, b"Upgrade: websocket"),
     dict(upgrade=None, keep_alive=True)),
    ("upgrade with connection: keep-alive only is ignored",
     head(GET, HOST, b"Connection: keep-alive", b"Upgrade: websocket"), dict(upgrade=None)),
    ("h2c upgrade is stripped", head(GET, HOST, b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c",
                                     b"HTTP2-Settings: AAMAAABkAAQAAP__"), dict(upgrade=None, keep_alive=True)),
    ("h2c upgrade any case", head(GET, HOST, b"Connection: upgrade", b"Upgrade: H2C"), dict(upgrade=None)),
    ("cookies collected", head(GET, HOST, b"Cookie: a=1", b"Cookie: instance=app"),
     dict(cookie=(b"a=1", b"instance=app"))),
    ("exactly the maximum of header fields",
     head(GET, HOST, *[b"X-F%d: v" % i for i in range(MAX_HEADERS - 1)]), dict(version="1.1")),
    ("CONNECT parses (the dispatcher refuses it)", head(b"CONNECT example.test:443 HTTP/1.1",
                                                        b"Host: example.test:443"),
     dict(method=b"CONNECT", target=b"example.test:443")),
    ("absolute form parses (the dispatcher refuses it)", head(b"GET http://example.test/ HTTP/1.1", HOST),
     dict(target=b"http://example.test/")),
]

#: name, head, the status of the WireError
REFUSED_REQUESTS = [
    ("content-length with transfer-encoding",
     head(POST, HOST, b"Content-Length: 5", b"Transfer-Encoding: chunked"), 400),
    ("transfer-encoding with content-length",
     head(POST, HOST, b"Transfer-Encoding: chunked", b"Content-Length: 5"), 400),
    ("two different content-lengths", head(POST, HOST, b"Content-Length: 5", b"Content-Length: 6"), 400),
    ("two equal content-lengths", head(POST, HOST, b"Content-Length: 5", b"Content-Length: 5"), 400),
    ("a content-length list", head(POST, HOST, b"Content-Length: 5, 6"), 400),
    ("a negative content-length", head(POST, HOST, b"Content-Length: -1"), 400),
    ("an enormous content-length", head(POST, HOST, b"Content-Length: 99999999999999999999999"), 400),
    ("gzip, chunked", head(POST, HOST, b"Transfer-Encoding: gzip, chunked"), 400),
    ("chunked, gzip", head(POST, HOST, b"Transfer-Encoding: chunked, gzip"), 400),
    ("gzip alone", head(POST, HOST, b"Transfer-Encoding: gzip"), 400),
    ("identity", head(POST, HOST, b"Transfer-Encoding: identity"), 400),
    ("chunked twice", head(POST, HOST, b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"), 400),
    ("gzip then chunked in two headers", head(POST, HOST, b"Transfer-Encoding: gzip",
                                              b"Transfer-Encoding: chunked"), 400),
    ("two host headers", head(GET, b"Host: a.test", b"Host: b.test"), 400),
    ("two equal host headers", head(GET, HOST, HOST), 400),
    ("no host on HTTP/1.1", head(GET), 400),
    ("one field over the maximum", head(GET, HOST, *[b"X-F%d: v" % i for i in range(MAX_HEADERS)]), 431),
    ("many fields over the maximum", head(GET, HOST, *[b"X-F%d: v" % i for i in range(500)]), 431),
    ("bare LF line ends", b"GET / HTTP/1.1\nHost: example.test\n\n", 400),
    ("a bare LF inside a field", b"GET / HTTP/1.1\r\nHost: example.test\r\nX-A: a\nb\r\n\r\n", 400),
    ("a TLS hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
    ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: example.test\r\n\r\n", 400),
    ("space before the colon", head(GET, b"Host : example.test"), 400),
    ("obsolete line folding", head(GET, HOST, b"X-A: a", b" folded"), 400),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    ("expect something else", head(GET, HOST, b"Expect: 200-ok"), 417),
    ("expect 100-continue with parameters", head(POST, HOST, b"Content-Length: 1",
                                                 b"Expect: 100-continue; x=1"), 417),
]


class RequestHeadTests(SynchronousTestCase):
    """L{parse_request_head}: accepted heads and every refusal."""

    def test_valid(self):
        for name, raw, expected in VALID_REQUESTS:
            try:
                parsed = parse_request_head(raw)
            except WireError as e:
                self.fail("{}: refused with {} ({})".format(name, e.status, e.detail))
            got = {attribute: getattr(parsed, attribute) for attribute in expected}
            self.assertEqual(got, expected, name)

    def test_refused(self):
        for name, raw, status in REFUSED_REQUESTS:
            try:
                parsed = parse_request_head(raw)
            except WireError as e:
                self.assertEqual(e.status, status, "{}: {}".format(name, e.detail))
                self.assertTrue(e.detail, name)
                self.assertEqual(str(e), e.detail, name)
            else:
                self.fail("{}: accepted as {!r} {!r} HTTP/{}".format(name, parsed.method, parsed.target,
                                                                    parsed.version))

    def test_headers_as_received(self):
        """Order, name case and duplicates survive; values are not touched."""
        parsed = parse_request_head(head(GET, b"X-B: 2", HOST, b"x-b: 1", b"Set-Thing: \t spaced"))
        self.assertEqual(parsed.headers, [(b"X-B", b"2"), (b"Host", b"example.test"), (b"x-b", b"1"),
                                          (b"Set-Thing", b"spaced")])

    def test_http10_chunked_is_refused(self):
        with self.assertRaises(WireError):
            parse_request_head(head(b"POST / HTTP/1.0", b"Transfer-Encoding: chunked"))

    def test_only_http10_and_http11(self):
        for raw in (b"GET /\r\n\r\n", b"GET / HTTP/0.9\r\n\r\n", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"):
            try:
                parsed = parse_request_head(raw)
            except WireError as e:
                self.assertIn(e.status, (400, 505))
            else:
                self.fail("{!r} accepted as HTTP/{}".format(raw, parsed.version))

    def test_http10_upgrade_is_ignored(self):
        parsed = parse_request_head(head(b"GET / HTTP/1.0", HOST, b"Connection: upgrade", b"Upgrade: websocket"))
        self.assertIsNone(parsed.upgrade)


#: name, head, attributes of the ResponseHead
VALID_RESPONSES = [
    ("content-length", head(b"HTTP/1.1 200 OK", b"Content-Length: 5"),
     dict(status=200, reason=b"OK", length=5, keep_alive=True, chunked=False)),
    ("chunked", head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked"), dict(length=None, chunked=True)),
    ("gzip, chunked ends in chunked", head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: gzip, chunked"),
     dict(chunked=True)),
    ("chunked, gzip is read until close", head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked, gzip"),
     dict(chunked=False, length=None)),
    ("until close", head(b"HTTP/1.1 200 OK"), dict(length=None, chunked=False, keep_alive=True)),
    ("connection close", head(b"HTTP/1.1 200 OK", b"Connection: close", b"Content-Length: 0"),
     dict(keep_alive=False, length=0)),
    ("HTTP/1.0", head(b"HTTP/1.0 200 OK", b"Content-Length: 1"), dict(keep_alive=False)),
    ("HTTP/1.0 keep-alive", head(b"HTTP/1.0 200 OK", b"Connection: keep-alive", b"Content-Length: 1"),
     dict(keep_alive=True)),
    ("no reason", b"HTTP/1.1 204\r\n\r\n", dict(status=204, reason=b"")),
    ("long reason", head(b"HTTP/1.1 404 Not Found Here"), dict(status=404, reason=b"Not Found Here")),
    ("100", head(b"HTTP/1.1 100 Continue"), dict(status=100)),
    ("103", head(b"HTTP/1.1 103 Early Hints", b"Link: </a.css>; rel=preload"), dict(status=103)),
    ("101", head(b"HTTP/1.1 101 Switching Protocols", b"Connection: Upgrade", b"Upgrade: websocket"),
     dict(status=101)),
    ("304 keeps its content-length", head(b"HTTP/1.1 304 Not Modified", b"Content-Length: 10"),
     dict(status=304, length=10)),
]

REFUSED_RESPONSES = [
    ("not HTTP", b"garbage\r\n\r\n"),
    ("bad content-length", head(b"HTTP/1.1 200 OK", b"Content-Length: x")),
    ("two content-lengths", head(b"HTTP/1.1 200 OK", b"Content-Length: 1", b"Content-Length: 2")),
    ("content-length with chunked", head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked",
                                         b"Content-Length: 5")),
    ("too many fields", head(b"HTTP/1.1 200 OK", *[b"X-F%d: v" % i for i in range(MAX_HEADERS + 1)])),
    ("bad status", b"HTTP/1.1 2000 OK\r\n\r\n"),
]


class ResponseHeadTests(SynchronousTestCase):
    def test_valid(self):
        for name, raw, expected in VALID_RESPONSES:
            try:
                parsed = parse_response_head(raw)
            except WireError as e:
                self.fail("{}: refused ({})".format(name, e.detail))
            got = {attribute: getattr(parsed, attribute) for attribute in expected}
            self.assertEqual(got, expected, name)

    def test_refused(self):
        """An upstream's bad head is the upstream's fault: 502."""
        for name, raw in REFUSED_RESPONSES:
            with self.assertRaises(WireError, msg=name) as caught:
                parse_response_head(raw)
            self.assertEqual(caught.exception.status, 502, name)

    def test_headers_as_received(self):
        parsed = parse_response_head(head(b"HTTP/1.1 200 OK", b"Set-Cookie: a=1", b"set-cookie: b=2",
                                          b"Content-Length: 0"))
        self.assertEqual(parsed.lines, [b"Set-Cookie: a=1", b"set-cookie: b=2"])  # Content-Length is restated
        self.assertEqual(parsed.length, 0)

    def test_exactly_the_maximum_of_fields_is_relayed(self):
        parsed = parse_response_head(head(b"HTTP/1.1 200 OK", *[b"X-F%d: v" % i for i in range(MAX_HEADERS)]))
        self.assertEqual(len(parsed.lines), MAX_HEADERS)

    def test_short_fields_over_the_maximum_are_counted(self):
        with self.assertRaises(WireError) as caught:
            parse_response_head(head(b"HTTP/1.1 200 OK", *[b"a:"] * (MAX_HEADERS + 1)))
        self.assertIn("101 header fields", caught.exception.detail)

    def test_reason_phrase(self):
        self.assertEqual(reason_phrase(431), b"Request Header Fields Too Large")
        self.assertEqual(reason_phrase(413), b"Content Too Large")
        self.assertEqual(reason_phrase(599), b"Status")


class PythonScanRequestHeadTests(RequestHeadTests):
    """The same request heads through llhttp and the pure-Python field scanner (what runs when C is not built)."""

    def setUp(self):
        self.patch(wire, "scan_fields", wire.scan_fields_py)
        self.patch(wire, "_plain_request", None)


class LlhttpRequestHeadTests(RequestHeadTests):
    """The same request heads, every one validated by llhttp (the C scanner sorting their fields)."""

    def setUp(self):
        self.patch(wire, "_plain_request", None)


class PythonScanResponseHeadTests(ResponseHeadTests):
    """The same response heads through llhttp and the pure-Python field scanner."""

    def setUp(self):
        self.patch(wire, "scan_fields", wire.scan_fields_py)
        self.patch(wire, "_plain_response", None)


#: field names and values as llhttp accepts them (tokens; visible characters, spaces and tabs inside)
_NAMES = st.text(alphabet="abcXYZ-_!#.~019", min_size=1, max_size=80).map(str.encode) | \
    st.sampled_from([b"Host", b"cookie", b"CONTENT-LENGTH", b"Connection", b"Via", b"te", b"Upgrade", b"X-Real-IP",
                     b"User-Agent", b"transfer-encoding", b"Keep-Alive"])
_VALUES = st.text(alphabet="ab =;,\t/:\"1\x7e", max_size=40).map(lambda t: t.strip(" \t").encode())


class FieldScanTwinsTests(SynchronousTestCase):
    """L{wire.scan_fields} (C, when built) gives what L{wire.scan_fields_py} gives, for any valid head."""

    def setUp(self):
        if wire.scan_fields is wire.scan_fields_py:
            raise SkipTest("the C field scanner is not built here (no compiler at install)")

    def test_table_heads(self):
        heads = [raw for _, raw, _ in VALID_REQUESTS] + [raw for _, raw, _ in VALID_RESPONSES]
        for raw in heads:
            for roles, keep_below in ((wire._REQUEST_ROLES, wire._CODING), (wire._RESPONSE_ROLES, 1), ({}, 0)):
                self.assertEqual(wire.scan_fields(raw, roles, keep_below), wire.scan_fields_py(raw, roles, keep_below),
                                 raw)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.tuples(_NAMES, st.sampled_from([b":", b": ", b":\t ", b":  "]), _VALUES), max_size=12),
           st.sampled_from([b"GET / HTTP/1.1", b"HTTP/1.1 200 OK", b"HTTP/1.0 204"]))
    def test_any_head(self, fields, first):
        raw = head(first, *(name + colon + value for name, colon, value in fields))
        for roles, keep_below in ((wire._REQUEST_ROLES, wire._CODING), (wire._RESPONSE_ROLES, 1)):
            self.assertEqual(wire.scan_fields(raw, roles, keep_below), wire.scan_fields_py(raw, roles, keep_below))

    def test_not_a_head(self):
        for raw in (b"", b"GET / HTTP/1.1\r\nHost: a\r\n", b"GET / HTTP/1.1\r\nno colon\r\n\r\n"):
            for scan in (wire.scan_fields, wire.scan_fields_py):
                if scan is wire.scan_fields_py and raw.endswith(b"\r\n\r\n"):
                    continue  # the Python twin reads a line without a colon as a name (llhttp refuses it first)
                with self.assertRaises(ValueError, msg=(scan, raw)):
                    scan(raw, wire._REQUEST_ROLES, wire._CODING)


class LlhttpResponseHeadTests(ResponseHeadTests):
    """The same response heads, every one validated by llhttp (the C scanner sorting their fields)."""

    def setUp(self):
        self.patch(wire, "_plain_response", None)


def _same_as_llhttp(test, raw: bytes, plain, llhttp, attributes: tuple) -> bool:
    """Whether C{raw} took the C{plain} path (a head, or None); if it did, C{llhttp}'s gives the same head."""
    fast = plain(raw)
    if fast is None:
        return False
    try:
        reference = llhttp(raw)
    except WireError as e:
        test.fail("the plain path accepted a head llhttp's path refuses ({}): {!r}".format(e.detail, raw))
    test.assertEqual({a: getattr(fast, a) for a in attributes}, {a: getattr(reference, a) for a in attributes}, raw)
    return True


#: what the plain-response path and llhttp's path must agree on
_RESPONSE_ATTRIBUTES = ("status", "status_line", "reason", "fields", "length", "keep_alive", "chunked", "coding",
                        "nominated", "vias")
_STATUS_LINES = st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.1 204", b"HTTP/1.1 204 ", b"HTTP/1.1 304 Not Modified",
                                 b"HTTP/1.1 404  Two spaces", b"HTTP/1.1 599 \tTab", b"HTTP/1.1 101 Switching",
                                 b"HTTP/1.1 100 Continue", b"HTTP/1.0 200 OK", b"HTTP/1.1 600 Big", b"HTTP/1.1 099 x",
                                 b"HTTP/1.1 200 \x80obs", b"HTTP/1.1 200\tOK", b"HTTP/2 200 OK", b"HTTP/1.1 20 OK"])
_FRAMING = st.sampled_from([b"Content-Length: 5", b"content-length:0", b"Content-Length: 05 ", b"Content-Length: +5",
                            b"Content-Length: 1 2", b"Content-Length:", b"Content-Length: 99999999999999999999",
                            b"Transfer-Encoding: chunked", b"Transfer-Encoding: Chunked", b"Transfer-Encoding: gzip",
                            b"Transfer-Encoding: gzip, chunked", b"Connection: keep-alive", b"Connection: Close",
                            b"Connection: close ", b"Connection: close, x-a", b"Connection: upgrade",
                            b"Keep-Alive: timeout=5", b"Via: 1.1 a", b"Upgrade: websocket", b"TE: trailers",
                            b"X-Obs: \x80\xff", b"X-Ctl: a\x01b", b"X-Bare: a\nb", b"X Space: v", b": empty name",
                            b" folded", b"X-Tab:\tv\t"])


class PlainResponseTests(SynchronousTestCase):
    """
    The C reading of a common response head (C{_fieldscan.plain_response}) accepts only heads llhttp accepts,
    and reads them exactly as llhttp's path does; anything else is left to llhttp.
    """

    def setUp(self):
        if wire._plain_response is None:
            raise SkipTest("the C field scanner is not built here (no compiler at install)")

    def assertSameAsLlhttp(self, raw: bytes) -> bool:
        return _same_as_llhttp(self, raw, wire._plain_response_head, wire._read_response_head, _RESPONSE_ATTRIBUTES)

    def test_common_heads_take_the_plain_path(self):
        for raw in (head(b"HTTP/1.1 200 OK", b"Server: nginx/1.22.1", b"Date: Sun, 29 Nov 2026 20:23:18 GMT",
                         b"Content-Type: text/plain", b"Content-Length: 2", b"Connection: keep-alive"),
                    head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked", b"Content-Type: text/html"),
                    head(b"HTTP/1.1 404 Not Found", b"Connection: close", b"Content-Length: 0"),
                    head(b"HTTP/1.1 302 Found", b"Location: /a", b"Keep-Alive: timeout=5"),
                    b"HTTP/1.1 204\r\n\r\n"):
            self.assertTrue(self.assertSameAsLlhttp(raw), raw)

    def test_other_heads_are_left_to_llhttp(self):
        for raw in (head(b"HTTP/1.0 200 OK", b"Content-Length: 1"), head(b"HTTP/1.1 101 Switching Protocols"),
                    head(b"HTTP/1.1 100 Continue"), head(b"HTTP/1.1 200 OK", b"Via: 1.1 a"),
                    head(b"HTTP/1.1 200 OK", b"Connection: close, x-a"),
                    head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: gzip, chunked"),
                    head(b"HTTP/1.1 200 OK", *[b"X-F%d: v" % i for i in range(MAX_HEADERS + 1)])):
            self.assertIsNone(wire._plain_response(raw, wire._RESPONSE_ROLES), raw)
        for _, raw in REFUSED_RESPONSES:
            self.assertIsNone(wire._plain_response(raw, wire._RESPONSE_ROLES), raw)

    def test_table_heads(self):
        for _, raw, _ in VALID_RESPONSES:
            self.assertSameAsLlhttp(raw)

    @settings(max_examples=500, deadline=None)
    @given(_STATUS_LINES, st.lists(st.one_of(_FRAMING, st.tuples(_NAMES, _VALUES).map(b": ".join)), max_size=10))
    def test_any_head(self, status_line, fields):
        self.assertSameAsLlhttp(head(status_line, *fields))

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 204"]),
           st.lists(st.tuples(_NAMES, _VALUES).map(b": ".join), max_size=12),
           st.sampled_from([(), (b"Content-Length: 12",), (b"Transfer-Encoding: chunked",), (b"Connection: close",),
                            (b"Connection: keep-alive", b"Content-Length: 0")]))
    def test_any_plain_looking_head(self, status_line, fields, framing):
        """Mostly plain heads (random names and values, plain framing): most take the plain path."""
        self.assertSameAsLlhttp(head(status_line, *fields, *framing))


#: what the plain-request path and llhttp's path must agree on
_REQUEST_ATTRIBUTES = ("method", "target", "version", "length", "keep_alive", "upgrade", "expect", "host_count", "cookie",
                       "host", "nominated", "forwarding", "vias", "noted", "fields", "raw", "headers")
_REQUEST_LINE_LIST = [GET, POST, b"HEAD /a%20b HTTP/1.1", b"PATCH /x?y=1&z=%2F HTTP/1.1",
                                  b"DELETE /a@b:c;d=(e)*+,!$' HTTP/1.1", b"OPTIONS * HTTP/1.1", b"PUT /~u/._- HTTP/1.1",
                                  b"GET http://a.test/ HTTP/1.1", b"GET /a#f HTTP/1.1", b"GET /a|b{c} HTTP/1.1",
                                  b"FOO / HTTP/1.1", b"GET / HTTP/1.0", b"GET  / HTTP/1.1", b"get / HTTP/1.1",
                                  b"GET /\x80 HTTP/1.1", b"GET / HTTP/1.1 ", b"CONNECT a.test:443 HTTP/1.1",
                                  b"TRACE / HTTP/1.1", b"GET / HTTP/2"]
_REQUEST_LINES = st.sampled_from(_REQUEST_LINE_LIST)
_REQUEST_FIELDS = st.sampled_from([HOST, HOST, b"host:b.test ", b"Content-Length: 5", b"content-length:0",
                                   b"Content-Length: 05", b"Content-Length: -1", b"Content-Length: 1 2",
                                   b"Content-Length: 99999999999999999999", b"Transfer-Encoding: chunked",
                                   b"Expect: 100-continue", b"Connection: keep-alive", b"Connection: CLOSE",
                                   b"Connection: upgrade", b"Connection: close, x-a", b"Upgrade: websocket",
                                   b"X-Forwarded-For: 192.0.2.1", b"Forwarded: for=192.0.2.1", b"Via: 1.1 a",
                                   b"Cookie: a=1", b"cookie: b=2", b"User-Agent: curl/8", b"user-agent: second",
                                   b"Accept: text/html", b"Referer: /a", b"TE: trailers", b"Keep-Alive: 5",
                                   b"Proxy-Authorization: x", b"X-Obs: \x80", b"X-Ctl: a\x01b", b"X Space: v",
                                   b": empty", b" folded", b"X-Tab:\tv\t"])


class PlainRequestTests(SynchronousTestCase):
    """
    The C reading of a common request head (C{_fieldscan.plain_request}) accepts only heads llhttp and
    wire.py's checks accept, and reads them exactly as llhttp's path does; anything else is left to llhttp.
    """

    def setUp(self):
        if wire._plain_request is None:
            raise SkipTest("the C field scanner is not built here (no compiler at install)")

    def assertSameAsLlhttp(self, raw: bytes) -> bool:
        return _same_as_llhttp(self, raw, wire._plain_request_head, wire._read_request_head, _REQUEST_ATTRIBUTES)

    def test_common_heads_take_the_plain_path(self):
        for raw in (head(GET, b"Host: 127.0.0.1:20001", b"Cookie: instance=app"),
                    head(b"GET /a?b=1 HTTP/1.1", HOST, b"User-Agent: Mozilla/5.0 (X11; Linux x86_64)",
                         b"Accept: text/html,*/*;q=0.8", b"Accept-Encoding: gzip, deflate", b"Connection: keep-alive",
                         b"Cookie: instance=app; b=2", b"Referer: http://example.test/"),
                    head(POST, HOST, b"Content-Length: 12", b"Content-Type: application/json"),
                    head(b"DELETE /api/x HTTP/1.1", HOST, b"Connection: close"),
                    head(GET, HOST, b"X-Forwarded-For: 192.0.2.1, 192.0.2.2", b"X-Forwarded-Proto: https",
                         b"Via: 1.1 lb", b"Forwarded: for=192.0.2.1", b"via: 1.0 other")):
            self.assertTrue(self.assertSameAsLlhttp(raw), raw)

    def test_other_heads_are_left_to_llhttp(self):
        for raw in (head(b"GET / HTTP/1.0", HOST), head(GET), head(GET, HOST, HOST),
                    head(POST, HOST, b"Transfer-Encoding: chunked"), head(POST, HOST, b"Expect: 100-continue"),
                    head(GET, HOST, b"Connection: upgrade", b"Upgrade: websocket"),
                    head(GET, HOST, b"X-Obs: caf\xe9"), head(b"GET http://a.test/ HTTP/1.1", HOST), head(b"TRACE / HTTP/1.1", HOST),
                    head(GET, HOST, *[b"X-F%d: v" % i for i in range(MAX_HEADERS)])):
            self.assertIsNone(wire._plain_request(raw, wire._REQUEST_ROLES), raw)

    def test_table_heads(self):
        for _, raw, _ in VALID_REQUESTS:
            self.assertSameAsLlhttp(raw)

    def test_request_lines(self):
        plain = [line for line in _REQUEST_LINE_LIST if self.assertSameAsLlhttp(head(line, HOST))]
        self.assertEqual(len(plain), 6, plain)  # each method this path knows but OPTIONS (its "*" is not origin-form)

    @settings(max_examples=500, deadline=None)
    @given(_REQUEST_LINES, st.lists(st.one_of(_REQUEST_FIELDS, st.tuples(_NAMES, _VALUES).map(b": ".join)),
                                    max_size=10))
    def test_any_head(self, request_line, fields):
        self.assertSameAsLlhttp(head(request_line, *fields))
        self.assertSameAsLlhttp(head(request_line, HOST, *fields))

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from([GET, POST, b"HEAD /a?b HTTP/1.1"]), st.lists(st.tuples(_NAMES, _VALUES).map(b": ".join),
                                                                         max_size=12))
    def test_any_plain_looking_head(self, request_line, fields):
        """Random names and values with one Host: most take the plain path."""
        self.assertSameAsLlhttp(head(request_line, HOST, *fields))

    def test_reader_mixes_both_paths(self):
        """A kept llhttp parser stays in step when plain heads come between the heads it reads."""
        reader = wire.RequestReader()
        obs = head(GET, HOST, b"X-Obs: caf\xe9")  # obs-text: llhttp reads it
        plain = head(b"GET /p HTTP/1.1", HOST)
        for raw in (obs, plain, plain, obs, plain, obs):
            self.assertEqual(reader.read(raw).fields, wire._read_request_head(raw).fields)
        self.assertIsNotNone(reader._parser)


class RequestReaderTests(SynchronousTestCase):
    """
    L{wire.RequestReader}: one connection's heads, its llhttp parser kept between bodiless requests (the
    heads that llhttp reads: the plain path is switched off, as without the C scanner).
    """

    def setUp(self):
        self.patch(wire, "_plain_request", None)

    def test_parser_kept_between_bodiless_requests(self):
        reader = wire.RequestReader()
        first = reader.read(head(GET, HOST))
        kept = reader._parser
        self.assertIsNotNone(kept)
        second = reader.read(head(b"HEAD /b HTTP/1.1", HOST, b"Content-Length: 0"))
        self.assertIs(reader._parser, kept)
        self.assertEqual((first.target, second.method, second.target), (b"/", b"HEAD", b"/b"))

    def test_a_new_parser_after_a_body_an_upgrade_or_a_close(self):
        for raw in (head(POST, HOST, b"Content-Length: 3"), head(POST, HOST, b"Transfer-Encoding: chunked"),
                    head(GET, HOST, b"Connection: upgrade", b"Upgrade: websocket"),
                    head(GET, HOST, b"Connection: close"), head(b"GET / HTTP/1.0")):
            reader = wire.RequestReader()
            reader.read(raw)
            self.assertIsNone(reader._parser, raw)
            self.assertEqual(reader.read(head(GET, HOST)).target, b"/", raw)  # the next head on a fresh one

    def test_refusals_with_a_kept_parser(self):
        """A parser that read good heads refuses what a new one refuses."""
        for name, raw, status in REFUSED_REQUESTS:
            reader = wire.RequestReader()
            reader.read(head(GET, HOST))
            with self.assertRaises(WireError, msg=name) as caught:
                reader.read(raw)
            self.assertEqual(caught.exception.status, status, name)
