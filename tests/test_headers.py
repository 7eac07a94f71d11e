# -*- test-case-name: tests.test_headers -*-
"""
Tests for L{wakeproxy.headers}.
"""

from twisted.trial.unittest import SynchronousTestCase

from wakeproxy.headers import (
    HOP_BY_HOP,
    is_origin_form,
    request_headers,
    response_headers,
    strip_hop_by_hop,
)

_VIA = b"wakeproxy"


class HopByHopTests(SynchronousTestCase):
    """
    Tests for L{HOP_BY_HOP} and L{strip_hop_by_hop}.
    """

    def test_constant(self):
        self.assertEqual(
            HOP_BY_HOP,
            frozenset({
                b"connection", b"keep-alive", b"proxy-connection",
                b"proxy-authenticate", b"proxy-authorization", b"te",
                b"trailer", b"transfer-encoding", b"upgrade",
            }),
        )

    def test_strip(self):
        cases = [
            ([], []),
            ([(b"Accept", b"*/*")], [(b"Accept", b"*/*")]),
            ([(b"Connection", b"close"), (b"Accept", b"*/*")],
             [(b"Accept", b"*/*")]),
            ([(b"Connection", b"keep-alive"), (b"Keep-Alive", b"timeout=5"),
              (b"Accept", b"*/*")],
             [(b"Accept", b"*/*")]),
            ([(b"Connection", b"keep-alive, X-Secret"),
              (b"X-Secret", b"s"), (b"X-Public", b"p")],
             [(b"X-Public", b"p")]),
            ([(b"Connection", b"  x-secret ,,\tX-OTHER  "),
              (b"X-Secret", b"s"), (b"x-other", b"o"), (b"A", b"a")],
             [(b"A", b"a")]),
            ([(b"Connection", b"X-One"), (b"Connection", b"X-Two"),
              (b"X-One", b"1"), (b"X-Two", b"2"), (b"X-Three", b"3")],
             [(b"X-Three", b"3")]),
            ([(b"X-Secret", b"s"), (b"CONNECTION", b"X-SECRET")], []),
            ([(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
              (b"A", b"a")],
             [(b"A", b"a")]),
            ([(b"TE", b"trailers"), (b"Trailer", b"Expires"),
              (b"Transfer-Encoding", b"chunked"), (b"A", b"a")],
             [(b"A", b"a")]),
            ([(b"Proxy-Authorization", b"Basic eA=="),
              (b"Proxy-Authenticate", b"Basic"),
              (b"Proxy-Connection", b"keep-alive"), (b"A", b"a")],
             [(b"A", b"a")]),
            ([(b"KEEP-ALIVE", b"1"), (b"tE", b"x"), (b"A", b"a")],
             [(b"A", b"a")]),
            ([(b"Set-Cookie", b"a=1"), (b"X-Y", b"z"),
              (b"Set-Cookie", b"b=2")],
             [(b"Set-Cookie", b"a=1"), (b"X-Y", b"z"),
              (b"Set-Cookie", b"b=2")]),
            ([(b"x-MiXeD", b"1"), (b"Connection", b"close")],
             [(b"x-MiXeD", b"1")]),
            # Connection may not nominate Host or Content-Length.
            ([(b"Connection", b"Host, Content-Length, X-A"),
              (b"Host", b"h"), (b"Content-Length", b"3"), (b"X-A", b"a")],
             [(b"Host", b"h"), (b"Content-Length", b"3")]),
            # Only whole tokens count: "X-Secret" does not remove "X-Secrets".
            ([(b"Connection", b"X-Secret"), (b"X-Secrets", b"kept")],
             [(b"X-Secrets", b"kept")]),
        ]
        for headers, expected in cases:
            self.assertEqual(strip_hop_by_hop(headers), expected, headers)

    def test_input_untouched(self):
        headers = [(b"Connection", b"close"), (b"A", b"a")]
        strip_hop_by_hop(headers)
        self.assertEqual(headers, [(b"Connection", b"close"), (b"A", b"a")])


class RequestHeadersTests(SynchronousTestCase):
    """
    Tests for L{request_headers}.
    """

    def test_cases(self):
        tail = [
            (b"X-Forwarded-Proto", b"https"),
            (b"X-Forwarded-Host", b"a.example.com"),
            (b"Via", b"1.1 wakeproxy"),
        ]
        host = (b"Host", b"a.example.com")
        xff = (b"X-Forwarded-For", b"10.0.0.1")
        cases = [
            ([host], [host, xff] + tail),
            ([host, (b"Connection", b"close")], [host, xff] + tail),
            ([host, (b"Connection", b"keep-alive, X-Secret"),
              (b"X-Secret", b"s"), (b"Keep-Alive", b"timeout=5")],
             [host, xff] + tail),
            ([host, (b"Connection", b"X-A"), (b"connection", b"x-b"),
              (b"X-A", b"1"), (b"X-B", b"2"), (b"X-C", b"3")],
             [host, (b"X-C", b"3"), xff] + tail),
            ([host, (b"Upgrade", b"h2c"), (b"TE", b"trailers"),
              (b"Trailer", b"X"), (b"Proxy-Authorization", b"Basic eA=="),
              (b"Transfer-Encoding", b"chunked")],
             [host, xff] + tail),
            ([host, (b"X-Forwarded-For", b"1.1.1.1")],
             [host, (b"X-Forwarded-For", b"1.1.1.1, 10.0.0.1")] + tail),
            ([host, (b"X-Forwarded-For", b"1.1.1.1, 2.2.2.2"),
              (b"x-forwarded-for", b" 3.3.3.3 ")],
             [host,
              (b"X-Forwarded-For", b"1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1")]
             + tail),
            ([host, (b"X-Forwarded-For", b"")], [host, xff] + tail),
            # A nominated XFF chain is dropped, our address still added.
            ([host, (b"Connection", b"X-Forwarded-For"),
              (b"X-Forwarded-For", b"1.1.1.1")],
             [host, xff] + tail),
            ([host, (b"X-Forwarded-Proto", b"http"),
              (b"X-Forwarded-Host", b"evil.com")],
             [host, xff] + tail),
            ([host, (b"Via", b"1.0 fred")],
             [host, xff] + tail[:2] + [(b"Via", b"1.0 fred, 1.1 wakeproxy")]),
            ([host, (b"Via", b"1.0 fred, 1.1 p.example.net"),
              (b"VIA", b"1.1 other")],
             [host, xff] + tail[:2]
             + [(b"Via", b"1.0 fred, 1.1 p.example.net, 1.1 other, "
                         b"1.1 wakeproxy")]),
            ([(b"host", b"A.Example.com:8443")],
             [(b"host", b"A.Example.com:8443"), xff, tail[0],
              (b"X-Forwarded-Host", b"A.Example.com:8443"), tail[2]]),
            ([], [xff, tail[0], tail[2]]),
            ([(b"Content-Length", b"5"), host, (b"Content-Type", b"x/y")],
             [(b"Content-Length", b"5"), host, (b"Content-Type", b"x/y"),
              xff] + tail),
            ([(b"Connection", b"Host, Content-Length"),
              (b"Content-Length", b"5"), host],
             [(b"Content-Length", b"5"), host, xff] + tail),
            ([(b"Cookie", b"a=1"), host, (b"Cookie", b"b=2")],
             [(b"Cookie", b"a=1"), host, (b"Cookie", b"b=2"), xff] + tail),
        ]
        for headers, expected in cases:
            self.assertEqual(
                request_headers(headers, "10.0.0.1", "https", _VIA),
                expected,
                headers,
            )

    def test_ipv6_and_proto(self):
        result = request_headers([], "::1", "http", b"proxy.example")
        self.assertEqual(
            result,
            [
                (b"X-Forwarded-For", b"::1"),
                (b"X-Forwarded-Proto", b"http"),
                (b"Via", b"1.1 proxy.example"),
            ],
        )


class ResponseHeadersTests(SynchronousTestCase):
    """
    Tests for L{response_headers}.
    """

    def test_cases(self):
        via = (b"Via", b"1.1 wakeproxy")
        cases = [
            ([], [via]),
            ([(b"Content-Type", b"text/html")],
             [(b"Content-Type", b"text/html"), via]),
            ([(b"Content-Length", b"12"), (b"A", b"a")], [(b"A", b"a"), via]),
            ([(b"content-length", b"12"), (b"CONTENT-LENGTH", b"12")], [via]),
            ([(b"Connection", b"close"), (b"A", b"a")], [(b"A", b"a"), via]),
            ([(b"Connection", b"keep-alive, X-Secret"), (b"X-Secret", b"s"),
              (b"Keep-Alive", b"timeout=5, max=100"), (b"A", b"a")],
             [(b"A", b"a"), via]),
            ([(b"Connection", b"X-One"), (b"Connection", b"x-two"),
              (b"X-ONE", b"1"), (b"x-Two", b"2"), (b"A", b"a")],
             [(b"A", b"a"), via]),
            ([(b"Transfer-Encoding", b"chunked"), (b"Trailer", b"X-Sum"),
              (b"A", b"a")],
             [(b"A", b"a"), via]),
            ([(b"Upgrade", b"websocket"), (b"Proxy-Authenticate", b"Basic"),
              (b"A", b"a")],
             [(b"A", b"a"), via]),
            ([(b"Set-Cookie", b"a=1; Path=/"), (b"X-Y", b"z"),
              (b"Set-Cookie", b"b=2; HttpOnly"), (b"set-cookie", b"c=3")],
             [(b"Set-Cookie", b"a=1; Path=/"), (b"X-Y", b"z"),
              (b"Set-Cookie", b"b=2; HttpOnly"), (b"set-cookie", b"c=3"),
              via]),
            ([(b"Via", b"1.1 upstream")],
             [(b"Via", b"1.1 upstream, 1.1 wakeproxy")]),
            ([(b"Via", b"1.0 a"), (b"A", b"a"), (b"via", b"1.1 b")],
             [(b"A", b"a"), (b"Via", b"1.0 a, 1.1 b, 1.1 wakeproxy")]),
            ([(b"Location", b"/x"), (b"Cache-Control", b"no-store")],
             [(b"Location", b"/x"), (b"Cache-Control", b"no-store"), via]),
            ([(b"X-Forwarded-For", b"1.2.3.4")],
             [(b"X-Forwarded-For", b"1.2.3.4"), via]),
            ([(b"Connection", b"Content-Length"), (b"Content-Length", b"1")],
             [via]),
            ([(b"Content-Type", b"a"), (b"Content-Type", b"b")],
             [(b"Content-Type", b"a"), (b"Content-Type", b"b"), via]),
        ]
        for headers, expected in cases:
            self.assertEqual(
                response_headers(headers, _VIA), expected, headers
            )


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
