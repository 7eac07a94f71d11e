# -*- test-case-name: tests.test_relay_flow -*-
"""
Flow control and aborts of the proxy listener's relay (L{wakeproxy.http.relay}, L{wakeproxy.http.exchange},
L{wakeproxy.http.upstreampool}), without Docker, on the L{tests.relaywire} harness (StringTransports and a
MemoryReactorClock).

Only what a socket would see is checked: a transport's buffer filling up is a call to its registered
producer's C{pauseProducing} (what a real transport does), the relay's answer is the other transport's
C{producerState}; aborts are C{abortConnection} (C{state == "aborted"}) against C{loseConnection}
(C{"closed"}); "not pooled" is the next request opening a new upstream connection.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.trial.unittest import SynchronousTestCase

from tests.relaywire import World, chunked, request, response
from tests.test_relay import WS_101, WS_REQUEST

class _FlowCase(SynchronousTestCase):
    def world(self, **options) -> World:
        world = World(**options)
        self.addCleanup(world.cleanup)
        return world

    def full(self, end) -> None:
        """C{end}'s socket buffer is full: its transport tells the producer registered on it."""
        end.transport.producer.pauseProducing()

    def drained(self, end) -> None:
        """C{end}'s socket buffer has room again."""
        end.transport.producer.resumeProducing()

    def reading(self, end) -> bool:
        """Does the relay read from C{end}'s connection (its transport not paused by the relay)?"""
        return end.transport.producerState == "producing"

    def inflight(self, world) -> int:
        return world.waker.describe("app")["inflight"]

    def mid_body(self, world, framing: Optional[bytes] = b"Content-Length: 100", part: bytes = b"partial"):
        """
        A client whose GET is answered up to C{part} of a body framed by C{framing} (None: delimited by the
        close): C{(client, upstream)}.
        """
        client = world.client()
        client.send(request(b"GET /"))
        upstream = world.upstream()
        upstream.send(response(b"200 OK", *((framing,) if framing else ())) + part)
        return client, upstream

    def next_request_connects(self, world) -> bool:
        """A new client's request: did it need a new upstream connection (none reusable in the pool)?"""
        before = world.connects
        world.client().send(request(b"GET /next"))
        return world.connects > before


class ClientSlowerTests(_FlowCase):
    """A client that reads slower than the upstream sends: the upstream is not read meanwhile."""

    def test_streamed_body_pauses_and_resumes_the_upstream(self):
        world = self.world()
        client, upstream = self.mid_body(world, b"Content-Length: 30", b"a" * 10)
        self.assertTrue(self.reading(upstream))
        self.full(client)
        self.assertFalse(self.reading(upstream), "a full client stops the reads from the upstream")
        upstream.send(b"b" * 10)  # already on its way when the reads stopped
        self.assertFalse(self.reading(upstream))
        self.full(client)  # told twice: still one pause
        self.drained(client)
        self.assertTrue(self.reading(upstream))
        self.drained(client)  # told twice: still reading
        self.assertTrue(self.reading(upstream))
        upstream.send(b"c" * 10)
        self.assertEqual(client.response().body, b"a" * 10 + b"b" * 10 + b"c" * 10)
        self.assertFalse(self.next_request_connects(world), "the finished connection went back to the pool")

    def test_chunked_body_paused_across_chunks(self):
        world = self.world()
        client = world.client()
        client.send(request(b"GET /chunks"))
        upstream = world.upstream()
        body = chunked(b"one", b"two", b"three")
        upstream.send(response(b"200 OK", b"Transfer-Encoding: chunked") + body[:9])
        self.full(client)
        pos = 9
        while pos < len(body) - 5:  # a few bytes at a time while paused: it stays paused
            upstream.send(body[pos:pos + 4])
            pos += 4
            self.assertFalse(self.reading(upstream), pos)
        self.drained(client)
        self.assertTrue(self.reading(upstream))
        upstream.send(body[pos:])
        self.assertEqual(client.response().body, b"onetwothree")

    def test_paused_client_when_the_response_ends(self):
        """The response ends while the client is still full: the pooled connection is read again."""
        world = self.world()
        client, upstream = self.mid_body(world, b"Content-Length: 6", b"abc")
        self.full(client)
        upstream.send(b"def")
        self.assertTrue(self.reading(upstream), "an idle pooled connection is read (to see it close)")
        self.assertEqual(client.response().body, b"abcdef")
        self.drained(client)
        self.assertTrue(self.reading(upstream))

    def test_pause_follows_the_exchange_to_its_connection(self):
        """After a keep-alive exchange, a full client pauses the connection of its current exchange only."""
        world = self.world()
        client = world.client()
        client.send(request(b"GET /1"))
        first = world.upstream()
        other = world.client()
        other.send(request(b"GET /other"))
        second = world.upstream()
        first.send(response(body=b"1"))
        client.send(request(b"GET /2"))
        self.assertEqual(world.connect(), [], "/2 goes on the pooled connection")
        first.send(response(b"200 OK", b"Content-Length: 4") + b"2")
        self.full(client)
        self.assertFalse(self.reading(first))
        self.assertTrue(self.reading(second), "another client's upstream is not paused")
        self.drained(client)
        first.send(b"222")
        self.assertEqual([r.body for r in client.responses()], [b"1", b"2222"])


