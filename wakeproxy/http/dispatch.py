# -*- test-case-name: tests.test_relay -*-
"""
What happens to each request on the proxy listener, decided from its head alone:

  0. C{--home-path}: forwarded to the home site (no selection, no waking, not anyone's activity);
  1. selector (cookie/path/host/header) -> instance name; then the access gate (C{--access}, gate.py): not
     allowed -> 401 problem+json (or 302 home for a browser), before anything says whether the instance
     exists; unknown: 404 problem+json, or 302 home for a browser navigation;
  2. C{X-Wakeproxy-Status}: the loading page's poll, answered here;
  3. wake policy: may this request wake the instance, and count as activity?
  4. ready: forwarded at once. Not ready: a no-wake request gets 503; a browser navigation gets the
     loading page (when enabled; never for an upgrade); anything else is held on the waker's single-flight
     wake and forwarded once the instance is ready, or answered with the wake's failure (502/503/504);
  5. forwarding takes one of the instance's upstream slots (C{--max-upstream-per-instance}, the rest wait
     in arrival order) and counts as activity while it lasts. An upgraded tunnel gives its slot back at
     the 101; from then on only its data frames count as activity (C{--idle-tunnel data}), or the open
     tunnel does (C{open}). Tunnels of an instance that goes to sleep get a WebSocket close 1001.

The relay (L{relay.Exchange}) carries the decision out; this module never touches the wire.
"""

from __future__ import annotations

from collections import deque
from functools import lru_cache
from typing import Callable, Optional

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger

from wakeproxy import answers
from wakeproxy.http.upstreampool import Upstream
from wakeproxy.http.headers import ORIGIN_FORM
from wakeproxy.waking.labels import idle_tunnel, loading_page
from wakeproxy.http.loadingpage import STATUS_HEADER
from wakeproxy.runtime.interface import IContainerRuntime
from wakeproxy.http.selector import Head, Selection
from wakeproxy.waking.waker import Ticket, WakeFailure, Waker
from wakeproxy.waking.wakepolicy import WakePolicy

__all__ = ["Dispatcher", "SYNC_TIMEOUT"]

#: seconds a request waits for the runtime's first list of containers at start-up
SYNC_TIMEOUT = 30
#: Dispatcher._select's key when the answer is not to be cached
_UNCACHED = object()


class _Pairs:
    """Lower-cased header name -> values, over a head's raw pairs (what selectors read; read when asked)."""

    __slots__ = ("_head", "_pairs")

    def __init__(self, head):
        self._head = head
        self._pairs = None

    def get(self, name: bytes, default=()):
        if self._pairs is None:
            self._pairs = self._head.headers
        values = [v for k, v in self._pairs if k.lower() == name]
        return values or default


class _Slots:
    """An instance's upstream slots: a counter, and a FIFO of exchanges waiting for one."""

    __slots__ = ("busy", "queue")

    def __init__(self):
        self.busy = 0
        self.queue = deque()


