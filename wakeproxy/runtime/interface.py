# -*- test-case-name: tests.test_runtime_conformance -*-
"""
The only door to containers: the runtime interface, its data model and its errors.

A runtime keeps a cache of the containers wakeproxy manages (those carrying the owner label), kept
current by the engine's event stream; reads come from that cache and are synchronous, operations return
Deferreds. Containers without the owner label do not exist for wakeproxy: every operation on them fails
with L{NoSuchInstance}, exactly as for a name that does not exist at all.

Errors. Every operation fails only with a L{RuntimeFailure}, whatever went wrong underneath: the engine's
own refusals, and the transport under the Docker SDK (C{requests}/C{urllib3} timeouts, resets, refused
connections, socket errors) as L{EngineUnavailable}. Each class carries the HTTP C{status} the deploy API
answers it with, and C{retry_after} when trying again later may help (the engine failures: 503).

Creates leave nothing behind. Docker labels are fixed at create time, so a container cannot be marked
"being created" and unmarked later; instead every container a runtime creates carries the mark
C{wakeproxy.creating=<token>} (L{CREATING}, one random token per attempt) from birth; snapshots show it as
L{Container.creating}, not among their C{labels}. A container is a I{leftover} (L{is_leftover}) when it is
managed, carries the mark, is still in state C{created} (never started) and is older than a grace period
(L{LEFTOVER_GRACE}: longer than any create-then-start takes). Then:

 1. a create that fails after the request was sent (a timeout or reset may hide a container the engine did
    create) removes the container of that name I{if} it carries its own token (never one of the same
    name created by someone else) before it answers; while the engine times out, the removal is retried
    a few times in the background, and it stops once the engine is gone (refused, reset);
 2. the API, whose create is followed by a start, removes the instance again when the start fails;
 3. whatever both missed (the engine went away in between) is removed by
    L{IContainerRuntime.sweep_leftovers}, which the Docker runtime runs on every (re)connect of its event
    stream, before its resync list, and every C{sweep_interval} seconds. The removal does not force: a
    container started meanwhile stays.

Containers made by hand (without the mark) are never swept, whatever their state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

from twisted.logger import Logger
from zope.interface import Attribute, Interface

__all__ = [
    "Container",
    "CreateSpec",
    "IContainerRuntime",
    "NameInUse",
    "NoSuchImage",
    "NoSuchInstance",
    "NotSupported",
    "CREATING",
    "EngineFailure",
    "EngineUnavailable",
    "LEFTOVER_GRACE",
    "OwnerLabel",
    "RuntimeFailure",
    "WrongState",
    "is_leftover",
    "CachedReads",
    "SnapshotCache",
    "parse_owner_label",
]

#: Container states as Docker names them; "running" is the only one that serves.
STATES = ("created", "running", "paused", "restarting", "removing", "exited", "dead")
#: Health as Docker reports it, plus "none" for containers without a HEALTHCHECK.
HEALTHS = ("none", "starting", "healthy", "unhealthy")


#: The mark every container a runtime creates carries from birth (value: a token per create attempt).
CREATING = "wakeproxy.creating"
#: Seconds after which a marked container still in state C{created} is a leftover of a failed create.
LEFTOVER_GRACE = 120.0


class RuntimeFailure(Exception):
    """
    An operation failed; the message is safe to show to an API client (no socket paths, no addresses).
    C{status} is the HTTP status the deploy API answers with, C{retry_after} (seconds) its Retry-After.
    """

    status = 502
    retry_after: Optional[int] = None


class NoSuchInstance(RuntimeFailure):
    """No managed container has this name (it may exist, unmanaged: that is the same to us)."""

    status = 404


class NameInUse(RuntimeFailure):
    """A container with this name already exists (managed or not)."""

    status = 409


class NoSuchImage(RuntimeFailure):
    """The image is not present locally."""

    status = 424


class WrongState(RuntimeFailure):
    """The container is not in a state that allows the operation (removing a running one, pausing a stopped one)."""

    status = 409


class NotSupported(WrongState):
    """
    The runtime cannot do this to any instance (Swarm services cannot be paused: they sleep at 0
    replicas). A conflict like L{WrongState}: no state of the instance allows it.
    """


class EngineFailure(RuntimeFailure):
    """The engine could not do it now: an error it did not explain, or one on its side (5xx). Try again later."""

    status = 503
    retry_after = 5


class EngineUnavailable(EngineFailure):
    """
    The engine did not answer: connection refused or reset, a broken response (C{timed_out} False: the
    engine is gone, for now), or no answer in time (C{timed_out} True: it may still be there, slow).
    """

    def __init__(self, message: str, timed_out: bool = False):
        EngineFailure.__init__(self, message)
        self.timed_out = timed_out


@dataclass(frozen=True)
class OwnerLabel:
    """The label that marks a container as wakeproxy's."""

    key: str = "wakeproxy.managed"
    value: str = "true"

    def matches(self, labels: Mapping[str, str]) -> bool:
        return labels.get(self.key) == self.value

    def __str__(self) -> str:
        return "{}={}".format(self.key, self.value)