class UpstreamSlowerTests(_FlowCase):
    """An upstream that reads slower than the client sends a request body: the client is not read meanwhile."""

    def test_request_body_pauses_and_resumes_the_client(self):
        world = self.world()
        client = world.client()
        client.send(request(b"POST /up", b"Content-Length: 30", body=b"a" * 10))
        upstream = world.upstream()
        self.assertTrue(self.reading(client))
        self.full(upstream)
        self.assertFalse(self.reading(client), "a full upstream stops the reads from the client")
        client.send(b"b" * 10)  # already on its way
        self.assertFalse(self.reading(client))
        self.drained(upstream)
        self.assertTrue(self.reading(client))
        client.send(b"c" * 10)
        self.assertEqual(upstream.requests()[0].body, b"a" * 10 + b"b" * 10 + b"c" * 10)
        upstream.send(response(body=b"ok"))
        self.assertEqual(client.response().body, b"ok")
        self.assertTrue(self.reading(client))

    def test_chunked_request_body(self):
        world = self.world()
        client = world.client()
        body = chunked(b"x" * 5, b"y" * 7, trailers=(b"X-Sum: 1",))
        client.send(request(b"POST /up", b"Transfer-Encoding: chunked", body=body[:6]))
        upstream = world.upstream()
        self.full(upstream)
        self.assertFalse(self.reading(client))
        client.send(body[6:12])
        self.drained(upstream)
        self.assertTrue(self.reading(client))
        client.send(body[12:])
        sent = upstream.requests()[0]
        self.assertEqual((sent.body, sent.trailers), (b"x" * 5 + b"y" * 7, (b"X-Sum: 1",)))

    def test_upstream_full_after_the_body_does_not_stop_the_client(self):
        """Once the request is sent, a full upstream has nothing of the client's to hold back."""
        world = self.world()
        client = world.client()
        client.send(request(b"POST /up", b"Content-Length: 2", body=b"ab"))
        upstream = world.upstream()
        upstream.send(response(body=b"done"))
        self.full(upstream)
        self.assertTrue(self.reading(client))
        self.drained(upstream)
        self.assertTrue(self.reading(client))
        client.send(request(b"GET /again"))
        self.assertEqual([m.target for m in upstream.requests()], [b"/up", b"/again"])


class ClientAbortTests(_FlowCase):
    """The client goes away before its response is over: the upstream connection is aborted, never reused."""

    def check_aborted(self, world, upstream) -> None:
        self.assertEqual(upstream.state, "aborted")
        self.assertEqual(self.inflight(world), 0)
        self.assertTrue(self.next_request_connects(world), "the aborted connection is not in the pool")

    def test_reset_mid_body(self):
        world = self.world()
        client, upstream = self.mid_body(world)
        client.lose(ConnectionLost())
        self.check_aborted(world, upstream)

    def test_clean_close_mid_body(self):
        """A FIN from the client is not "done" either: the rest of the body would poison the pool."""
        world = self.world()
        client, upstream = self.mid_body(world, b"Transfer-Encoding: chunked", b"5\r\nhel")
        client.lose(ConnectionDone())
        self.check_aborted(world, upstream)

    def test_gone_while_paused(self):
        world = self.world()
        client, upstream = self.mid_body(world)
        self.full(client)
        client.lose(ConnectionLost())
        self.check_aborted(world, upstream)

    def test_gone_before_the_response_head(self):
        world = self.world()
        client = world.client()
        client.send(request(b"GET /slow"))
        upstream = world.upstream()
        self.assertEqual(len(upstream.requests()), 1)
        client.lose(ConnectionLost())
        self.check_aborted(world, upstream)

    def test_gone_mid_request_body(self):
        world = self.world()
        client = world.client()
        client.send(request(b"POST /up", b"Content-Length: 100", body=b"x" * 10))
        upstream = world.upstream()
        client.lose(ConnectionLost())
        self.check_aborted(world, upstream)


