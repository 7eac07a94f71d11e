# -*- test-case-name: tests.test_runtime_conformance -*-
"""
An in-memory L{IContainerRuntime} for fast unit tests. It passes the same conformance suite as the
Docker runtime; the methods under "test controls" let a test play the engine (health changes, crashes,
containers created behind wakeproxy's back, and failures: L{MemoryRuntime.fail_next} makes an operation
fail as the Docker runtime does when the engine times out, resets or errs, before or after doing the work).
"""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import replace
from typing import Callable, Iterable, Optional, Union

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from wakeproxy.runtime.interface import (
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

__all__ = ["FAULTS", "MemoryRuntime"]

#: What L{MemoryRuntime.fail_next} can inject, by name, as the Docker runtime reports the SDK errors of
#: that kind (tests.test_runtime_conformance raises the SDK's own exceptions for the same names).
FAULTS: dict[str, Callable[[], RuntimeFailure]] = {
    "timeout": lambda: EngineUnavailable("the Docker engine did not answer in time (ReadTimeout)", timed_out=True),
    "reset": lambda: EngineUnavailable("the connection to the Docker engine failed (ConnectionError)"),
    "refused": lambda: EngineUnavailable("the connection to the Docker engine failed (ConnectionError)"),
    "protocol": lambda: EngineUnavailable("the connection to the Docker engine failed (ProtocolError)"),
    "socket": lambda: EngineUnavailable("the connection to the Docker engine failed (ConnectionResetError)"),
    "server-error": lambda: EngineFailure("the Docker engine failed (500)"),
}
_ROLLBACK_ATTEMPTS = 4


@implementer(IContainerRuntime)
class MemoryRuntime(CachedReads):
    """Containers as dictionaries. Operations complete at once unless a test holds them or makes them fail."""

    def __init__(self, owner: OwnerLabel = OwnerLabel(), images: Iterable[str] = ("mock-app:latest",),
                 pullable: Iterable[str] = (), now: Callable[[], float] = time.time,
                 leftover_grace: float = LEFTOVER_GRACE):
        self.owner = owner
        self.images = set(images)
        #: images a C{pull} finds in the (imaginary) registry.
        self.pullable = set(pullable)
        self.leftover_grace = leftover_grace
        self._now = now
        self._cache = SnapshotCache()
        self._all: dict[str, Container] = {}  # every container, managed or not
        self._ids = itertools.count(1)
        self._healthchecked: set[str] = set()
        #: operation name -> number of times called, for tests (e.g. "exactly one start").
        self.calls: dict[str, int] = {}
        #: names whose next start is held until the test fires the Deferred stored here.
        self.held_starts: dict[str, Deferred] = {}
        self._hold_starts_for: set[str] = set()
        #: names that exit with this code as soon as they are started.
        self.crash_on_start: dict[str, int] = {}
        #: operation -> planned failures, each [failure factory, after?, times left].
        self._faults: dict[str, list[list]] = {}

    # IContainerRuntime

    def ready(self) -> Deferred:
        return succeed(None)

    def create(self, spec: CreateSpec) -> Deferred:
        self._count("create")
        planned = self._fault("create", after=False)
        if planned is not None:
            return fail(planned)
        if spec.name in self._all:
            return fail(NameInUse("the name {!r} is already in use".format(spec.name)))
        if spec.image not in self.images:
            return fail(NoSuchImage("no such image: {}".format(spec.image)))
        labels = dict(spec.labels)
        token = uuid.uuid4().hex
        labels[self.owner.key] = self.owner.value
        container = self._add(spec.name, spec.image, labels, spec.network or "default", creating=token)
        if spec.healthcheck:
            self._healthchecked.add(spec.name)
        planned = self._fault("create", after=True)
        if planned is not None:
            self._roll_back(spec.name, token)
            return fail(planned)
        return succeed(container)

    def start(self, name: str) -> Deferred:
        def start(container: Container):
            if container.state == "running":
                return None
            if container.state == "paused":
                raise WrongState("container {} is paused: unpause it".format(name))
            if name in self._hold_starts_for:
                self._hold_starts_for.discard(name)
                d = Deferred()
                self.held_starts[name] = d
                d.addCallback(lambda _: self._started(name))
                return d
            self._started(name)
            return None

        return self._operate("start", name, start)

    def stop(self, name: str, timeout: float) -> Deferred:
        def stop(container: Container) -> None:
            if container.state in ("running", "paused"):
                self._set(replace(container, state="exited", exit_code=0))

        return self._operate("stop", name, stop)

    def pause(self, name: str) -> Deferred:
        return self._transition("pause", name, "running", "paused")

    def unpause(self, name: str) -> Deferred:
        return self._transition("unpause", name, "paused", "running")

    def remove(self, name: str, force: bool = False) -> Deferred:
        def remove(container: Container) -> None:
            if container.state in ("running", "paused") and not force:
                raise WrongState("container {} is {}: stop it first or force".format(name, container.state))
            self._delete(name)

        return self._operate("remove", name, remove)

    def pull(self, image: str) -> Deferred:
        self._count("pull")
        planned = self._fault("pull", after=False)
        if planned is not None:
            return fail(planned)
        if image not in self.pullable:
            return fail(NoSuchImage("could not pull {}: not found in its registry".format(image)))
        self.images.add(image)
        return succeed(None)

    def sweep_leftovers(self, grace: Optional[float] = None) -> Deferred:
        grace = self.leftover_grace if grace is None else grace
        planned = self._fault("list", after=False)
        if planned is not None:
            return fail(planned)
        now = self._now()
        removed = [c.name for c in list(self._all.values()) if is_leftover(c, self.owner, now, grace)]
        for name in removed:
            self._delete(name)
        return succeed(removed)

    # test controls

    def fail_next(self, op: str, failure: Union[str, RuntimeFailure] = "timeout", after: bool = False,
                  times: int = 1) -> None:
        """
        Make the next C{times} calls of C{op} (create, start, stop, pause, unpause, remove, pull, or list:
        the sweep's) fail with C{failure}: a L{FAULTS} name or a L{RuntimeFailure}. C{after}: the engine
        did the work, only its answer is lost (a create is then rolled back, as the Docker runtime does).
        """
        make = FAULTS[failure] if isinstance(failure, str) else (lambda: failure)
        self._faults.setdefault(op, []).append([make, after, times])

    def add_foreign(self, name: str, image: str = "mock-app:latest", state: str = "exited") -> Container:
        """A container wakeproxy does not own (no owner label), as if created with the docker CLI."""
        return self._add(name, image, {}, "default", state)

    def add_managed(self, name: str, labels: Optional[dict] = None, state: str = "exited",
                    network_mode: str = "host", healthcheck: bool = False) -> Container:
        """A managed container created behind wakeproxy's back (the event stream would report it)."""
        labels = dict(labels or {})
        labels[self.owner.key] = self.owner.value
        if healthcheck:
            self._healthchecked.add(name)
        return self._add(name, "mock-app:latest", labels, network_mode, state)

    def engine_has(self, name: str) -> bool:
        """Whether any container (managed or not) has this name, whatever the cache says."""
        return name in self._all

    def hold_next_start(self, name: str) -> None:
        """The next start of C{name} waits until the test fires C{held_starts[name]}."""
        self._hold_starts_for.add(name)

    def set_health(self, name: str, health: str) -> None:
        self._set(replace(self._all[name], health=health))

    def exit(self, name: str, code: int = 0) -> None:
        """The container's process ends on its own (like mock_app's IDLE, or a crash)."""
        self._set(replace(self._all[name], state="exited", exit_code=code,
                          health="unhealthy" if name in self._healthchecked else "none"))

    def start_behind_our_back(self, name: str) -> None:
        self._started(name)

    # internals

    def _count(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1

    def _fault(self, op: str, after: bool) -> Optional[RuntimeFailure]:
        for plan in self._faults.get(op, []):
            if plan[1] == after:
                plan[2] -= 1
                if plan[2] <= 0:
                    self._faults[op].remove(plan)
                return plan[0]()
        return None

    def _operate(self, op: str, name: str, action: Callable[[Container], object]) -> Deferred:
        """C{action(container)} on the managed container C{name}, with the failures planned for C{op}."""
        self._count(op)
        planned = self._fault(op, after=False)
        if planned is not None:
            return fail(planned)
        try:
            result = action(self._managed(name))
        except RuntimeFailure as e:
            return fail(e)
        if isinstance(result, Deferred):
            return result
        planned = self._fault(op, after=True)
        return fail(planned) if planned is not None else succeed(None)

    def _roll_back(self, name: str, token: str) -> None:
        """Remove what a failed create made, like the Docker runtime: retry timeouts, stop once the engine is gone."""
        for _ in range(_ROLLBACK_ATTEMPTS):
            planned = self._fault("remove", after=False)
            if planned is None:
                container = self._all.get(name)
                if container is not None and container.creating == token:
                    self._delete(name)
                return
            if not (isinstance(planned, EngineUnavailable) and planned.timed_out):
                return

    def _delete(self, name: str) -> None:
        del self._all[name]
        self._healthchecked.discard(name)
        self._cache.drop(name)

    def _add(self, name, image, labels, network_mode, state="created", creating="") -> Container:
        container = Container(
            id="{:064x}".format(next(self._ids)), name=name, image=image, state=state,
            labels=labels, network_mode=network_mode,
            networks={} if network_mode == "host" else {network_mode: "10.0.0.{}".format(len(self._all) + 2)},
            created=int(self._now()), creating=creating,
        )
        self._set(container)
        return container

    def _set(self, container: Container) -> None:
        self._all[container.name] = container
        if self.owner.matches(container.labels):
            self._cache.put(container)

    def _managed(self, name: str) -> Container:
        container = self._all.get(name)
        if container is None or not self.owner.matches(container.labels):
            raise NoSuchInstance("no managed container named {!r}".format(name))
        return container

    def _started(self, name: str) -> None:
        container = self._all[name]
        if name in self.crash_on_start:
            self._set(replace(container, state="exited", exit_code=self.crash_on_start[name], health="none"))
            return
        health = "starting" if name in self._healthchecked else "none"
        self._set(replace(container, state="running", health=health, exit_code=0))

    def _transition(self, op: str, name: str, before: str, after: str) -> Deferred:
        def transition(container: Container) -> None:
            if container.state != before:
                raise WrongState("container {} is {}, not {}".format(name, container.state, before))
            self._set(replace(container, state=after))

        return self._operate(op, name, transition)
