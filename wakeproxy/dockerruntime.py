# -*- test-case-name: tests.test_runtime_conformance -*-
"""
The Docker implementation of L{IContainerRuntime}, on the blocking C{docker} SDK.

Blocking calls run on a dedicated, bounded thread pool (never the reactor's, which DNS uses). One thread
reads the engine's event stream for managed containers and hands snapshots to the reactor with
C{callFromThread}; it resyncs with a list after subscribing, so nothing is missed at start or after a
reconnect (the stream survives a C{dockerd} restart). Every operation re-checks ownership against the
engine (inspect by name, owner label) and then acts on the container id, never on a name that may have
been reused meanwhile.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import replace
from typing import Any, Callable, Mapping, Optional

import docker
import docker.errors
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from .runtime import (
    CachedReads,
    Container,
    CreateSpec,
    IContainerRuntime,
    NameInUse,
    NoSuchImage,
    NoSuchInstance,
    OwnerLabel,
    RuntimeFailure,
    SnapshotCache,
)

__all__ = ["DockerRuntime", "container_from_inspect", "container_from_summary", "default_docker_url"]

#: Container events that change what we cache (exec_* events from health checks are noise).
_STATE_ACTIONS = frozenset({
    "create", "start", "restart", "die", "stop", "kill", "pause", "unpause", "rename", "update", "oom",
})
_HEALTH_RE = re.compile(r"\((healthy|unhealthy|health: starting)\)")
_EXIT_RE = re.compile(r"^Exited \((-?\d+)\)")


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
    return Container(
        id=data["Id"],
        name=data["Name"].lstrip("/"),
        image=config.get("Image") or data.get("Image", ""),
        state=state.get("Status", "unknown"),
        health=health,
        labels=dict(config.get("Labels") or {}),
        network_mode=(data.get("HostConfig") or {}).get("NetworkMode") or "default",
        networks=_networks(data.get("NetworkSettings")),
        exit_code=int(state.get("ExitCode") or 0),
    )


def container_from_summary(data: Mapping[str, Any]) -> Container:
    """A snapshot from one entry of C{docker ps -a} (the list call), without an inspect per container."""
    status = data.get("Status") or ""
    match = _HEALTH_RE.search(status)
    health = "none" if match is None else match.group(1).replace("health: ", "")
    exited = _EXIT_RE.match(status)
    return Container(
        id=data["Id"],
        name=(data.get("Names") or ["/" + data["Id"][:12]])[0].lstrip("/"),
        image=data.get("Image", ""),
        state=data.get("State", "unknown"),
        health=health,
        labels=dict(data.get("Labels") or {}),
        network_mode=(data.get("HostConfig") or {}).get("NetworkMode") or "default",
        networks=_networks(data.get("NetworkSettings")),
        exit_code=int(exited.group(1)) if exited else 0,
    )


@implementer(IContainerRuntime)
class DockerRuntime(CachedReads, Service):
    """
    Managed containers of one Docker engine. Start it as a service (it owns a thread pool and the event
    thread); stopping it closes the event stream and the pool.
    """

    log = Logger()

    def __init__(self, reactor, base_url: str, owner: OwnerLabel = OwnerLabel(), max_threads: int = 8,
                 client_factory: Callable[..., docker.APIClient] = docker.APIClient,
                 api_timeout: float = 60.0):
        self.owner = owner
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

    def stopService(self) -> None:
        Service.stopService(self)
        self._stopping.set()
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
        def create(client: docker.APIClient) -> Container:
            labels = dict(spec.labels)
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
            except docker.errors.ImageNotFound:
                raise NoSuchImage("no such image: {}".format(spec.image))
            except docker.errors.APIError as e:
                if e.status_code == 409:
                    raise NameInUse("the name {!r} is already in use".format(spec.name))
                raise
            return container_from_inspect(client.inspect_container(created["Id"]))

        return self._call(create).addCallback(self._store)

    def start(self, name: str) -> Deferred:
        return self._act(name, lambda client, cid, _: client.start(cid))

    def stop(self, name: str, timeout: float) -> Deferred:
        grace = max(0, int(math.ceil(timeout)))
        return self._act(name, lambda client, cid, _: client.stop(cid, timeout=grace))

    def pause(self, name: str) -> Deferred:
        return self._act(name, lambda client, cid, _: client.pause(cid))

    def unpause(self, name: str) -> Deferred:
        return self._act(name, lambda client, cid, _: client.unpause(cid))

    def remove(self, name: str, force: bool = False) -> Deferred:
        def remove(client: docker.APIClient, cid: str, current: Container) -> None:
            if current.state in ("running", "paused", "restarting") and not force:
                raise RuntimeFailure("container {} is {}: stop it first or force".format(name, current.state))
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

    # internals: operations

    def _new_client(self) -> docker.APIClient:
        return self._client_factory(base_url=self._base_url, version="auto", timeout=self._api_timeout)

    def _call(self, f: Callable[[docker.APIClient], Any]) -> Deferred:
        client = self._client

        def run() -> Any:
            try:
                return f(client)
            except RuntimeFailure:
                raise
            except docker.errors.NotFound as e:
                raise NoSuchInstance(_explain(e))
            except docker.errors.APIError as e:
                raise RuntimeFailure(_explain(e))
            except docker.errors.DockerException as e:
                raise RuntimeFailure(str(e))

        return deferToThreadPool(self._reactor, self._pool, run)

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
            current = container_from_inspect(client.inspect_container(name))
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
        summaries = client.containers(all=True, filters={"label": [str(self.owner)]})
        snapshots = [container_from_summary(s) for s in summaries]
        self._reactor.callFromThread(self._replace_all, snapshots)

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
        elif action.startswith("health_status"):
            health = action.partition(":")[2].strip() or "none"
            self._reactor.callFromThread(self._set_health, cid, health)
        elif action in _STATE_ACTIONS:
            try:
                snapshot = container_from_inspect(client.inspect_container(cid))
            except docker.errors.NotFound:
                self._reactor.callFromThread(self._cache.drop_id, cid)
                return
            if self.owner.matches(snapshot.labels):
                self._reactor.callFromThread(self._cache.put, snapshot)

    def _set_health(self, cid: str, health: str) -> None:
        for container in self._cache.list():
            if container.id == cid:
                self._cache.put(replace(container, health=health))


def _explain(error: docker.errors.APIError) -> str:
    explanation = getattr(error, "explanation", None)
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    return str(explanation or error)
