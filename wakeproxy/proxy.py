# -*- test-case-name: tests.test_proxy -*-
"""
The proxy listener: request -> selector (which instance?) -> waker (ready? else hold and wake) ->
forwarder (stream it upstream), with a per-instance cap on concurrent upstream requests.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Callable, Iterator, Optional
from urllib.parse import urlsplit

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, DeferredSemaphore
from twisted.internet.ssl import Certificate
from twisted.logger import Logger
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from .forwarder import AgentForwarder, IForwarder, Upstream
from .headers import is_origin_form
from .idle import IdleStopper
from .labels import AddressError, direct_address, loading_page
from .loadingpage import STATUS_HEADER, page, status_body
from .metrics import Registry
from .problem import write_problem
from .readiness import Prober, ReadinessPlan
from .runtime import IContainerRuntime
from .selector import Head, Selection
from .waker import WakeFailure, WakeReport, Waker
from .wakepolicy import WakePolicy

__all__ = ["ProxyResource", "ProxyService", "upstream_from_url"]


class _HeaderView(Mapping):
    """Lower-cased header name -> raw values, read straight from a twisted Headers (no copy)."""

    __slots__ = ("_headers",)

    def __init__(self, headers):
        self._headers = headers

    def __getitem__(self, name: bytes):
        values = self._headers.getRawHeaders(name)
        if values is None:
            raise KeyError(name)
        return values

    def get(self, name, default=None):
        values = self._headers.getRawHeaders(name)
        return default if values is None else values

    def __iter__(self) -> Iterator[bytes]:
        return (name.lower() for name, _ in self._headers.getAllRawHeaders())

    def __len__(self) -> int:
        return sum(1 for _ in self._headers.getAllRawHeaders())


def upstream_from_url(url: str) -> Upstream:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Upstream(parts.scheme, parts.hostname or "", port)


def _wants_html(request) -> bool:
    if request.method not in (b"GET", b"HEAD"):
        return False
    accept = b",".join(request.requestHeaders.getRawHeaders(b"accept", []))
    return b"text/html" in accept


class ProxyResource(Resource):
    isLeaf = True
    log = Logger()

    def __init__(self, selector: Callable[[Head], Selection], runtime: IContainerRuntime, waker: Waker,
                 forwarder: IForwarder, upstream: Optional[Upstream] = None, home_url: str = "/home",
                 max_held_body: int = 10 * 1024 * 1024, max_upstream_per_instance: int = 64,
                 policy: Optional[WakePolicy] = None, loading_page: bool = False,
                 home_path: Optional[str] = None, home_upstream: Optional[Upstream] = None, clock=None):
        Resource.__init__(self)
        self._selector = selector
        self._runtime = runtime
        self._waker = waker
        self._forwarder = forwarder
        self._upstream = upstream
        self._home_url = home_url.encode("utf-8")
        self._max_held_body = max_held_body
        self._max_upstream = max_upstream_per_instance
        self._slots: dict[str, DeferredSemaphore] = {}
        #: instance -> (the snapshot its address was read from, that address), for direct mode
        self._direct: dict[str, tuple] = {}
        runtime.watch(self._forget)
        self._policy = policy or WakePolicy()
        self._loading_page = loading_page
        self._home_path = home_path.rstrip("/").encode("utf-8") if home_path and home_upstream else None
        self._home_upstream = home_upstream
        self._clock = clock
        self._synced = False
        runtime.ready().addCallback(self._sync_done)

    def _forget(self, name: str, container) -> None:
        """A removed instance leaves nothing behind here (requests already queued keep their slots)."""
        if container is None:
            self._slots.pop(name, None)
            self._direct.pop(name, None)

    def _sync_done(self, _) -> None:
        self._synced = True

    def render(self, request):
        if not is_origin_form(request.uri):
            write_problem(request, 400, "the request target must be a path (origin-form), not {!r}".format(
                request.uri[:64].decode("latin-1")))
            return NOT_DONE_YET
        if self._home_path is not None and _under(request.path, self._home_path):
            # the home site: no instance selection, no waking, not anyone's activity
            self._forwarder.forward(request, self._home_upstream, request.uri, ())
            return NOT_DONE_YET
        if not self._synced:
            self._after_sync(request)
            return NOT_DONE_YET
        return self._dispatch(request)

    def _after_sync(self, request) -> None:
        """Before the runtime's first list nobody is known: hold the request until then (bounded)."""
        synced = self._runtime.ready()
        if self._clock is not None:
            synced.addTimeout(SYNC_TIMEOUT, self._clock)
        request.notifyFinish().addErrback(lambda _: synced.cancel())

        def failed(failure) -> None:
            if not request._disconnected:
                write_problem(request, 503, "wakeproxy has not yet read the Docker engine's state", retry_after=2)

        synced.addCallbacks(lambda _: self._dispatch(request), failed)

    def _dispatch(self, request):
        selection = self._selector(Head(request.method, request.uri, _HeaderView(request.requestHeaders)))
        name = selection.name
        container = self._runtime.get(name) if name is not None else None
        if container is None:
            self._unknown(request, selection.reason or "no managed instance named {!r}".format(name))
            return NOT_DONE_YET
        if request.requestHeaders.hasHeader(STATUS_HEADER):
            self._status(request, name)
            return NOT_DONE_YET
        agent = request.requestHeaders.getRawHeaders(b"user-agent", [None])[0]
        wakes = self._policy.wakes(selection.uri, agent)
        if self._waker.is_ready(name):
            self._forward(request, name, selection.uri, (), counted=wakes)
            return NOT_DONE_YET
        if not wakes:
            write_problem(request, 503, "instance {} is asleep and this request (its path or user agent) does not "
                          "wake it".format(name), retry_after=30)
            return NOT_DONE_YET
        if _wants_html(request) and loading_page(container, self._loading_page):
            self._waker.wait_ready(name).addErrback(lambda f: None)  # the page polls for the outcome
            body = page(name)
            request.setResponseCode(503)
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            request.setHeader(b"cache-control", b"no-store")
            request.setHeader(b"retry-after", b"1")
            request.setHeader(b"content-length", str(len(body)).encode())
            request.write(body)
            request.finish()
            return NOT_DONE_YET
        size = _body_size(request)
        if size > self._max_held_body:
            write_problem(request, 413, "instance {} is waking and the request body ({} bytes) is larger than the "
                          "{} bytes wakeproxy holds meanwhile".format(name, size, self._max_held_body))
            return NOT_DONE_YET
        ready = self._waker.wait_ready(name)
        request.notifyFinish().addErrback(lambda _: ready.cancel())
        ready.addCallbacks(self._woken, self._wake_failed, callbackArgs=(request, name, selection.uri),
                           errbackArgs=(request,))
        return NOT_DONE_YET

    def _status(self, request, name: str) -> None:
        body = status_body(name, self._waker.is_ready(name), self._waker.describe(name))
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-length", str(len(body)).encode())
        request.write(body)
        request.finish()

    def _unknown(self, request, reason: str) -> None:
        if _wants_html(request) and request.path != self._home_url.split(b"?", 1)[0]:  # never a loop
            request.setResponseCode(302)
            request.setHeader(b"location", self._home_url)
            request.setHeader(b"cache-control", b"no-store")
            request.setHeader(b"content-length", b"0")
            request.finish()
        else:
            write_problem(request, 404, reason)

    def _woken(self, report: Optional[WakeReport], request, name: str, uri: bytes) -> None:
        extra = ()
        if report is not None:
            extra = ((b"server-timing", report.server_timing()), (b"x-wakeproxy-woke", b"1"))
        self._forward(request, name, uri, extra)

    def _wake_failed(self, failure, request) -> None:
        if failure.check(CancelledError):
            return  # the client went away while held
        if not failure.check(WakeFailure):
            self.log.failure("holding a request failed", failure)
            write_problem(request, 502, "wakeproxy failed while waking the instance")
            return
        error = failure.value
        retry_after = error.retry_after if error.retry_after is not None else (5 if error.status >= 503 else None)
        extra = {"phase": error.phase} if error.phase else {}
        write_problem(request, error.status, error.detail, retry_after=retry_after, **extra)

    def _forward(self, request, name: str, uri: bytes, extra, counted: bool = True) -> None:
        upstream = self._upstream
        if upstream is None:
            container = self._runtime.get(name)
            cached = self._direct.get(name)
            if cached is not None and cached[0] is container:
                upstream = cached[1]  # same snapshot as last time: same address
            else:
                try:
                    upstream = Upstream("http", *direct_address(container))
                except AddressError as e:
                    write_problem(request, 502, str(e))
                    return
                self._direct[name] = (container, upstream)
        slots = self._slots.get(name)
        if slots is None:
            slots = self._slots[name] = DeferredSemaphore(self._max_upstream)
        if counted:
            self._waker.exchange_began(name)
        slot = slots.acquire()
        if not slot.called:
            request.notifyFinish().addErrback(lambda _: slot.cancel())
        slot.addCallback(lambda _: self._forwarder.forward(request, upstream, uri, extra).addBoth(
            lambda _: slots.release()))
        slot.addErrback(lambda f: f.trap(CancelledError))
        if counted:
            slot.addBoth(lambda _: self._waker.exchange_ended(name))


