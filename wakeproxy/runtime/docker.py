# -*- test-case-name: tests.test_runtime_conformance -*-
"""
The Docker implementation of L{IContainerRuntime}, on the blocking C{docker} SDK.

The shared half (L{wakeproxy.runtime.engine}): blocking calls run on a dedicated, bounded thread pool
(never the reactor's, which DNS uses). One thread reads the engine's event stream for managed containers and hands snapshots to the reactor with
C{callFromThread}; it resyncs with a list after subscribing, so nothing is missed at start or after a
reconnect (the stream survives a C{dockerd} restart). Every operation re-checks ownership against the
engine (inspect by name, owner label) and then acts on the container id, never on a name that may have
been reused meanwhile.

Whatever the SDK raises (its own errors, and the C{requests}/C{urllib3}/socket errors under it) leaves an
operation as a L{RuntimeFailure} (L{runtime_failure}); the original goes to the log only. A create marks
its container with a token and removes it again when the create does not complete; leftovers are swept
on every (re)connect and periodically (see L{wakeproxy.runtime.interface}).

Podman's Docker-compatible API (4.3) works too; the few answers it gives differently are read as Docker's
where they are met (L{engineerrors.api_status}, L{_inspect}, C{_PODMAN_STATES}, C{_snapshot}; README, "Podman").
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import replace
from typing import Any, Callable, Mapping, Optional

import docker
import docker.errors
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from wakeproxy.runtime.engine import EngineRuntime
from wakeproxy.runtime.engineerrors import api_status, created_seconds, explain, pinned_by_stale_task, runtime_failure
from wakeproxy.runtime.interface import (
    CREATING,
    Container,
    CreateSpec,
    IContainerRuntime,
    NoSuchInstance,
    WrongState,
)
from wakeproxy.runtime.replace import copy_of

__all__ = ["DockerRuntime", "container_from_inspect", "container_from_summary", "default_docker_url",
           "runtime_failure"]

#: Container events that change what we cache (exec_* events from health checks are noise).
_STATE_ACTIONS = frozenset({
    "create", "start", "restart", "die", "stop", "kill", "pause", "unpause", "rename", "update", "oom", "cleanup",
})
#: Podman's state between a die and its cleanup, as Docker names it.
_PODMAN_STATES = {"stopped": "exited"}
_HEALTH_RE = re.compile(r"\((healthy|unhealthy|health: starting)\)")
_EXIT_RE = re.compile(r"^Exited \((-?\d+)\)")
def default_docker_url(environ: Mapping[str, str]) -> str:
    """C{DOCKER_HOST} if set, else the local unix socket."""
    return environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _networks(settings: Optional[Mapping[str, Any]]) -> dict[str, str]:
    nets = (settings or {}).get("Networks") or {}
    return {name: (info or {}).get("IPAddress") or "" for name, info in nets.items()}


def _inspect(client: docker.APIClient, ref: str) -> dict:
    """C{client.inspect_container(ref)}, raising C{NotFound} also for Podman's 500 on a container being removed."""
    try:
        return client.inspect_container(ref)
    except docker.errors.APIError as e:
        if isinstance(e, docker.errors.NotFound) or api_status(e) != 404:
            raise
        raise docker.errors.NotFound(str(e), response=e.response, explanation=e.explanation) from e


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
        created=created_seconds(data.get("Created")),
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
        created=created_seconds(data.get("Created")),
        creating=creating,
    )