class Dispatcher:
    log = Logger()

    def __init__(self, selector: Callable[[Head], Selection], runtime: IContainerRuntime, waker: Waker,
                 upstream: Optional[Upstream] = None, home_url: str = "/home", max_upstream_per_instance: int = 64,
                 policy: Optional[WakePolicy] = None, loading_page: bool = False, home_path: Optional[str] = None,
                 home_upstream: Optional[Upstream] = None, idle_tunnel: str = "data", clock=None, gate=None):
        self._selector = selector
        self._reads = getattr(selector, "reads", None)  # the one header a selection depends on, if any
        self._selections: dict = {}
        self._runtime = runtime
        self._waker = waker
        self._upstream = upstream
        self._home_url = home_url.encode("utf-8")
        self._home_path = home_path.rstrip("/").encode("utf-8") if home_path and home_upstream else None
        self._home_upstream = home_upstream
        self._max_upstream = max_upstream_per_instance
        self._slots: dict[str, _Slots] = {}
        self._policy = policy or WakePolicy()
        self._loading_page = loading_page
        self._idle_tunnel = idle_tunnel
        self._tunnels: dict[str, set] = {}
        self._clock = clock
        self._gate = gate  # who may use an instance (gate.py); None: everyone (--access open)
        self._synced = False
        runtime.watch(self._forget)
        runtime.ready().addCallback(self._sync_done)
        waker.before_sleep(self.close_tunnels)
        self._on_end = self._ended  # bound once, not per request
        self._on_tunnel = self._tunnel_opened

    def _forget(self, name: str, container) -> None:
        if container is None:
            self._slots.pop(name, None)

    def _sync_done(self, _) -> None:
        self._synced = True

    # the decision

    def dispatch(self, exchange) -> None:
        head = exchange.head
        target = head.target
        if head.method == b"TRACE":
            exchange.answer(answers.problem(405, "wakeproxy does not relay TRACE requests"))
            return
        if _origin_form(target) is None:
            exchange.close_after = True
            exchange.answer(answers.problem(400, "the request target must be a path (origin-form), not {!r}".format(
                target[:64].decode("latin-1"))))
            return
        home = self._home_path
        if home is not None and target.startswith(home) and _under(target.split(b"?", 1)[0], home):
            exchange.forward(self._home_upstream, target, ())
            return
        if not self._synced:
            self._after_sync(exchange)
            return
        reads = self._reads
        if reads is None:
            selection = self._select(head)
            uri = selection.uri
        else:
            key = head.cookie if reads == b"cookie" else head.host
            selection = self._selections.get(key) or self._select(head, key)
            uri = target
        name = selection.name
        if name is not None and self._gate is not None:
            verdict = self._gate.check(head, name)
            if verdict is not None:
                if isinstance(verdict, Deferred):
                    exchange.on_gone = verdict.cancel
                    verdict.addCallback(self._gated, exchange, selection, uri)
                    verdict.addErrback(self._gate_failed, exchange)
                else:
                    self._refuse(exchange, verdict)
                return
        self._selected(exchange, selection, uri)

    def _gated(self, verdict, exchange, selection: Selection, uri: bytes) -> None:
        exchange.on_gone = None
        if exchange.gone:
            return
        if verdict is not None:
            self._refuse(exchange, verdict)
        else:
            self._selected(exchange, selection, uri)

    def _gate_failed(self, failure, exchange) -> None:
        if failure.check(CancelledError) and exchange.gone:
            return
        self.log.failure("the access check failed", failure)
        exchange.answer(answers.problem(503, "the access check failed; try again shortly", retry_after=5))

    def _refuse(self, exchange, verdict) -> None:
        """Not allowed: the gate's own answer, a redirect home for a browser, else 401."""
        if isinstance(verdict, answers.Answer):
            exchange.answer(verdict)
        else:
            self._home_or_problem(exchange, 401, verdict)

    def _selected(self, exchange, selection: Selection, uri: bytes) -> None:
        """The request may use the instance it selected (or names none): what happens to it."""
        head = exchange.head
        name = selection.name
        # a ticket means a ready instance, so one the runtime knows (the waker drops it when the runtime does)
        ticket = self._waker.ticket(name) if name is not None else None
        if ticket is None and (name is None or self._runtime.get(name) is None):
            self._unknown(exchange, selection.reason or "no managed instance named {!r}".format(name))
            return
        noted = head.noted
        if noted and STATUS_HEADER in noted:
            exchange.answer(answers.status(name, self._waker.is_ready(name), self._waker.describe(name)))
            return
        wakes = self._policy.wakes(uri, noted.get(b"user-agent"))
        if ticket is not None:
            self._forward(exchange, name, uri, (), wakes, ticket)
            return
        if not wakes:
            exchange.answer(answers.problem(503, "instance {} is asleep and this request (its path or user agent) "
                                                 "does not wake it".format(name), retry_after=30))
            return
        if head.upgrade is None and _wants_html(head) and loading_page(self._runtime.get(name), self._loading_page):
            self._waker.wait_ready(name).addErrback(lambda f: None)  # the page polls for the outcome
            exchange.answer(answers.loading(name))
            return
        ready = self._waker.wait_ready(name)
        exchange.on_gone = ready.cancel
        ready.addCallbacks(self._woken, self._wake_failed, callbackArgs=(exchange, name, uri),
                           errbackArgs=(exchange,))

    def _select(self, head, key=_UNCACHED) -> Selection:
        """
        The selector's answer. With C{key} (the cookie or Host value of a selector that reads only that),
        kept in the cache of those answers: this is the cache's miss (the cache is read in L{dispatch}).
        """
        selection = self._selector(Head(head.method, head.target, _Pairs(head)))
        if key is not _UNCACHED:
            if len(self._selections) > 10000:
                self._selections.clear()
            self._selections[key] = selection
        return selection

    def _after_sync(self, exchange) -> None:
        """Before the runtime's first list nobody is known: hold the request until then (bounded)."""
        synced = self._runtime.ready()
        if self._clock is not None:
            synced.addTimeout(SYNC_TIMEOUT, self._clock)
        exchange.on_gone = synced.cancel

        def failed(failure) -> None:
            if not failure.check(CancelledError) or not exchange.gone:
                exchange.answer(answers.problem(503, "wakeproxy has not yet read the Docker engine's state",
                                                retry_after=2))

        def synced_now(_) -> None:
            exchange.on_gone = None
            if not exchange.gone:
                self.dispatch(exchange)

        synced.addCallbacks(synced_now, failed)

    def _unknown(self, exchange, reason: str) -> None:
        self._home_or_problem(exchange, 404, reason)

    def _home_or_problem(self, exchange, status: int, detail: str) -> None:
        """A browser navigation goes to the home page (never a redirect loop); anything else gets a problem."""
        head = exchange.head
        if _wants_html(head) and head.target.split(b"?", 1)[0] != self._home_url.split(b"?", 1)[0]:
            exchange.answer(answers.redirect(self._home_url))
        else:
            exchange.answer(answers.problem(status, detail))

    def _woken(self, ticket: Ticket, exchange, name: str, uri: bytes) -> None:
        exchange.on_gone = None
        extra = ()
        if ticket.report is not None:
            exchange.woke = ticket.report.server_timing()
            extra = ((b"Server-Timing", exchange.woke), (b"X-Wakeproxy-Woke", b"1"))
        self._forward(exchange, name, uri, extra, True, ticket)

    def _wake_failed(self, failure, exchange) -> None:
        exchange.on_gone = None
        if failure.check(CancelledError):
            return  # the client went away while held
        if not failure.check(WakeFailure):
            self.log.failure("holding a request failed", failure)
            exchange.answer(answers.problem(502, "wakeproxy failed while waking the instance"))
            return
        problem = answers.for_wake_failure(failure.value)
        exchange.answer(answers.problem(problem.status, problem.detail, problem.retry_after, **problem.extra))

    # forwarding: slots and activity

    def _forward(self, exchange, name: str, uri: bytes, extra, counted: bool, ticket: Ticket) -> None:
        upstream = self._upstream
        if upstream is None:
            address = ticket.reach.address  # the waker's: derived once per snapshot
            if address is None:
                self._unreachable(exchange, name, ticket.reach)
                return
            upstream = _direct_upstream(address)
        slots = self._slots.get(name)
        if slots is None:
            slots = self._slots[name] = _Slots()
        exchange.instance = name
        exchange.on_end = self._on_end
        exchange.on_tunnel = self._on_tunnel
        if counted:
            exchange.counted = True
            self._waker.exchange_began(name)
        if slots.busy < self._max_upstream:
            slots.busy += 1
            exchange.slot = slots
            exchange.forward(upstream, uri, extra)
            return
        item = (exchange, upstream, uri, extra)
        slots.queue.append(item)
        exchange.on_gone = lambda: _discard(slots.queue, item)

    def _unreachable(self, exchange, name: str, reach) -> None:
        """Direct mode, and the instance's labels give no address wakeproxy may (or can) forward to: 502."""
        if reach.refused is not None:
            self.log.warn("not forwarding to {instance}: {why}", instance=name, why=reach.refused)
            exchange.answer(answers.problem(502, "instance {} has no address wakeproxy may forward to (see "
                                                 "wakeproxy's log)".format(name)))
        else:
            self.log.warn("no address for {instance}: {why}", instance=name, why=reach.unknown)
            exchange.answer(answers.problem(502, "instance {} has no address wakeproxy can reach (see "
                                                 "wakeproxy's log)".format(name)))

    @staticmethod
    def _release(slots: _Slots) -> None:
        """A slot is given back: the first exchange still waiting for one takes it."""
        while slots.queue:
            exchange, upstream, uri, extra = slots.queue.popleft()
            if not exchange.gone and not exchange.done:
                exchange.on_gone = None
                exchange.slot = slots
                exchange.forward(upstream, uri, extra)
                return
        slots.busy = max(0, slots.busy - 1)

    def _ended(self, exchange) -> None:
        """The exchange's accounting, once, at its end: its slot back, and activity if it counted."""
        slots = exchange.slot
        if slots is not None:
            exchange.slot = None
            if slots.queue:
                self._release(slots)
            elif slots.busy:
                slots.busy -= 1
        if exchange.tunnel:
            self._tunnels.get(exchange.instance, set()).discard(exchange)
            if exchange.on_activity is not None:
                return  # a data-mode tunnel's exchange ended at its 101
        if exchange.counted:
            self._waker.exchange_ended(exchange.instance)

    def _tunnel_opened(self, exchange) -> None:
        """A 101: the tunnel gives its upstream slot back; activity from now on by its use."""
        name = exchange.instance
        slots = exchange.slot
        if slots is not None:
            exchange.slot = None
            self._release(slots)
        self._tunnels.setdefault(name, set()).add(exchange)
        container = self._runtime.get(name)
        mode = idle_tunnel(container, self._idle_tunnel) if container is not None else self._idle_tunnel
        if mode == "data" and exchange.counted:
            self._waker.exchange_ended(name)  # the upgrade exchange is over; data frames touch from now on
            waker = self._waker
            exchange.on_activity = lambda: waker.touch(name)

    def close_tunnels(self, name: str) -> None:
        """Before C{name} goes to sleep: its WebSocket clients get close 1001 and every tunnel closes."""
        for exchange in list(self._tunnels.pop(name, ())):
            exchange.going_away()

    def tunnels(self, name: str) -> int:
        return len(self._tunnels.get(name, ()))


@lru_cache(maxsize=4096)
def _direct_upstream(address: tuple) -> Upstream:
    """The pool's key for an app's (host, port): one value per address (a pure memo, not instance state)."""
    return Upstream("http", *address)


_origin_form = ORIGIN_FORM.fullmatch


def _discard(queue: deque, item) -> None:
    try:
        queue.remove(item)
    except ValueError:
        pass


def _under(path: bytes, prefix: bytes) -> bool:
    return path == prefix or path.startswith(prefix + b"/") or (prefix == b"" and path.startswith(b"/"))


def _wants_html(head) -> bool:
    return head.method in (b"GET", b"HEAD") and b"text/html" in head.noted.get(b"accept", b"")
