"""The proxy listener's access log (L{wakeproxy.http.accesslog}): one line per exchange, JSON or Combined."""

import io
import json

from twisted.trial.unittest import SynchronousTestCase

from tests.relaywire import World, request, response
from wakeproxy.http.accesslog import AccessLog


class AccessLogTests(SynchronousTestCase):
    def world(self, fmt, **options):
        world = World(**options)
        self.addCleanup(world.cleanup)
        out = io.StringIO()
        world.factory.access_log = AccessLog(out, fmt)
        return world, out

    def test_json_line_per_exchange(self):
        world, out = self.world("json")
        client = world.client()
        client.send(request(b"POST /up?x=1", b"Content-Length: 5", b"User-Agent: curl/8", body=b"hello"))
        world.reactor.advance(0.25)
        world.upstream().send(response(body=b"answer"))
        client.send(request(b"GET /nope", cookie=b"instance=missing"))
        first, second = [json.loads(line) for line in out.getvalue().splitlines()]
        self.assertEqual({k: first[k] for k in ("client", "instance", "method", "target", "status", "bytes_in",
                                                 "bytes_out", "woke", "tunnel")},
                         {"client": "127.0.0.1", "instance": "app", "method": "POST", "target": "/up?x=1",
                          "status": 200, "bytes_in": 5, "bytes_out": 6, "woke": False, "tunnel": False})
        self.assertEqual(first["duration_ms"], 250.0)
        self.assertEqual((second["status"], second["instance"]), (404, None))

    def test_a_woken_request_says_so(self):
        world, out = self.world("json", state="exited", ready=False)
        client = world.client()
        client.send(request(b"GET /"))
        world.plan.probes[-1].callback(True)
        world.connect()[-1].send(response(body=b"ok"))
        (entry,) = [json.loads(line) for line in out.getvalue().splitlines()]
        self.assertTrue(entry["woke"])
        self.assertIn("total;dur=", entry["wake"])

    def test_combined_format(self):
        world, out = self.world("combined")
        client = world.client()
        client.send(request(b"GET /a", b"Referer: http://x/", b"User-Agent: curl/8"))
        world.upstream().send(response(body=b"ok"))
        line = out.getvalue().strip()
        self.assertRegex(line, r'^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /a HTTP/1\.1" 200 2 '
                               r'"http://x/" "curl/8" instance=app duration_ms=[\d.]+ bytes_in=0 woke=0$')


class JsonObserverTests(SynchronousTestCase):
    def test_events_become_json_records_on_stdout(self):
        import sys

        from twisted.logger import Logger, LogPublisher

        from wakeproxy.http.accesslog import json_observer

        out = io.StringIO()
        self.patch(sys, "stdout", out)
        publisher = LogPublisher(json_observer())
        Logger(namespace="wakeproxy.test", observer=publisher).info("woke {instance}", instance="demo-1")
        record = json.loads(out.getvalue().strip("\x1e\n"))
        self.assertEqual((record["instance"], record["log_namespace"]), ("demo-1", "wakeproxy.test"))
