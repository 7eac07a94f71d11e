# -*- test-case-name: tests.test_runtime_conformance -*-
"""
The Docker Swarm implementation of L{IContainerRuntime}: an instance is a replicated Swarm service
carrying the owner label. Asleep is 0 replicas, awake 1 (or the service's C{wakeproxy.replicas} label);
starting scales it up, stopping scales it to 0. Services cannot be paused (L{NotSupported}).

A service maps to a L{Container} snapshot (L{service_snapshot}): state C{running} while one of its tasks'
containers runs (a task C{running}, or C{starting} with its container seen starting: Swarm holds a task
whose image has a HEALTHCHECK in C{starting} until the check passes; the snapshot says health C{starting}
then, and the waker decides as for a container: its own probe, or the container's health events), C{restarting} while
it is asked to run but no task runs yet, C{exited} when scaled to 0 after having run (the engine drops
the tasks of removed slots, so "has run" is the service's C{PreviousSpec}: it was updated since its
create), C{created} before it was ever scaled up. The address comes from the running task: host-network
services are C{127.0.0.1:<wakeproxy.port>}, others the task's IP on each network attachment.

State comes from events, as for containers (L{wakeproxy.runtime.engine}): the stream carries the
engine's C{service} events (create, update, remove) and the C{container} events of task containers
(label C{com.docker.swarm.service.id}); Docker's API has no task events, so each of those refreshes the
service and its tasks with an inspect and a task list. The manager records a task's new state a moment
after its container event, so a refresh that finds the service not yet settled (asked to run and no
task running, or scaled to 0 and a task still running) looks again a few times after a growing pause
(L{_FOLLOW_UPS}); no loop polls the engine otherwise. A full resync runs on every (re)connect.

On one node (the tests here) container events cover every task; on a multi-node swarm, tasks on other
nodes are seen through the follow-ups and service events only (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import docker
import docker.errors
import docker.types
from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.logger import Logger
from zope.interface import implementer

from wakeproxy.runtime.engine import EngineRuntime
from wakeproxy.runtime.interface import (
    CREATING,
    Container,
    CreateSpec,
    EngineFailure,
    IContainerRuntime,
    NoSuchInstance,
    NotSupported,
    WrongState,
)
from wakeproxy.runtime.swarmsnapshot import replicas, replicas_wanted, service_snapshot, settled

__all__ = ["SwarmRuntime"]

#: The label Docker puts on every task container: the service it belongs to.
_SERVICE_ID = "com.docker.swarm.service.id"
#: Container events of task containers that may change their service's state.
_TASK_ACTIONS = frozenset({"create", "start", "restart", "die", "stop", "kill", "destroy", "oom"})
#: Pauses (seconds) before looking again at a service that has not settled after an event.
_FOLLOW_UPS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4)
#: Seconds a scale-down may take beyond the stop timeout (Swarm's own stop grace period applies).
_STOP_MARGIN = 15.0


@implementer(IContainerRuntime)
class SwarmRuntime(EngineRuntime):
    """Managed services of one Swarm (the engine given is a manager node); see the module docstring."""

    log = Logger()
    kind = "swarm"

    def __init__(self, reactor, base_url: str, *args: Any, stop_grace: Optional[float] = None, **kwargs: Any):
        """C{stop_grace}: the stop grace period (seconds) of the services it creates (None: Swarm's, 10 s)."""
        EngineRuntime.__init__(self, reactor, base_url, *args, **kwargs)
        self._stop_grace = stop_grace
        self._network_names: dict[str, str] = {}
        self._follow_ups: dict[str, Any] = {}
        #: task container id -> the health its last health_status event said (written by the event thread).
        self._container_health: dict[str, str] = {}
        #: task containers seen starting and not dying since (written by the event thread).
        self._started_containers: set[str] = set()

    def stopService(self) -> None:
        for call in self._follow_ups.values():
            if call.active():
                call.cancel()
        self._follow_ups.clear()
        EngineRuntime.stopService(self)

    # IContainerRuntime: operations

    def create(self, spec: CreateSpec) -> Deferred:
        def create(client: docker.APIClient, labels: dict[str, str]) -> Container:
            client.inspect_image(spec.image)  # Swarm takes any image name, and fails its tasks later
            container_spec = docker.types.ContainerSpec(
                image=spec.image, command=list(spec.command) if spec.command else None, hostname=spec.name,
                env=["{}={}".format(k, v) for k, v in spec.env.items()], init=spec.init or None,
                labels={self.owner.key: self.owner.value},
                stop_grace_period=None if self._stop_grace is None else int(self._stop_grace * 1e9),
                healthcheck=docker.types.Healthcheck(**spec.healthcheck) if spec.healthcheck else None)
            template = docker.types.TaskTemplate(container_spec=container_spec,
                                                 networks=[spec.network] if spec.network else None)
            created = client.create_service(template, name=spec.name, labels=labels,
                                            mode=docker.types.ServiceMode("replicated", replicas=0))
            return self._snapshot(client, client.inspect_service(created["ID"]))

        return self._call(lambda client: self._create_marked(
            client, spec.name, spec.image, spec.labels, lambda labels: create(client, labels))).addCallback(self._store)

    def start(self, name: str) -> Deferred:
        d = self._scale(name, lambda current: replicas_wanted(current.labels))
        return d.addCallback(lambda _: self._until(name, lambda c: c.running, self._api_timeout, "start"))

    def stop(self, name: str, timeout: float) -> Deferred:
        d = self._scale(name, lambda current: 0)
        return d.addCallback(lambda _: self._until(name, lambda c: not c.running, timeout + _STOP_MARGIN, "stop"))

    def pause(self, name: str) -> Deferred:
        return self._refuse(name, "pause")

    def unpause(self, name: str) -> Deferred:
        return self._refuse(name, "unpause")

    def remove(self, name: str, force: bool = False) -> Deferred:
        def remove(client: docker.APIClient) -> None:
            service, current = self._inspect_managed(client, name)
            if current.state in ("running", "restarting") and not force:
                raise WrongState("service {} is {}: stop it first or force".format(name, current.state))
            client.remove_service(service["ID"])

        d = self._call(remove)
        d.addCallback(lambda _: self._cache.drop(name))
        return d

    # internals: operations

    def _refuse(self, name: str, op: str) -> Deferred:
        def refuse(client: docker.APIClient) -> None:
            self._inspect_managed(client, name)
            raise NotSupported("Swarm services cannot {} ({}): they sleep at 0 replicas; use the stop method "
                               "'stop'".format(op, name))

        return self._call(refuse)

    def _scale(self, name: str, count: Callable[[Container], int]) -> Deferred:
        """Set the replicas of C{name} (engine truth: owner checked, acted on by id and version)."""

        def scale(client: docker.APIClient) -> tuple[dict[str, Any], Container]:
            service, current = self._inspect_managed(client, name)
            wanted = count(current)
            if replicas(service) != wanted:
                client.update_service(service["ID"], service["Version"]["Index"],
                                      mode=docker.types.ServiceMode("replicated", replicas=wanted),
                                      fetch_current_spec=True)
                service = client.inspect_service(service["ID"])
            return service, self._snapshot(client, service)

        return self._call(scale).addCallback(lambda pair: self._refreshed(pair[0]["ID"], pair[0], pair[1], 0))

    def _until(self, name: str, predicate: Callable[[Container], bool], timeout: float, what: str) -> Deferred:
        """Fire once the cached snapshot of C{name} satisfies C{predicate}; fail when it goes, or after C{timeout}."""
        unwatch: list[Callable[[], None]] = []
        d: Deferred = Deferred(lambda _: unwatch and unwatch[0]())

        def changed(changed_name: str, container: Optional[Container]) -> None:
            if changed_name != name or d.called:
                return
            if container is None:
                d.errback(NoSuchInstance("service {} was removed during its {}".format(name, what)))
            elif predicate(container):
                d.callback(None)

        def translate(failure):
            failure.trap(TimeoutError)
            raise EngineFailure("service {} did not {} within {:g}s".format(name, what, timeout))

        current = self._cache.get(name)
        if current is not None and predicate(current):
            return succeed(None)
        unwatch.append(self._cache.watch(changed))
        d.addTimeout(timeout, self._reactor)
        d.addErrback(translate)
        d.addBoth(lambda result: (unwatch[0](), result)[1])
        return d

    def _inspect_managed(self, client: docker.APIClient, name: str) -> tuple[dict[str, Any], Container]:
        try:
            service = client.inspect_service(name)
        except docker.errors.NotFound:
            service = None
        # A lookup by name may also match an id (prefix): insist on the exact name and the owner label.
        labels = ((service or {}).get("Spec") or {}).get("Labels") or {}
        if service is None or service["Spec"].get("Name") != name or not self.owner.matches(labels):
            raise NoSuchInstance("no managed service named {!r}".format(name))
        return service, self._snapshot(client, service)

    def _snapshot(self, client: docker.APIClient, service: Mapping[str, Any],
                  tasks: Optional[Sequence[Mapping[str, Any]]] = None) -> Container:
        if tasks is None:
            tasks = client.tasks(filters={"service": service["ID"]})
        return service_snapshot(service, tasks, lambda target: self._network_name(client, target),
                                self._container_health.get, self._started_containers.__contains__)

    def _network_name(self, client: docker.APIClient, target: str) -> str:
        name = self._network_names.get(target)
        if name is None:
            try:
                name = client.inspect_network(target)["Name"]
            except docker.errors.NotFound:
                name = target
            self._network_names[target] = name
        return name

    # internals: what the shared half asks for

    def _event_filters(self) -> Mapping[str, Any]:
        return {"type": ["service", "container"]}

    def _list(self, client: docker.APIClient, leftovers_only: bool = False) -> list[Container]:
        services = client.services(filters={"label": [str(self.owner)]})
        tasks = client.tasks()
        return [self._snapshot(client, s, tasks) for s in services]

    def _find_own(self, client: docker.APIClient, name: str, token: str) -> Optional[str]:
        service = client.inspect_service(name)
        if (service.get("Spec") or {}).get("Name") != name:
            return None
        if ((service.get("Spec") or {}).get("Labels") or {}).get(CREATING) != token:
            return None
        return service["ID"]

    def _remove_own(self, client: docker.APIClient, ident: str, force: bool) -> bool:
        if not force and self._snapshot(client, client.inspect_service(ident)).state != "created":
            return False  # scaled up meanwhile: it stays
        client.remove_service(ident)
        return True

    # internals: events

    def _on_event(self, client: docker.APIClient, event: Mapping[str, Any]) -> None:
        kind = event.get("Type")
        action = event.get("Action") or ""
        actor = event.get("Actor") or {}
        if kind == "service":
            service_id = actor.get("ID")
            if action == "remove":
                self._reactor.callFromThread(self._forget, service_id)
                return
        elif kind == "container" and (action in _TASK_ACTIONS or action.startswith("health_status")):
            service_id = (actor.get("Attributes") or {}).get(_SERVICE_ID)
            if service_id and actor.get("ID"):
                self._note_container(actor["ID"], action)
        else:
            return
        if service_id:
            self._refresh(client, service_id, 0)

    def _note_container(self, container_id: str, action: str) -> None:
        if action.startswith("health_status"):
            self._container_health[container_id] = action.partition(":")[2].strip() or "none"
        elif action in ("start", "restart"):
            self._started_containers.add(container_id)
        elif action in ("die", "destroy"):
            self._container_health.pop(container_id, None)
            self._started_containers.discard(container_id)

    def _refresh(self, client: docker.APIClient, service_id: str, attempt: int) -> None:
        """Inspect a service and its tasks (in a thread) and hand the result to the reactor."""
        try:
            service = client.inspect_service(service_id)
        except docker.errors.NotFound:
            self._reactor.callFromThread(self._forget, service_id)
            return
        if not self.owner.matches((service.get("Spec") or {}).get("Labels") or {}):
            return
        snapshot = self._snapshot(client, service)
        self._reactor.callFromThread(self._refreshed, service_id, service, snapshot, attempt)

    def _refreshed(self, service_id: str, service: Mapping[str, Any], snapshot: Container, attempt: int) -> None:
        self._cache.put(snapshot)
        pending = self._follow_ups.pop(service_id, None)
        if pending is not None and pending.active():
            pending.cancel()
        if not settled(service, snapshot) and attempt < len(_FOLLOW_UPS) and self.running:
            self._follow_ups[service_id] = self._reactor.callLater(
                _FOLLOW_UPS[attempt], self._follow_up, service_id, attempt + 1)

    def _follow_up(self, service_id: str, attempt: int) -> None:
        self._follow_ups.pop(service_id, None)
        d = self._call(lambda client: self._refresh(client, service_id, attempt))
        d.addErrback(lambda f: self.log.warn("looking again at service {id} failed: {why}", id=service_id,
                                             why=f.getErrorMessage()))

    def _forget(self, service_id: str) -> None:
        pending = self._follow_ups.pop(service_id, None)
        if pending is not None and pending.active():
            pending.cancel()
        self._cache.drop_id(service_id)
