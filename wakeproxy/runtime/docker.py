# -*- test-case-name: tests.test_runtime_conformance -*-
"""
The Docker implementation of L{IContainerRuntime}, on the blocking C{docker} SDK.

Blocking calls run on a dedicated, bounded thread pool (never the reactor's, which DNS uses). One thread
reads the engine's event stream for managed containers and hands snapshots to the reactor with
C{callFromThread}; it resyncs with a list after subscribing, so nothing is missed at start or after a
reconnect (the stream survives a C{dockerd} restart). Every operation re-checks ownership against the
engine (inspect by name, owner label) and then acts on the container id, never on a name that may have
been reused meanwhile.

Whatever the SDK raises (its own errors, and the C{requests}/C{urllib3}/socket errors under it) leaves an
operation as a L{RuntimeFailure} (L{runtime_failure}); the original goes to the log only. A create marks
its container with a token and removes it again when the create does not complete; leftovers are swept
on every (re)connect and periodically (see L{wakeproxy.runtime.interface}).

Podman's Docker-compatible API (4.3) works too; the few answers it gives differently are read as Docker's
where they are met (C{_PODMAN_*}, L{_status}, L{_inspect}, C{_snapshot}; README, "Podman").
"""

from __future__ import annotations

import http.client
import math
import re
import threading
import time
import uuid
from dataclasses import replace
from datetime import datetime
from typing import Any, Callable, Mapping, Optional

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from wakeproxy.runtime.interface import (
    CREATING,
    LEFTOVER_GRACE,
    CachedReads,
    Container,
    CreateSpec,
    EngineFailure,
    EngineUnavailable,
    IContainerRuntime,
    NameInUse,
    NoSuchImage,
    NoSuchInstance,
    OwnerLabel,
    RuntimeFailure,
    SnapshotCache,
    WrongState,
    is_leftover,
)

__all__ = ["DockerRuntime", "container_from_inspect", "container_from_summary", "default_docker_url",
           "runtime_failure"]

#: Container events that change what we cache (exec_* events from health checks are noise); Podman's
#: last one after a die is cleanup (its state goes from its own "stopped" to "exited" then).
_STATE_ACTIONS = frozenset({
    "create", "start", "restart", "die", "stop", "kill", "pause", "unpause", "rename", "update", "oom", "cleanup",
})
#: Podman's state between a die and its cleanup, as Docker names it.
_PODMAN_STATES = {"stopped": "exited"}
_HEALTH_RE = re.compile(r"\((healthy|unhealthy|health: starting)\)")
_EXIT_RE = re.compile(r"^Exited \((-?\d+)\)")
#: Attempts at removing a container whose create did not complete, and the first pause between them.
_ROLLBACK_ATTEMPTS = 4
_ROLLBACK_PAUSE = 0.1
#: What the transport under the SDK raises: requests, urllib3, http.client and socket errors.
_TRANSPORT_ERRORS = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
                     OSError)
#: (urllib3's NewConnectionError, a refused connection, is one of its TimeoutErrors: not for us.)
_TIMEOUTS = (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)
#: Podman (4.3) answers two of Docker's 404 and 409 cases with a 500 whose message ends in the cause.
_PODMAN_CAUSES = (("no such container", 404), ("that name is already in use", 409))


def runtime_failure(error: BaseException) -> RuntimeFailure:
    """
    The L{RuntimeFailure} that an exception out of the Docker SDK means; its message is safe to show
    (the original, with socket paths and addresses, is for the log). Not-found answers are
    L{NoSuchInstance}, conflicts L{WrongState}, the engine's 5xx L{EngineFailure}, transport errors and
    timeouts L{EngineUnavailable}, anything else an L{EngineFailure}.
    """
    if isinstance(error, RuntimeFailure):
        return error
    # APIError is also an OSError and a requests error: look at it first.
    if isinstance(error, docker.errors.ImageNotFound):
        return NoSuchImage(_explain(error))
    if isinstance(error, docker.errors.APIError):
        status = _status(error)
        if status == 404:
            return NoSuchInstance(_explain(error))
        if status == 409:
            return WrongState(_explain(error))
        if status >= 500 or status == 0:
            # The engine's own explanation may name its paths and addresses: it goes to the log only.
            return EngineFailure("the Docker engine failed ({})".format(status or "no status"))
        return RuntimeFailure(_explain(error))
    kind = type(error).__name__
    if isinstance(error, _TIMEOUTS) and not isinstance(error, urllib3.exceptions.NewConnectionError):
        return EngineUnavailable("the Docker engine did not answer in time ({})".format(kind), timed_out=True)
    if isinstance(error, _TRANSPORT_ERRORS):
        return EngineUnavailable("the connection to the Docker engine failed ({})".format(kind))
    if isinstance(error, docker.errors.DockerException):
        return EngineFailure("the Docker client failed ({})".format(kind))
    return EngineFailure("the Docker engine call failed unexpectedly ({})".format(kind))