def parse_owner_label(text: str) -> OwnerLabel:
    """
    Parse C{KEY=VALUE}; raise C{ValueError} with a sentence saying what is wrong.
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or not value:
        raise ValueError("owner label must look like KEY=VALUE, got {!r}".format(text))
    return OwnerLabel(key, value)


@dataclass(frozen=True)
class Container:
    """What wakeproxy knows about one managed container (a snapshot)."""

    id: str
    name: str
    image: str
    state: str
    health: str = "none"
    labels: Mapping[str, str] = field(default_factory=dict)
    #: "host" for host networking, else the network mode Docker reports (a network name, "default", ...).
    network_mode: str = "default"
    #: network name -> IP address on it.
    networks: Mapping[str, str] = field(default_factory=dict)
    #: Docker's exit code when the container is not running.
    exit_code: int = 0
    #: when the engine created it (Unix seconds, whole; 0 when unknown).
    created: int = 0
    #: the token of the create that made it (label L{CREATING}, kept out of C{labels}); "" when made by hand.
    creating: str = ""

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class CreateSpec:
    """What the runtime needs to create a managed container; the owner label is added by the runtime."""

    name: str
    image: str
    labels: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    network: Optional[str] = None
    command: Optional[Sequence[str]] = None
    healthcheck: Optional[Mapping[str, object]] = None
    init: bool = False


class IContainerRuntime(Interface):
    """
    Containers wakeproxy manages. Reads are synchronous (from the event-driven cache), operations
    return Deferreds that fire once the engine has done the work; by then the cache reflects it.
    """

    owner = Attribute("The L{OwnerLabel} that marks managed containers.")

    def ready():
        """A Deferred that fires once the cache holds the engine's containers (after the first list)."""

    def get(name: str) -> Optional[Container]:
        """The cached snapshot of the managed container C{name}, or None."""

    def list() -> Sequence[Container]:
        """Snapshots of every managed container, sorted by name."""

    def watch(callback: Callable[[str, Optional[Container]], None]) -> Callable[[], None]:
        """
        Call C{callback(name, container_or_None)} in the reactor thread whenever a managed container's
        snapshot changes (None: it was removed). Returns a function that stops watching.
        """

    def create(spec: CreateSpec):
        """Create (not start) a managed container; fires with its L{Container}."""

    def start(name: str):
        """Start a created or exited container; a running one is left alone."""

    def stop(name: str, timeout: float):
        """Stop (SIGTERM, then SIGKILL after C{timeout} seconds); fires when it has exited."""

    def pause(name: str):
        """Freeze a running container."""

    def unpause(name: str):
        """Thaw a paused container."""

    def remove(name: str, force: bool = False):
        """Remove a container (C{force}: even when running) and its anonymous volumes."""

    def pull(image: str):
        """
        Fetch C{image} from its registry; fires once it is local, fails with L{NoSuchImage} (saying why)
        when it cannot be pulled.
        """

    def sweep_leftovers(grace: Optional[float] = None):
        """
        Remove the leftovers of creates that did not finish (see L{is_leftover}; C{grace}: the runtime's own
        when None); fires with the names removed.
        """


def is_leftover(container: Container, owner: OwnerLabel, now: float, grace: float) -> bool:
    """
    True when C{container} is what a failed create left behind: managed by C{owner}, marked L{CREATING},
    never started (state C{created}) and created at least C{grace} seconds before C{now}.
    """
    return (owner.matches(container.labels) and bool(container.creating) and container.state == "created"
            and container.created > 0 and now - container.created >= grace)


class SnapshotCache:
    """
    Name -> L{Container} snapshots plus the watchers to tell about changes; used by every runtime so
    that "what changed" is computed in one place. Call it from the reactor thread only.
    """

    log = Logger()

    def __init__(self) -> None:
        self._containers: dict[str, Container] = {}
        self._watchers: list[Callable[[str, Optional[Container]], None]] = []

    def get(self, name: str) -> Optional[Container]:
        return self._containers.get(name)

    def list(self) -> list[Container]:
        return [self._containers[n] for n in sorted(self._containers)]

    def watch(self, callback: Callable[[str, Optional[Container]], None]) -> Callable[[], None]:
        self._watchers.append(callback)

        def unwatch() -> None:
            if callback in self._watchers:
                self._watchers.remove(callback)

        return unwatch

    def put(self, container: Container) -> None:
        """Store a snapshot; a container renamed since the last one is dropped under its old name."""
        for name, old in list(self._containers.items()):
            if old.id == container.id and name != container.name:
                self.drop(name)
        if self._containers.get(container.name) != container:
            self._containers[container.name] = container
            self._notify(container.name, container)

    def drop(self, name: str) -> None:
        if self._containers.pop(name, None) is not None:
            self._notify(name, None)

    def drop_id(self, container_id: str) -> None:
        for name, old in list(self._containers.items()):
            if old.id == container_id:
                self.drop(name)

    def replace_all(self, containers: Sequence[Container]) -> None:
        """Make the cache equal to C{containers} (a resync), telling watchers only about differences."""
        fresh = {c.name: c for c in containers}
        for name in list(self._containers):
            if name not in fresh:
                self.drop(name)
        for container in fresh.values():
            self.put(container)

    def _notify(self, name: str, container: Optional[Container]) -> None:
        for callback in list(self._watchers):
            try:
                callback(name, container)
            except Exception:
                self.log.failure("watcher failed on a change of {instance}", instance=name)


class CachedReads:
    """The read half of L{IContainerRuntime}, answered from a L{SnapshotCache} at C{self._cache}."""

    _cache: SnapshotCache

    def get(self, name: str) -> Optional[Container]:
        return self._cache.get(name)

    def list(self) -> list[Container]:
        return self._cache.list()

    def watch(self, callback: Callable[[str, Optional[Container]], None]) -> Callable[[], None]:
        return self._cache.watch(callback)
