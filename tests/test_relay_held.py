# -*- test-case-name: tests.test_relay_held -*-
"""
Held requests whose body is not read yet (the relay does not read a connection while its request is held):
a client that resets or closes such a connection is noticed by the once-a-second sweep, which peeks at the
real socket (L{wakeproxy.http.sockets.peer_gone}), and its request is dropped, never replayed upstream.
The relay runs on a C{StringTransport} as in L{tests.test_relay}; a real loopback TCP socket pair under
that transport plays the client's connection as the kernel sees it.
"""

import socket
import struct

from twisted.trial.unittest import SynchronousTestCase

from tests.relaywire import World, request


class _Sockets:
    """A loopback TCP connection: C{server} (the relay's end, under its transport) and C{client}."""

    def __init__(self, testcase):
        listener = socket.create_server(("127.0.0.1", 0))
        self.client = socket.create_connection(listener.getsockname())
        self.server, _ = listener.accept()
        listener.close()
        for sock in (self.client, self.server):
            testcase.addCleanup(sock.close)

    def reset(self) -> None:
        self.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.client.close()


class HeldBodyClientGoneTests(SynchronousTestCase):
    def held(self, head: bytes):
        world = World(state="exited", ready=False)
        self.addCleanup(world.cleanup)
        sockets = _Sockets(self)
        client = world.client()
        client.transport.socket = sockets.server
        client.send(head)
        self.assertEqual(world.waker.describe("app")["held"], 1)
        self.assertTrue(client.paused, "its body is not read while it is held")
        return world, sockets, client

    def assertDropped(self, world, client) -> None:
        world.tick()
        self.assertEqual(client.state, "aborted")
        self.assertEqual(world.waker.describe("app")["held"], 0)
        world.plan.probes[-1].callback(True)  # the wake ends: nothing is replayed
        self.assertEqual(world.connects, 0)
        self.assertEqual(world.waker.describe("app")["inflight"], 0)

    def test_reset_with_content_length(self):
        world, sockets, client = self.held(request(b"POST /up", b"Content-Length: 10", body=b"0123"))
        sockets.reset()
        self.assertDropped(world, client)

    def test_reset_chunked(self):
        world, sockets, client = self.held(request(b"POST /up", b"Transfer-Encoding: chunked"))
        sockets.reset()
        self.assertDropped(world, client)

    def test_closed_before_its_body(self):
        """A clean close with nothing left to read: the body can never come."""
        world, sockets, client = self.held(request(b"PUT /up", b"Content-Length: 10"))
        sockets.client.close()
        self.assertDropped(world, client)

    def test_alive_client_stays_held(self):
        """Nothing to read yet, or body bytes waiting in the socket: the client is still there."""
        world, sockets, client = self.held(request(b"POST /up", b"Content-Length: 10", body=b"0123"))
        world.tick(3)
        sockets.client.sendall(b"456789")
        world.tick(3)
        self.assertEqual(client.state, "open")
        self.assertEqual(world.waker.describe("app")["held"], 1)
        world.plan.probes[-1].callback(True)
        upstream = world.upstream()
        self.assertEqual(upstream.requests()[0].body, b"0123", "replayed once ready, its body then streamed")

    def test_bodyless_needs_no_peek(self):
        """A bodyless held request keeps its connection read: its loss arrives as connectionLost."""
        world = World(state="exited", ready=False)
        self.addCleanup(world.cleanup)
        client = world.client()
        client.send(request(b"GET /a"))
        self.assertFalse(client.paused)
