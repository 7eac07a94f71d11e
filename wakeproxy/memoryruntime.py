# -*- test-case-name: tests.test_runtime_conformance -*-
"""
An in-memory L{IContainerRuntime} for fast unit tests. It passes the same conformance suite as the
Docker runtime; the methods under "test controls" let a test play the engine (health changes, crashes,
containers created behind wakeproxy's back).
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Iterable, Optional

from twisted.internet.defer import Deferred, fail, succeed
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

__all__ = ["MemoryRuntime"]


@implementer(IContainerRuntime)
class MemoryRuntime(CachedReads):
    """Containers as dictionaries. Operations complete at once unless a test holds them."""

    def __init__(self, owner: OwnerLabel = OwnerLabel(), images: Iterable[str] = ("mock-app:latest",),
                 pullable: Iterable[str] = ()):
        self.owner = owner
        self.images = set(images)
        #: images a C{pull} finds in the (imaginary) registry.
        self.pullable = set(pullable)
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

    # IContainerRuntime

    def ready(self) -> Deferred:
        return succeed(None)

    def create(self, spec: CreateSpec) -> Deferred:
        self._count("create")
        if spec.name in self._all:
            return fail(NameInUse("the name {!r} is already in use".format(spec.name)))
        if spec.image not in self.images:
            return fail(NoSuchImage("no such image: {}".format(spec.image)))
        labels = dict(spec.labels)
        labels[self.owner.key] = self.owner.value
        container = self._add(spec.name, spec.image, labels, spec.network or "default")
        if spec.healthcheck:
            self._healthchecked.add(spec.name)
        return succeed(container)

    def start(self, name: str) -> Deferred:
        self._count("start")
        try:
            container = self._managed(name)
        except NoSuchInstance as e:
            return fail(e)
        if container.state == "running":
            return succeed(None)
        if container.state == "paused":
            return fail(RuntimeFailure("container {} is paused: unpause it".format(name)))
        if name in self._hold_starts_for:
            self._hold_starts_for.discard(name)
            d = Deferred()
            self.held_starts[name] = d
            d.addCallback(lambda _: self._started(name))
            return d
        self._started(name)
        return succeed(None)

    def stop(self, name: str, timeout: float) -> Deferred:
        self._count("stop")
        try:
            container = self._managed(name)
        except NoSuchInstance as e:
            return fail(e)
        if container.state in ("running", "paused"):
            self._set(replace(container, state="exited", exit_code=0))
        return succeed(None)

    def pause(self, name: str) -> Deferred:
        return self._transition("pause", name, "running", "paused")

    def unpause(self, name: str) -> Deferred:
        return self._transition("unpause", name, "paused", "running")

    def remove(self, name: str, force: bool = False) -> Deferred:
        self._count("remove")
        try:
            container = self._managed(name)
        except NoSuchInstance as e:
            return fail(e)
        if container.state in ("running", "paused") and not force:
            return fail(RuntimeFailure("container {} is {}: stop it first or force".format(name, container.state)))
        del self._all[name]
        self._healthchecked.discard(name)
        self._cache.drop(name)
        return succeed(None)

    def pull(self, image: str) -> Deferred:
        self._count("pull")
        if image not in self.pullable:
            return fail(NoSuchImage("could not pull {}: not found in its registry".format(image)))
        self.images.add(image)
        return succeed(None)

    # test controls

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

    def _add(self, name, image, labels, network_mode, state="created") -> Container:
        container = Container(
            id="{:064x}".format(next(self._ids)), name=name, image=image, state=state,
            labels=labels, network_mode=network_mode,
            networks={} if network_mode == "host" else {network_mode: "10.0.0.{}".format(len(self._all) + 2)},
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
        self._count(op)
        try:
            container = self._managed(name)
        except NoSuchInstance as e:
            return fail(e)
        if container.state != before:
            return fail(RuntimeFailure("container {} is {}, not {}".format(name, container.state, before)))
        self._set(replace(container, state=after))
        return succeed(None)
