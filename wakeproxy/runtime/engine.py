# -*- test-case-name: tests.test_runtime_conformance -*-
"""
What every runtime on the Docker API shares (L{wakeproxy.runtime.docker} for containers,
L{wakeproxy.runtime.swarm} for Swarm services): the service life cycle, the dedicated thread pool for the
blocking SDK, the one event thread (subscribe, sweep leftovers, resync with a list, then follow the
stream; reconnect with a growing pause), the first-sync waiters, the error mapping of every call, the
rollback of a create that did not complete and the sweep of leftovers.

A subclass says what it manages: C{_event_filters}, C{_list} (every managed snapshot, for a resync),
C{_on_event}, C{_find_own} / C{_remove_own} (rollback and sweep) and the operations themselves.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, Callable, Mapping, Optional

import docker
import docker.errors
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from wakeproxy.runtime.engineerrors import TRANSPORT_ERRORS, api_status, explain, runtime_failure
from wakeproxy.runtime.interface import (
    CREATING,
    LEFTOVER_GRACE,
    CachedReads,
    Container,
    EngineFailure,
    EngineUnavailable,
    NameInUse,
    NoSuchImage,
    OwnerLabel,
    RuntimeFailure,
    SnapshotCache,
    is_leftover,
)

__all__ = ["EngineRuntime"]

#: Attempts at removing what a create that did not complete made, and the first pause between them.
_ROLLBACK_ATTEMPTS = 4
_ROLLBACK_PAUSE = 0.1


class EngineRuntime(CachedReads, Service):
    """
    The shared half of a runtime on the Docker API. Start it as a service (it owns a thread pool and the
    event thread); stopping it closes the event stream and the pool.

    C{leftover_grace}: age after which a marked instance never started is a leftover (default: twice
    C{api_timeout}, at least L{LEFTOVER_GRACE}); C{sweep_interval}: seconds between sweeps (None: only on
    (re)connect).
    """

    log = Logger()
    #: what the thread names and log lines call the engine.
    kind = "docker"

    def __init__(self, reactor, base_url: str, owner: OwnerLabel = OwnerLabel(), max_threads: int = 8,
                 client_factory: Callable[..., docker.APIClient] = docker.APIClient,
                 api_timeout: float = 60.0, leftover_grace: Optional[float] = None,
                 sweep_interval: Optional[float] = 60.0):
        self.owner = owner
        self.leftover_grace = max(LEFTOVER_GRACE, 2 * api_timeout) if leftover_grace is None else leftover_grace
        self._sweeper: Optional[LoopingCall] = None
        self._sweep_interval = sweep_interval
        self._reactor = reactor
        self._base_url = base_url
        self._client_factory = client_factory
        self._api_timeout = api_timeout
        self._cache = SnapshotCache()
        self._pool = ThreadPool(minthreads=0, maxthreads=max_threads, name="wakeproxy-" + self.kind)
        self._client: Optional[docker.APIClient] = None
        self._stopping = threading.Event()
        self._stream = None
        self._events_thread: Optional[threading.Thread] = None
        self._ready_waiters: list[Deferred] = []
        self._is_ready = False
        #: how many times the event stream (re)connected, for tests and metrics.
        self.connections = 0

    # Service

    def startService(self) -> None:
        Service.startService(self)
        self._stopping.clear()
        self._client = self._new_client()
        self._pool.start()
        self._events_thread = threading.Thread(target=self._read_events, name="wakeproxy-{}-events".format(self.kind),
                                               daemon=True)
        self._events_thread.start()
        if self._sweep_interval:
            self._sweeper = LoopingCall(self._periodic_sweep)
            self._sweeper.clock = self._reactor
            self._sweeper.start(self._sweep_interval, now=False)

    def stopService(self) -> None:
        Service.stopService(self)
        self._stopping.set()
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:
                self.log.debug("closing the event stream raised; it is going away anyway")
        if self._events_thread is not None:
            self._events_thread.join(1.0)
        self._pool.stop()
        if self._client is not None:
            self._client.close()

    # IContainerRuntime: what is the same for every kind of instance

    def ready(self) -> Deferred:
        if self._is_ready:
            return succeed(None)
        # A waiter that gives up (timeout, client gone) leaves the list, so the first sync fires only live ones.
        d = Deferred(lambda d: self._ready_waiters.remove(d) if d in self._ready_waiters else None)
        self._ready_waiters.append(d)
        return d

    def pull(self, image: str) -> Deferred:
        def pull(client: docker.APIClient) -> None:
            # A pull answers 200 and reports errors inside its progress stream, so read it all.
            try:
                for progress in client.pull(image, stream=True, decode=True):
                    if isinstance(progress, dict) and progress.get("error"):
                        raise NoSuchImage("could not pull {}: {}".format(image, progress["error"]))
                client.inspect_image(image)
            except docker.errors.APIError as e:
                raise NoSuchImage("could not pull {}: {}".format(image, explain(e)))

        return self._call(pull)

    def sweep_leftovers(self, grace: Optional[float] = None) -> Deferred:
        grace = self.leftover_grace if grace is None else grace
        return self._call(lambda client: self._sweep(client, grace))

    # what a subclass provides

    def _event_filters(self) -> Mapping[str, Any]:
        raise NotImplementedError

    def _list(self, client: docker.APIClient, leftovers_only: bool = False) -> list[Container]:
        """Every managed snapshot (C{leftovers_only}: at least those that may be leftovers). Runs in a thread."""
        raise NotImplementedError

    def _on_event(self, client: docker.APIClient, event: Mapping[str, Any]) -> None:
        """Bring the cache up to date after C{event}. Runs in the event thread."""
        raise NotImplementedError

    def _find_own(self, client: docker.APIClient, name: str, token: str) -> Optional[str]:
        """The id of the instance C{name} if the create marked with C{token} made it, else None."""
        raise NotImplementedError

    def _remove_own(self, client: docker.APIClient, ident: str, force: bool) -> bool:
        """
        Remove what a failed create left, by id; without C{force} (a sweep), one started meanwhile stays
        (False, or the engine's 409).
        """
        raise NotImplementedError

    # internals: calls on the pool

    def _new_client(self) -> docker.APIClient:
        return self._client_factory(base_url=self._base_url, version="auto", timeout=self._api_timeout)

    def _call(self, f: Callable[[docker.APIClient], Any]) -> Deferred:
        client = self._client

        def run() -> Any:
            try:
                return f(client)
            except Exception as e:
                failure = runtime_failure(e)
                if failure is e:
                    raise
                if isinstance(failure, EngineFailure):
                    self._log_engine_error(e, failure)
                raise failure from e

        return deferToThreadPool(self._reactor, self._pool, run)

    def _log_engine_error(self, error: Exception, failure: RuntimeFailure) -> None:
        if isinstance(error, (docker.errors.DockerException,) + TRANSPORT_ERRORS):
            self.log.warn("{kind}: {error} ({type}); answered as {answer}", kind=self.kind,
                          error=str(error) or repr(error), type=type(error).__name__, answer=type(failure).__name__)
        else:
            self.log.failure("{kind}: unexpected error; answered as {answer}", kind=self.kind,
                             answer=type(failure).__name__)

    def _store(self, container: Container) -> Container:
        self._cache.put(container)
        return container

    # internals: creates that do not complete

    def _roll_back(self, client: docker.APIClient, name: str, token: str, why: Exception, attempt: int = 1) -> None:
        """
        Remove the instance C{name} if the create with C{token} made it (one of that name made by someone
        else stays). The first attempt runs before the create answers; while the engine times out, the
        next ones run on the pool after a growing pause, so that the answer does not wait for them. When
        the engine is gone, the sweep of leftovers removes it later.
        """
        try:
            ident = self._find_own(client, name, token)
            if ident is None:
                return
            self._remove_own(client, ident, force=True)
            self.log.info("removed {instance}: its create failed ({why})", instance=name,
                          why=str(runtime_failure(why)))
        except docker.errors.NotFound:
            return
        except Exception as e:
            failure = runtime_failure(e)
            timed_out = isinstance(failure, EngineUnavailable) and failure.timed_out
            if attempt >= _ROLLBACK_ATTEMPTS or not timed_out or self._stopping.is_set():
                self.log.warn("could not make sure the failed create of {instance} left nothing ({error}); the "
                              "sweep of leftovers will", instance=name, error=str(e) or type(e).__name__)
                return
            pause = _ROLLBACK_PAUSE * 2 ** (attempt - 1)
            self._pool.callInThread(self._roll_back_later, pause, client, name, token, why, attempt + 1)

    def _roll_back_later(self, pause: float, *args: Any) -> None:
        if not self._stopping.wait(pause):
            self._roll_back(*args)

    def _sweep(self, client: docker.APIClient, grace: float) -> list[str]:
        """Remove leftovers (see L{is_leftover}) without force: one started meanwhile stays. Runs in a thread."""
        now = time.time()
        removed = []
        for container in self._list(client, leftovers_only=True):
            if not is_leftover(container, self.owner, now, grace):
                continue
            try:
                if not self._remove_own(client, container.id, force=False):
                    continue
            except docker.errors.NotFound:
                continue
            except docker.errors.APIError as e:
                if api_status(e) in (404, 409):
                    continue
                raise
            self.log.warn("removed {instance}: a create that did not finish left it in 'created'",
                          instance=container.name)
            self._reactor.callFromThread(self._cache.drop_id, container.id)
            removed.append(container.name)
        return removed

    def _periodic_sweep(self) -> Deferred:
        d = self.sweep_leftovers()
        d.addErrback(lambda f: self.log.warn("sweeping leftovers failed: {why}", why=f.getErrorMessage()))
        return d

    def _create_marked(self, client: docker.APIClient, name: str, image: str, labels: Mapping[str, str],
                       make: Callable[[dict[str, str]], Container]) -> Container:
        """
        C{make(labels)}: create the instance C{name} with C{labels} plus the owner label and a fresh create
        mark (L{CREATING}); when that fails after the request may have reached the engine, remove what it
        made (if it is ours) before answering. Runs in a thread.
        """
        token = uuid.uuid4().hex
        marked = dict(labels)
        marked[CREATING] = token
        marked[self.owner.key] = self.owner.value
        try:
            return make(marked)
        except docker.errors.ImageNotFound:
            raise NoSuchImage("no such image: {}".format(image))
        except docker.errors.APIError as e:
            if api_status(e) == 409:
                raise NameInUse("the name {!r} is already in use".format(name))
            self._roll_back(client, name, token, e)
            raise
        except Exception as e:
            # A timeout or a reset may hide an instance the engine did create: remove it, if it is ours.
            self._roll_back(client, name, token, e)
            raise

    # internals: the event thread

    def _read_events(self) -> None:
        backoff = 0.05
        while not self._stopping.is_set():
            client = None
            try:
                client = self._new_client()
                stream = client.events(decode=True, filters=dict(self._event_filters()))
                self._stream = stream
                if self._stopping.is_set():
                    break
                self._resync(client)
                self.connections += 1
                backoff = 0.05
                for event in stream:
                    if self._stopping.is_set():
                        break
                    self._on_event(client, event)
                if not self._stopping.is_set():
                    self.log.warn("{kind} event stream ended; reconnecting", kind=self.kind)
            except Exception as e:
                if self._stopping.is_set():
                    break
                self.log.warn("{kind} event stream failed ({error}); retrying in {delay:.2f}s", kind=self.kind,
                              error=str(e) or type(e).__name__, delay=backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                self._stream = None
                if client is not None:
                    client.close()

    def _resync(self, client: docker.APIClient) -> None:
        try:
            self._sweep(client, self.leftover_grace)
        except Exception as e:
            self.log.warn("sweeping leftovers failed: {error}", error=str(e) or type(e).__name__)
        snapshots = self._list(client)
        self._reactor.callFromThread(self._replace_all, snapshots)

    def _replace_all(self, snapshots: list[Container]) -> None:
        self._cache.replace_all(snapshots)
        if not self._is_ready:
            self._is_ready = True
            waiters, self._ready_waiters = self._ready_waiters, []
            for d in waiters:
                d.callback(None)