#: seconds a request waits for the runtime's first list of containers at start-up
SYNC_TIMEOUT = 30


def _under(path: bytes, prefix: bytes) -> bool:
    return path == prefix or path.startswith(prefix + b"/") or (prefix == b"" and path.startswith(b"/"))


def _body_size(request) -> int:
    content = request.content
    if content is None:
        return 0
    here = content.tell()
    content.seek(0, 2)
    size = content.tell()
    content.seek(here, 0)
    return size


class ProxyService(Service):
    """Builds the proxy's parts from the options; stopping it closes the upstream connection pool."""

    def __init__(self, options, runtime: IContainerRuntime, reactor, metrics: Registry):
        direct = options["upstream"] == "direct"
        tls_policy = None
        if options["upstream-ca"]:
            with open(options["upstream-ca"], "rb") as f:
                tls_policy = BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(f.read()))
        plan = ReadinessPlan(reactor, Prober(reactor), direct=direct, traefik_api=options["traefik-api"],
                             ready_delay=options["ready-delay"])
        self.metrics = metrics
        self.waker = Waker(reactor, runtime, plan, wake_timeout=options["wake-timeout"],
                           max_held=options["max-held"], max_held_per_instance=options["max-held-per-instance"],
                           stop_timeout=options["stop-timeout"], wake_rate=options["wake-rate"], metrics=metrics)
        self.idle = IdleStopper(reactor, runtime, self.waker, options["idle-timeout"])
        self.relay = self.pool = self.forwarder = self.resource = None
        if options["core"] == "relay":
            self._build_relay(options, runtime, reactor, direct, tls_policy)
            return
        self.forwarder = AgentForwarder(reactor, max_per_host=options["max-upstream-per-instance"],
                                        tls_policy=tls_policy)
        self.resource = ProxyResource(
            options["selector"], runtime, self.waker, self.forwarder,
            upstream=None if direct else upstream_from_url(options["upstream"]),
            home_url=options["home-url"], max_held_body=options["max-held-body"],
            max_upstream_per_instance=options["max-upstream-per-instance"],
            policy=WakePolicy(options["no-wake-path"], options["no-wake-user-agent"]),
            loading_page=bool(options["loading-page"]),
            home_path=options["home-path"], clock=reactor,
            home_upstream=upstream_from_url(options["home-upstream"] or options["upstream"])
            if (options["home-upstream"] or not direct) else None)

    def _build_relay(self, options, runtime, reactor, direct: bool, tls_policy) -> None:
        from .dispatch import Dispatcher
        from .relay import RelayFactory, Timeouts
        from .upstreampool import UpstreamPool

        self.dispatcher = Dispatcher(
            options["selector"], runtime, self.waker,
            upstream=None if direct else upstream_from_url(options["upstream"]),
            home_url=options["home-url"], max_upstream_per_instance=options["max-upstream-per-instance"],
            policy=WakePolicy(options["no-wake-path"], options["no-wake-user-agent"]),
            loading_page=bool(options["loading-page"]), home_path=options["home-path"],
            home_upstream=upstream_from_url(options["home-upstream"] or options["upstream"])
            if (options["home-upstream"] or not direct) else None,
            idle_tunnel=options["idle-tunnel"], clock=reactor)
        self.pool = UpstreamPool(reactor, connect_timeout=options["connect-timeout"],
                                 idle_timeout=options["upstream-idle-timeout"], tls_policy=tls_policy)
        networks = options["trusted-proxy"]
        trusted = None
        if networks:
            def trusted(ip: str) -> bool:
                try:
                    address = ipaddress.ip_address(ip)
                except ValueError:
                    return False
                return any(address in network for network in networks)
        self.relay = RelayFactory(
            self.dispatcher, self.pool, reactor,
            Timeouts(options["head-timeout"], options["body-timeout"], options["keepalive-timeout"],
                     options["upstream-timeout"]),
            max_head=options["max-head-bytes"], max_body=options["max-body"], trusted=trusted)

    def activity(self, container) -> dict:
        """What the deploy API shows of an instance's activity (see L{Waker.describe})."""
        doc = self.waker.describe(container.name)
        doc["idle_deadline"] = self.idle.deadline(container)
        return doc

    def startService(self):
        Service.startService(self)
        self.idle.startService()
        if self.relay is not None:
            self.relay.start()
            self.pool.start()

    def stopService(self):
        Service.stopService(self)
        self.idle.stopService()
        self.waker.stop()
        if self.relay is not None:
            self.relay.stop()
            self.pool.stop()
            return None
        return self.forwarder.close()