def _status(error: docker.errors.APIError) -> int:
    """The status Docker would have answered (Podman's 500s for a missing container or a taken name are 404, 409)."""
    status = error.status_code or 0
    if status == 500:
        explanation = _explain(error)
        for cause, meant in _PODMAN_CAUSES:
            if explanation.endswith(cause):
                return meant
    return status


def _inspect(client: docker.APIClient, ref: str) -> dict:
    """C{client.inspect_container(ref)}, raising C{NotFound} also for Podman's 500 on a container being removed."""
    try:
        return client.inspect_container(ref)
    except docker.errors.APIError as e:
        if isinstance(e, docker.errors.NotFound) or _status(e) != 404:
            raise
        raise docker.errors.NotFound(str(e), response=e.response, explanation=e.explanation) from e


def _created(value: Any) -> int:
    """Unix seconds from a summary's C{Created} (a number) or an inspect's (RFC 3339, nanoseconds); 0 if neither."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value).timestamp())
        except ValueError:
            return 0
    return 0


def default_docker_url(environ: Mapping[str, str]) -> str:
    """C{DOCKER_HOST} if set, else the local unix socket."""
    return environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _networks(settings: Optional[Mapping[str, Any]]) -> dict[str, str]:
    nets = (settings or {}).get("Networks") or {}
    return {name: (info or {}).get("IPAddress") or "" for name, info in nets.items()}


def container_from_inspect(data: Mapping[str, Any]) -> Container:
    """A snapshot from C{docker inspect} output."""
    state = data.get("State") or {}
    health = (state.get("Health") or {}).get("Status") or "none"
    config = data.get("Config") or {}
    labels = dict(config.get("Labels") or {})
    creating = labels.pop(CREATING, "")
    return Container(
        id=data["Id"],
        name=data["Name"].lstrip("/"),
        image=config.get("Image") or data.get("Image", ""),
        state=_PODMAN_STATES.get(state.get("Status"), state.get("Status", "unknown")),
        health=health,
        labels=labels,
        network_mode=(data.get("HostConfig") or {}).get("NetworkMode") or "default",
        networks=_networks(data.get("NetworkSettings")),
        exit_code=int(state.get("ExitCode") or 0),
        created=_created(data.get("Created")),
        creating=creating,
    )


def container_from_summary(data: Mapping[str, Any]) -> Container:
    """A snapshot from one entry of C{docker ps -a} (the list call), without an inspect per container."""
    status = data.get("Status") or ""
    match = _HEALTH_RE.search(status)
    health = "none" if match is None else match.group(1).replace("health: ", "")
    exited = _EXIT_RE.match(status)
    labels = dict(data.get("Labels") or {})
    creating = labels.pop(CREATING, "")
    return Container(
        id=data["Id"],
        name=(data.get("Names") or ["/" + data["Id"][:12]])[0].lstrip("/"),
        image=data.get("Image", ""),
        state=data.get("State", "unknown"),
        health=health,
        labels=labels,
        network_mode=(data.get("HostConfig") or {}).get("NetworkMode") or "default",
        networks=_networks(data.get("NetworkSettings")),
        exit_code=int(exited.group(1)) if exited else 0,
        created=_created(data.get("Created")),
        creating=creating,
    )


@implementer(IContainerRuntime)
class DockerRuntime(CachedReads, Service):
    """
    Managed containers of one Docker engine. Start it as a service (it owns a thread pool and the event
    thread); stopping it closes the event stream and the pool.

    C{leftover_grace}: age after which a marked container never started is a leftover (default: twice
    C{api_timeout}, at least L{LEFTOVER_GRACE}); C{sweep_interval}: seconds between sweeps (None: only on
    (re)connect).
    """

    log = Logger()

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
        self._pool = ThreadPool(minthreads=0, maxthreads=max_threads, name="wakeproxy-docker")
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
        self._events_thread = threading.Thread(target=self._read_events, name="wakeproxy-docker-events",
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

    # IContainerRuntime: reads

    def ready(self) -> Deferred:
        if self._is_ready:
            return succeed(None)
        # A waiter that gives up (timeout, client gone) leaves the list, so the first sync fires only live ones.
        d = Deferred(lambda d: self._ready_waiters.remove(d) if d in self._ready_waiters else None)
        self._ready_waiters.append(d)
        return d

    # IContainerRuntime: operations

    def create(self, spec: CreateSpec) -> Deferred:
        token = uuid.uuid4().hex

        def create(client: docker.APIClient) -> Container:
            labels = dict(spec.labels)
            labels[CREATING] = token
            labels[self.owner.key] = self.owner.value
            host_config = client.create_host_config(network_mode=spec.network or None, init=spec.init or None)
            try:
                created = client.create_container(
                    image=spec.image, name=spec.name, hostname=spec.name,
                    environment=["{}={}".format(k, v) for k, v in spec.env.items()],
                    labels=labels, command=list(spec.command) if spec.command else None,
                    healthcheck=dict(spec.healthcheck) if spec.healthcheck else None,
                    host_config=host_config,
                )
                return container_from_inspect(client.inspect_container(created["Id"]))
            except docker.errors.ImageNotFound:
                raise NoSuchImage("no such image: {}".format(spec.image))
            except docker.errors.APIError as e:
                if _status(e) == 409:
                    raise NameInUse("the name {!r} is already in use".format(spec.name))
                self._roll_back(client, spec.name, token, e)
                raise
            except Exception as e:
                # A timeout or a reset may hide a container the engine did create: remove it, if it is ours.
                self._roll_back(client, spec.name, token, e)
                raise

        return self._call(create).addCallback(self._store)

    def start(self, name: str) -> Deferred:
        def start(client: docker.APIClient, cid: str, current: Container) -> None:
            if current.state == "paused":
                raise WrongState("container {} is paused: unpause it".format(name))
            client.start(cid)

        return self._act(name, start)

    def stop(self, name: str, timeout: float) -> Deferred:
        grace = max(0, int(math.ceil(timeout)))
        return self._act(name, lambda client, cid, _: client.stop(cid, timeout=grace))

    def pause(self, name: str) -> Deferred:
        return self._act(name, _transition("pause", "running"))

    def unpause(self, name: str) -> Deferred:
        return self._act(name, _transition("unpause", "paused"))

    def remove(self, name: str, force: bool = False) -> Deferred:
        def remove(client: docker.APIClient, cid: str, current: Container) -> None:
            if current.state in ("running", "paused", "restarting") and not force:
                raise WrongState("container {} is {}: stop it first or force".format(name, current.state))
            client.remove_container(cid, v=True, force=force)

        d = self._act(name, remove, inspect_after=False)
        d.addCallback(lambda _: self._cache.drop(name))
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
                raise NoSuchImage("could not pull {}: {}".format(image, _explain(e)))

        return self._call(pull)

    def sweep_leftovers(self, grace: Optional[float] = None) -> Deferred:
        grace = self.leftover_grace if grace is None else grace
        return self._call(lambda client: self._sweep(client, grace))

    # internals: operations

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
        if isinstance(error, (docker.errors.DockerException,) + _TRANSPORT_ERRORS):
            self.log.warn("docker: {error} ({kind}); answered as {answer}", error=str(error) or repr(error),
                          kind=type(error).__name__, answer=type(failure).__name__)
        else:
            self.log.failure("docker: unexpected error; answered as {answer}", answer=type(failure).__name__)

    def _roll_back(self, client: docker.APIClient, name: str, token: str, why: Exception, attempt: int = 1) -> None:
        """
        Remove the container C{name} if the create with C{token} made it (one of that name made by someone
        else stays). The first attempt runs before the create answers; while the engine times out, the
        next ones run on the pool after a growing pause, so that the answer does not wait for them. When
        the engine is gone, the sweep of leftovers removes it later.
        """
        try:
            try:
                data = _inspect(client, name)
            except docker.errors.NotFound:
                return
            if ((data.get("Config") or {}).get("Labels") or {}).get(CREATING) != token:
                return
            client.remove_container(data["Id"], v=True, force=True)
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
        summaries = client.containers(all=True, filters={"label": [str(self.owner), CREATING], "status": "created"})
        now = time.time()
        removed = []
        for container in (container_from_summary(s) for s in summaries):
            if not is_leftover(container, self.owner, now, grace):
                continue
            try:
                client.remove_container(container.id, v=True)
            except docker.errors.NotFound:
                continue
            except docker.errors.APIError as e:
                if _status(e) in (404, 409):
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

    def _act(self, name: str, f: Callable[[docker.APIClient, str, Container], Any],
             inspect_after: bool = True) -> Deferred:
        """Resolve C{name} to a managed container (engine truth), do C{f} on its id, refresh the cache."""

        def act(client: docker.APIClient) -> Optional[Container]:
            current = self._inspect_managed(client, name)
            f(client, current.id, current)
            if inspect_after:
                return container_from_inspect(client.inspect_container(current.id))
            return None

        d = self._call(act)
        d.addCallback(lambda c: self._store(c) if c is not None else None)
        d.addCallback(lambda _: None)
        return d

    def _inspect_managed(self, client: docker.APIClient, name: str) -> Container:
        try:
            current = container_from_inspect(_inspect(client, name))
        except docker.errors.NotFound:
            current = None
        # A name lookup may also match an id prefix; insist on the exact name and the owner label.
        if current is None or current.name != name or not self.owner.matches(current.labels):
            raise NoSuchInstance("no managed container named {!r}".format(name))
        return current

    def _store(self, container: Container) -> Container:
        self._cache.put(container)
        return container

    # internals: the event thread

    def _read_events(self) -> None:
        backoff = 0.05
        while not self._stopping.is_set():
            client = None
            try:
                client = self._new_client()
                stream = client.events(decode=True, filters={"type": "container", "label": [str(self.owner)]})
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
                    self.log.warn("docker event stream ended; reconnecting")
            except Exception as e:
                if self._stopping.is_set():
                    break
                self.log.warn("docker event stream failed ({error}); retrying in {delay:.2f}s",
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
        summaries = client.containers(all=True, filters={"label": [str(self.owner)]})
        snapshots = [c for c in (self._snapshot(client, s) for s in summaries) if c is not None]
        self._reactor.callFromThread(self._replace_all, snapshots)

    def _snapshot(self, client: docker.APIClient, summary: Mapping[str, Any]) -> Optional[Container]:
        """From a list entry; Podman's lack HostConfig and health, so inspect those (None: gone meanwhile)."""
        if summary.get("HostConfig") is not None:
            return container_from_summary(summary)
        try:
            return container_from_inspect(_inspect(client, summary["Id"]))
        except docker.errors.NotFound:
            return None

    def _replace_all(self, snapshots: list[Container]) -> None:
        self._cache.replace_all(snapshots)
        if not self._is_ready:
            self._is_ready = True
            waiters, self._ready_waiters = self._ready_waiters, []
            for d in waiters:
                d.callback(None)

    def _on_event(self, client: docker.APIClient, event: Mapping[str, Any]) -> None:
        action = event.get("Action") or event.get("status") or ""
        actor = event.get("Actor") or {}
        cid = actor.get("ID") or event.get("id")
        if not cid:
            return
        if action == "destroy":
            self._reactor.callFromThread(self._cache.drop_id, cid)
        elif action.startswith("health_status:"):
            health = action.partition(":")[2].strip() or "none"
            self._reactor.callFromThread(self._set_health, cid, health)
        elif action in _STATE_ACTIONS or action == "health_status":
            # (Podman's is a bare health_status whose HealthStatus may be the one before: inspect instead)
            try:
                snapshot = container_from_inspect(_inspect(client, cid))
            except docker.errors.NotFound:
                self._reactor.callFromThread(self._cache.drop_id, cid)
                return
            if self.owner.matches(snapshot.labels):
                self._reactor.callFromThread(self._cache.put, snapshot)

    def _set_health(self, cid: str, health: str) -> None:
        for container in self._cache.list():
            if container.id == cid:
                self._cache.put(replace(container, health=health))


def _transition(op: str, before: str) -> Callable[[docker.APIClient, str, Container], None]:
    """C{client.<op>(id)}, for a container in state C{before} (else L{WrongState}, as the fake says)."""

    def transition(client: docker.APIClient, cid: str, current: Container) -> None:
        if current.state != before:
            raise WrongState("container {} is {}, not {}".format(current.name, current.state, before))
        getattr(client, op)(cid)

    return transition


def _explain(error: docker.errors.APIError) -> str:
    explanation = getattr(error, "explanation", None)
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    return str(explanation or error)
