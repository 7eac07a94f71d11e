# -*- test-case-name: tests.test_sockets,tests.test_relay -*-
"""
Socket-level speed for the relay's transports: C{TCP_NODELAY} on every socket, C{TCP_QUICKACK} re-armed
after each upstream read, and an eager write.

Why QUICKACK: an upstream that writes its head and body in two writes (Python's http.server, many
frameworks) meets Nagle's algorithm against our delayed ACK on a pooled connection: ~44 ms per request.
Setting C{TCP_QUICKACK} sends a pending ACK at once (Linux clears the mode by itself), so the upstream
connection sets it after every read that leaves a response incomplete (measured: 44 ms -> 0.1 ms); a
response that arrives whole costs no extra system call.

Why eager: C{transport.write} always waits for the reactor's next writable event (an epoll_ctl pair and
a loop pass per write). When nothing is queued on a plain TCP transport, L{eager_writer}'s function calls
C{socket.send} itself and hands only a remainder to C{transport.write} (measured: +37 % requests/s).
TLS and other transports always use C{transport.write}. This reads two attributes of Twisted's
C{FileDescriptor} (its write queue); without them it falls back to C{transport.write}.

Why at the end of the reactor pass, not at once: a send to a loopback peer that sleeps in C{epoll_wait}
wakes it, and in a VM that wake-up (an IPI) costs more than the send. Sending at once wakes the client or
upstream once per write; queueing the pass's sends (sent after every event of the pass and before the
next C{epoll_wait}: by L{wakeproxy.eventloop}'s loop, else by one C{callLater(0)}) wakes each peer about
once per pass, whose events it then
finds together. Measured on the warm path at c=32: 53 -> 39 µs of CPU per request, system time halved.
Writes to one transport stay in order (a transport with sends queued queues every later write too, and
consecutive writes to one transport become one send); the transport's C{loseConnection} and
C{loseWriteConnection} send the queued bytes first (from a timer's call, Twisted's next writable event
could otherwise close the socket before the flush).
"""

from __future__ import annotations

import socket
import weakref
from typing import Callable, Optional

from twisted.internet import tcp

from wakeproxy.eventloop import at_end_of_pass

__all__ = ["HalfClose", "eager_writer", "peer_gone", "quickack", "raw_socket", "set_nodelay"]

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def raw_socket(transport) -> Optional[socket.socket]:
    """The TCP socket under C{transport} (through TLS wrappers), or None (UNIX sockets, test transports)."""
    for _ in range(4):
        sock = getattr(transport, "socket", None)
        if isinstance(sock, socket.socket):
            return sock if sock.family in (socket.AF_INET, socket.AF_INET6) else None
        transport = getattr(transport, "transport", None)
        if transport is None:
            return None
    return None


def set_nodelay(sock: Optional[socket.socket]) -> None:
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def quickack(sock: Optional[socket.socket]) -> None:
    if sock is not None and _QUICKACK is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        except OSError:
            pass


def peer_gone(transport) -> bool:
    """
    Whether the peer of a TCP connection that is not being read has reset it or closed it with nothing left
    to read (a one-byte C{MSG_PEEK}, which consumes nothing): a paused transport is out of the reactor's read
    set, so it would not notice either until it read again. False when it cannot tell (not TCP).
    """
    sock = raw_socket(transport)
    if sock is None:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def eager_writer(transport) -> Callable[[bytes], None]:
    """A C{write(data)} for C{transport} that sends itself, at the end of the reactor pass (see above)."""
    if not isinstance(transport, tcp.Connection) or not hasattr(transport, "_tempDataLen") \
            or not hasattr(transport, "dataBuffer"):
        return transport.write
    send = transport.socket.send
    later = transport.write
    batch = _batch(transport.reactor)
    queued = False  # whether this transport has bytes in the batch

    def send_queued(data: bytes) -> None:
        nonlocal queued
        queued = False
        if not transport.connected:
            return  # the connection is gone, and its bytes with it
        if transport._tempDataLen or transport.dataBuffer and len(transport.dataBuffer) != transport.offset:
            later(data)  # Twisted still holds bytes of this transport: after them
            return
        try:
            sent = send(data)
        except OSError:
            sent = 0  # would block, or the connection broke: the reactor finds out on its own write
        if sent < len(data):
            later(data[sent:] if sent else data)

    def write(data: bytes) -> None:
        nonlocal queued
        if queued:
            batch.add_to_last(send_queued, data)
        else:  # whether Twisted still holds bytes of this transport is asked when sending (same order)
            queued = True
            batch.add(send_queued, data)

    def closing(close: Callable) -> Callable:
        def close_after_queued(*args, **kwargs):
            if queued:
                batch.flush()  # a close from a timer would otherwise come first: Twisted's next writable event
            return close(*args, **kwargs)
        return close_after_queued

    transport.loseConnection = closing(transport.loseConnection)
    transport.loseWriteConnection = closing(transport.loseWriteConnection)
    return write


class _Batch:
    """One reactor's sends queued during its current pass, sent together at its end."""

    def __init__(self, reactor) -> None:
        self._reactor = reactor
        self._queued: list = []  # [send, data] pairs, in write order
        self._each_pass = at_end_of_pass(reactor, self.flush)

    def add(self, send: Callable[[bytes], None], data: bytes) -> None:
        if not self._queued and not self._each_pass:
            self._reactor.callLater(0, self.flush)
        self._queued.append([send, data])

    def add_to_last(self, send: Callable[[bytes], None], data: bytes) -> None:
        """Queue C{data} after C{send}'s queued bytes: joined with them when they are the last queued."""
        last = self._queued[-1]
        if last[0] is send:
            last[1] += data
        else:
            self._queued.append([send, data])

    def flush(self) -> None:
        if not self._queued:
            return
        queued, self._queued = self._queued, []
        for send, data in queued:
            send(data)


_batches: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _batch(reactor) -> _Batch:
    batch = _batches.get(reactor)
    if batch is None:
        batch = _batches[reactor] = _Batch(reactor)
    return batch


class HalfClose:
    """
    A tunnel's two directions on one transport: each ends on its own (C{read_ended}, and Twisted's
    C{writeConnectionLost}); the connection closes once both have.
    """

    _read_ended = False
    _write_ended = False

    def read_ended(self) -> None:
        self._read_ended = True
        if self._write_ended:
            self.transport.loseConnection()  # both directions of the tunnel are over

    def writeConnectionLost(self) -> None:
        self._write_ended = True
        if self._read_ended:
            self.transport.loseConnection()
