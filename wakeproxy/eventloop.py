# -*- test-case-name: tests.test_eventloop -*-
"""
The reactor's loop, without Twisted's per-event log context.

For every ready descriptor, Twisted's epoll reactor calls C{log.callWithLogger(selectable, ...)}: it asks
the selectable for its C{logPrefix}, pushes a context dictionary C{{"system": prefix}} on a thread-local
stack, calls C{_doReadOrWrite}, and pops it (about ten Python calls). The only reader of that context is
the legacy C{twisted.python.log} observer, to prefix lines logged from inside an I/O callback; wakeproxy
logs with C{twisted.logger} and names its own namespaces. On the warm path every request is two such
events (the client's head, the upstream's response), and the context cost 35 -> 30 µs of CPU per request
at c=32 (C{python -m bench.cpu_per_request --compare}).

L{lean_poll} gives the reactor twistd installed a C{doIteration} that dispatches each event straight to
the reactor's own C{_doReadOrWrite} (which already logs and disconnects on a selectable's error), except a
plain read event on a TCP connection, which L{_read} handles in one frame with the same outcomes; and it
calls what L{at_end_of_pass} registered (the relay's queued sends, L{wakeproxy.http.sockets}) after each
pass's events and before each wait, which saves a C{callLater(0)} per pass. It reads private attributes
of Twisted's C{EPollReactor} (L{_NEEDED}): with any other reactor, or a Twisted without them, it changes
nothing and says so.
"""

from __future__ import annotations

import weakref
from typing import Callable

import select

from twisted.internet import tcp
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.logger import Logger
from twisted.python import log as twisted_log

__all__ = ["at_end_of_pass", "lean_poll"]

log = Logger()

_NEEDED = ("_poller", "_selectables", "_doReadOrWrite", "_disconnectSelectable", "doIteration")
#: the connections whose plain read events L{_read} handles (TLS ones too: TLS is their protocol)
_TCP = (tcp.Server, tcp.Client)
_IN = getattr(select, "EPOLLIN", None)


def lean_poll(reactor) -> bool:
    """Make C{reactor}'s loop skip the per-event log context; True if it did (an epoll reactor)."""
    try:
        from twisted.internet.epollreactor import EPollReactor
    except ImportError:  # no epoll on this platform
        return False
    if type(reactor) is not EPollReactor or not all(hasattr(reactor, name) for name in _NEEDED):
        return False
    if reactor not in _pass_ends:
        ends = _pass_ends[reactor] = []

        def iterate(timeout) -> None:
            for end in ends:
                end()  # what timers queued since the last pass, before waiting
            _poll(reactor, timeout)
            for end in ends:
                end()

        reactor.doIteration = iterate
    return True


def at_end_of_pass(reactor, call: Callable[[], None]) -> bool:
    """
    Have C{reactor}'s loop call C{call} after the events of each pass (and before it waits again); False
    when C{reactor} is not lean (then the caller needs its own C{callLater(0)}).
    """
    ends = _pass_ends.get(reactor)
    if ends is None:
        return False
    ends.append(call)
    return True


_pass_ends: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _poll(self, timeout) -> None:
    """C{EPollReactor.doPoll}, minus C{log.callWithLogger} around each event."""
    try:
        events = self._poller.poll(-1 if timeout is None else timeout, len(self._selectables))
    except InterruptedError:  # EINTR: a signal handler ran; the loop comes round again
        return
    selectables = self._selectables
    dispatch = self._doReadOrWrite
    for fd, event in events:
        selectable = selectables.get(fd)
        if selectable is None:
            continue
        try:
            if event == _IN and type(selectable) in _TCP:
                _read(self, selectable)
            else:
                dispatch(selectable, fd, event)
        except Exception:  # both handle a selectable's own errors; this is its disconnect failing
            log.failure("dispatching an event on fd {fd} failed", fd=fd)


def _read(reactor, connection) -> None:
    """
    A read event on a TCP connection: what C{_doReadOrWrite}, C{Connection.doRead} and C{_dataReceived}
    do for it, in one frame instead of three (the same outcomes: data to the protocol; a failed read is a
    lost connection, an empty one a clean end, the protocol's exception is logged and loses it).
    """
    try:
        data = connection.socket.recv(connection.bufferSize)
    except BlockingIOError:
        return
    except OSError:
        reactor._disconnectSelectable(connection, CONNECTION_LOST, True)
        return
    if not data:
        reactor._disconnectSelectable(connection, CONNECTION_DONE, True)
        return
    try:
        connection.protocol.dataReceived(data)
    except BaseException as e:
        twisted_log.err()
        reactor._disconnectSelectable(connection, e, False)