@implementer(IContainerRuntime)
class DockerRuntime(EngineRuntime):
    """
    Managed containers of one Docker engine (see L{EngineRuntime} for the service, the pool, the event
    thread and the sweep of leftovers).
    """

    log = Logger()
    kind = "docker"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        #: ids of containers being replaced by a copy (and then gone): their events and list entries are
        #: not news (the name stays with the original until the copy has it).
        self._replaced: set[str] = set()

    # IContainerRuntime: operations

    def create(self, spec: CreateSpec) -> Deferred:
        def create(client: docker.APIClient, labels: dict[str, str]) -> Container:
            created = client.create_container(
                image=spec.image, name=spec.name, hostname=spec.name,
                environment=["{}={}".format(k, v) for k, v in spec.env.items()],
                labels=labels, command=list(spec.command) if spec.command else None,
                healthcheck=dict(spec.healthcheck) if spec.healthcheck else None,
                host_config=client.create_host_config(network_mode=spec.network or None, init=spec.init or None),
            )
            return container_from_inspect(_inspect(client, created["Id"]))

        return self._call(lambda client: self._create_marked(
            client, spec.name, spec.image, spec.labels, lambda labels: create(client, labels))).addCallback(self._store)

    def start(self, name: str) -> Deferred:
        def start(client: docker.APIClient, cid: str, current: Container) -> Optional[str]:
            if current.state == "paused":
                raise WrongState("container {} is paused: unpause it".format(name))
            try:
                client.start(cid)
            except docker.errors.APIError as e:
                if not pinned_by_stale_task(e):
                    raise
                return self._replace_pinned(client, name, cid, e)
            return None

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

    # internals: what the shared half asks for

    def _event_filters(self) -> Mapping[str, Any]:
        return {"type": "container", "label": [str(self.owner)]}

    def _list(self, client: docker.APIClient, leftovers_only: bool = False) -> list[Container]:
        filters: dict[str, Any] = {"label": [str(self.owner)]}
        if leftovers_only:
            filters = {"label": [str(self.owner), CREATING], "status": "created"}
        summaries = client.containers(all=True, filters=filters)
        return [c for c in (self._snapshot(client, s) for s in summaries if s["Id"] not in self._replaced)
                if c is not None]

    def _snapshot(self, client: docker.APIClient, summary: Mapping[str, Any]) -> Optional[Container]:
        """From a list entry; Podman's lack HostConfig and health, so inspect those (None: gone meanwhile)."""
        if summary.get("HostConfig") is not None:
            return container_from_summary(summary)
        try:
            return container_from_inspect(_inspect(client, summary["Id"]))
        except docker.errors.NotFound:
            return None

    def _find_own(self, client: docker.APIClient, name: str, token: str) -> Optional[str]:
        data = _inspect(client, name)
        if ((data.get("Config") or {}).get("Labels") or {}).get(CREATING) != token:
            return None
        return data["Id"]

    def _remove_own(self, client: docker.APIClient, ident: str, force: bool) -> bool:
        client.remove_container(ident, v=True, force=force)
        return True

    # internals: operations

    def _act(self, name: str, f: Callable[[docker.APIClient, str, Container], Any],
             inspect_after: bool = True) -> Deferred:
        """
        Resolve C{name} to a managed container (engine truth), do C{f} on its id, refresh the cache. C{f}
        returns the id of the container that now has the name if it is not the same one (a replacement).
        """

        def act(client: docker.APIClient) -> Optional[Container]:
            current = self._inspect_managed(client, name)
            ident = f(client, current.id, current) or current.id
            if inspect_after:
                return container_from_inspect(_inspect(client, ident))
            return None

        d = self._call(act)
        d.addCallback(lambda c: self._store(c) if c is not None else None)
        d.addCallback(lambda _: None)
        return d

    def _replace_pinned(self, client: docker.APIClient, name: str, cid: str, why: docker.errors.APIError) -> str:
        """
        The engine cannot start C{cid} (L{pinned_by_stale_task}): put a copy in its place (L{copy_of}: same
        name, configuration, labels, mounts, networks) and start that, once; return the copy's id. The
        original is renamed aside first and gets its name back if the copy cannot be made; it is removed
        (not its volumes, which the copy uses) once the copy has the name. Bounded by C{api_timeout} in all.
        A failure answers the start as the engine's (L{EngineFailure}, 503). Runs in a thread.
        """
        deadline = time.monotonic() + self._api_timeout
        data = _inspect(client, cid)
        if (data.get("State") or {}).get("Running"):
            return cid  # started meanwhile (another wakeproxy): nothing to replace
        self.log.warn("{instance}: the engine cannot start it ({why}): a task left by a start that an engine "
                      "restart interrupted (Docker 20.10, moby/moby#44399); replacing it with a copy",
                      instance=name, why=explain(why))
        config = data.get("Config") or {}
        image = config.get("Image") or data["Image"]
        try:
            if client.inspect_image(image)["Id"] != data["Image"]:
                image = data["Image"]  # the reference names another image now: keep the one it ran
        except docker.errors.NotFound:
            image = data["Image"]
        copy = copy_of(data, image)
        self._replaced.add(cid)
        aside = new = None
        try:
            client.rename(cid, "{}-replaced-{}".format(name, cid[:12]))
            aside = True
            _before(deadline, "creating the copy")
            new = client.create_container_from_config(copy.config, name=name)["Id"]
            for network, endpoint in copy.networks:
                ipam = endpoint.get("IPAMConfig") or {}
                client.connect_container_to_network(
                    new, network, ipv4_address=ipam.get("IPv4Address"), ipv6_address=ipam.get("IPv6Address"),
                    aliases=endpoint.get("Aliases"), links=_links(endpoint.get("Links")))
        except Exception:
            self._replaced.discard(cid)
            try:
                if new is None and aside:
                    new = _lost_copy(client, name, cid)
                if new is not None:
                    client.remove_container(new, v=False, force=True)
                if aside:
                    client.rename(cid, name)
                    # known by its name again before the start's failure is reported (the rename events
                    # follow on the event thread)
                    self._reactor.callFromThread(self._cache.put, container_from_inspect(_inspect(client, cid)))
            except Exception as e:
                self.log.warn("{instance}: could not give the original its name back ({error})", instance=name,
                              error=str(e) or type(e).__name__)
            raise
        self._reactor.callFromThread(self._cache.put, container_from_inspect(_inspect(client, new)))
        try:
            client.remove_container(cid, v=False, force=True)
        except Exception as e:
            self.log.warn("{instance}: could not remove the original {old} ({error}); remove it by hand",
                          instance=name, old=cid[:12], error=str(e) or type(e).__name__)
        _before(deadline, "starting the copy")
        client.start(new)
        self.log.info("{instance}: replaced {old} with a copy, {new}, and started it", instance=name,
                      old=cid[:12], new=new[:12])
        return new

    def _inspect_managed(self, client: docker.APIClient, name: str) -> Container:
        try:
            current = container_from_inspect(_inspect(client, name))
        except docker.errors.NotFound:
            current = None
        # A name lookup may also match an id prefix; insist on the exact name and the owner label.
        if current is None or current.name != name or not self.owner.matches(current.labels):
            raise NoSuchInstance("no managed container named {!r}".format(name))
        return current

    # internals: the event thread

    def _on_event(self, client: docker.APIClient, event: Mapping[str, Any]) -> None:
        action = event.get("Action") or event.get("status") or ""
        actor = event.get("Actor") or {}
        cid = actor.get("ID") or event.get("id")
        if not cid or cid in self._replaced:
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


def _lost_copy(client: docker.APIClient, name: str, original: str) -> Optional[str]:
    """The id of a copy whose create failed after the engine made it (a lost answer): C{name}, never started."""
    try:
        data = _inspect(client, name)
    except docker.errors.NotFound:
        return None
    if data["Id"] == original or (data.get("State") or {}).get("Status") != "created":
        return None
    return data["Id"]


def _before(deadline: float, what: str) -> None:
    if time.monotonic() > deadline:
        raise docker.errors.DockerException("out of time before {}".format(what))


def _links(links: Optional[list]) -> Optional[dict]:
    """Inspect's links (C{"name:alias"}) as the SDK takes them."""
    return {k: v for k, _, v in (link.partition(":") for link in links)} if links else None


def _transition(op: str, before: str) -> Callable[[docker.APIClient, str, Container], None]:
    """C{client.<op>(id)}, for a container in state C{before} (else L{WrongState}, as the fake says)."""

    def transition(client: docker.APIClient, cid: str, current: Container) -> None:
        if current.state != before:
            raise WrongState("container {} is {}, not {}".format(current.name, current.state, before))
        getattr(client, op)(cid)

    return transition