class UpstreamAbortTests(_FlowCase):
    """The upstream goes away inside a response body: the client's connection is aborted, not ended cleanly."""

    def check_aborted(self, world, client) -> None:
        self.assertEqual(client.state, "aborted")
        [partial] = client.responses()
        self.assertFalse(partial.complete)
        self.assertEqual(self.inflight(world), 0)

    def test_reset_mid_length_body(self):
        world = self.world()
        client, upstream = self.mid_body(world)
        upstream.reset()
        self.check_aborted(world, client)

    def test_clean_close_mid_length_body(self):
        """A FIN before Content-Length bytes is a truncated body all the same."""
        world = self.world()
        client, upstream = self.mid_body(world)
        upstream.close()
        self.check_aborted(world, client)

    def test_close_mid_chunk(self):
        for end in ("close", "reset"):
            world = self.world()
            client, upstream = self.mid_body(world, b"Transfer-Encoding: chunked", b"a\r\nhello")
            getattr(upstream, end)()
            self.check_aborted(world, client)

    def test_abort_while_the_client_is_paused(self):
        world = self.world()
        client, upstream = self.mid_body(world)
        self.full(client)
        upstream.reset()
        self.check_aborted(world, client)

    def test_close_delimited_body_ends_cleanly(self):
        """
        The contrast: a body without framing ends with the upstream's FIN; the client gets it re-framed
        (chunked), complete, on a connection that stays open.
        """
        world = self.world()
        client, upstream = self.mid_body(world, None, b"all of it")
        upstream.close()
        self.assertEqual(client.state, "open")
        answer = client.response()
        self.assertTrue(answer.complete)
        self.assertEqual((answer.header(b"Transfer-Encoding"), answer.body), (b"chunked", b"all of it"))
        self.assertEqual(self.inflight(world), 0)


class TunnelFlowTests(_FlowCase):
    """After a 101, each side's full buffer stops the reads from the other."""

    def tunnel(self, world):
        return world.tunnel(WS_REQUEST, WS_101)

    def test_client_full_pauses_the_upstream(self):
        world = self.world()
        client, upstream = self.tunnel(world)
        self.full(client)
        self.assertFalse(self.reading(upstream))
        self.assertTrue(self.reading(client), "the other direction still flows")
        upstream.send(b"\x81\x02hi")
        self.assertEqual(client.received(), b"\x81\x02hi", "bytes already read are passed on")
        self.drained(client)
        self.assertTrue(self.reading(upstream))

    def test_upstream_full_pauses_the_client(self):
        world = self.world()
        client, upstream = self.tunnel(world)
        self.full(upstream)
        self.assertFalse(self.reading(client))
        self.assertTrue(self.reading(upstream))
        client.send(b"raw")
        self.assertEqual(upstream.received(), b"raw")
        self.drained(upstream)
        self.assertTrue(self.reading(client))

    def test_both_full_then_drained(self):
        world = self.world()
        client, upstream = self.tunnel(world)
        self.full(client)
        self.full(upstream)
        self.assertEqual((self.reading(client), self.reading(upstream)), (False, False))
        self.drained(client)
        self.assertEqual((self.reading(client), self.reading(upstream)), (False, True))
        self.drained(upstream)
        self.assertEqual((self.reading(client), self.reading(upstream)), (True, True))

    def test_side_gone_while_the_other_is_paused(self):
        world = self.world()
        client, upstream = self.tunnel(world)
        self.full(client)
        client.lose(ConnectionLost())
        self.assertIn(upstream.state, ("closed", "aborted"))
        world = self.world()
        client, upstream = self.tunnel(world)
        self.full(upstream)
        upstream.reset()
        self.assertIn(client.state, ("closed", "aborted"))
