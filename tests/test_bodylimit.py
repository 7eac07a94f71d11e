"""The deploy API's request factory stores at most max_body bytes of a body and only counts the rest."""

import json

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from wakeproxy.api.bodylimit import limited_request


class _Report(Resource):
    isLeaf = True

    def render(self, request):
        request.content.seek(0)
        stored = request.content.read()
        return json.dumps({"stored": len(stored), "received": request.body_length,
                           "too_large": request.body_too_large,
                           "on_disk": not hasattr(request.content, "getvalue")}).encode()


class LimitedRequestTests(SynchronousTestCase):
    def send(self, raw: bytes) -> dict:
        site = Site(_Report(), requestFactory=limited_request(100), reactor=Clock())
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        reply = transport.value()
        self.assertTrue(reply.startswith(b"HTTP/1.1 200"), reply[:200])
        return json.loads(reply.split(b"\r\n\r\n", 1)[1])

    def test_table(self):
        def plain(n):
            return b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % n + b"a" * n

        def chunked(sizes):
            body = b"".join(b"%x\r\n" % n + b"b" * n + b"\r\n" for n in sizes) + b"0\r\n\r\n"
            return b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + body

        cases = [
            (plain(0), {"stored": 0, "received": 0, "too_large": False}),
            (plain(100), {"stored": 100, "received": 100, "too_large": False}),
            (plain(101), {"stored": 0, "received": 101, "too_large": True}),
            (plain(500000), {"stored": 0, "received": 500000, "too_large": True, "on_disk": False}),
            (chunked([40, 40]), {"stored": 80, "received": 80, "too_large": False}),
            (chunked([60, 60, 60]), {"stored": 0, "received": 180, "too_large": True}),
        ]
        for raw, expected in cases:
            got = self.send(raw)
            for key, value in expected.items():
                self.assertEqual(got[key], value, (raw[:80], got))
