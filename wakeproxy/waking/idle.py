# -*- test-case-name: tests.test_idle_docker -*-
"""
Scale to zero: a once-a-second sweep that puts idle instances to sleep through the waker.

An instance is idle when nothing is in flight (no request, no streamed download or upload), no wake or
stop is under way, and its last exchange ended at least its idle timeout ago (label
C{wakeproxy.idle-timeout}, else C{--idle-timeout}). Groups (label C{wakeproxy.group}) sleep together once
every running member is idle, dependents before their dependencies; an instance that a running
instance depends on (C{wakeproxy.depends-on}) is never stopped before it. With peers (C{--peer}), every
peer must fence the instance and say it is idle too (L{wakeproxy.waking.peers}).
"""

from __future__ import annotations

from typing import Optional

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from wakeproxy.waking.labels import depends_on, group, idle_timeout, stop_method
from wakeproxy.runtime.interface import Container, IContainerRuntime
from wakeproxy.waking.peers import Peers
from wakeproxy.waking.waker import Waker

__all__ = ["IdleStopper", "PEER_RETRY", "sleep_order"]

#: seconds before asking again about an instance when a peer could not be reached
PEER_RETRY = 5.0


def sleep_order(members: list[Container]) -> list[Container]:
    """Members ordered so that every instance comes before the ones it depends on."""
    names = {c.name for c in members}
    lookup = {c.name: c for c in members}.get
    ordered: list[Container] = []
    placed: set[str] = set()
    remaining = list(members)
    while remaining:
        needed = {dep for c in remaining for dep in depends_on(c, lookup) if dep in names and c.name not in placed}
        ready = [c for c in remaining if c.name not in needed] or remaining[:1]  # a cycle: break it anywhere
        for c in ready:
            ordered.append(c)
            placed.add(c.name)
        remaining = [c for c in remaining if c.name not in placed]
    return ordered


class IdleStopper(Service):
    log = Logger()

    def __init__(self, clock, runtime: IContainerRuntime, waker: Waker, default_timeout: Optional[float],
                 interval: float = 1.0, peers: Optional[Peers] = None):
        self._clock = clock
        self._runtime = runtime
        self._waker = waker
        self._default = default_timeout
        self._interval = interval
        self._loop = LoopingCall(self.sweep)
        self._loop.clock = clock
        self._busy: set[str] = set()
        self._peers = peers
        #: unit -> when to ask the peers about it again (after a peer could not be reached)
        self._not_before: dict[str, float] = {}

    def startService(self) -> None:
        Service.startService(self)
        self._loop.start(self._interval, now=False)

    def stopService(self) -> None:
        Service.stopService(self)
        if self._loop.running:
            self._loop.stop()

    def deadline(self, container: Container) -> Optional[float]:
        """When the instance will be put to sleep if nothing happens (None: never, or busy now)."""
        timeout = idle_timeout(container, self._default)
        since = self._waker.idle_since(container.name)
        if timeout is None or since is None or not container.running:
            return None
        return since + timeout

    def activity(self, container: Container) -> dict:
        """What the deploy API shows of an instance's activity: the waker's (L{Waker.describe}), and its idle deadline."""
        doc = self._waker.describe(container.name)
        doc["idle_deadline"] = self.deadline(container)
        return doc

    def sweep(self) -> None:
        now = self._clock.seconds()
        running = [c for c in self._runtime.list() if c.running]
        depended = {dep for c in running for dep in depends_on(c, self._runtime.get)}
        units: dict[str, list[Container]] = {}
        for c in running:
            units.setdefault("group:" + group(c) if group(c) else "instance:" + c.name, []).append(c)
        for key, members in units.items():
            if key in self._busy or self._not_before.get(key, 0) > now:
                continue
            names = {c.name for c in members}
            if any(c.name in depended and not self._only_members_depend(c.name, running, names) for c in members):
                continue
            if all(self._expired(c, now) for c in members):
                self._sleep_unit(key, sleep_order(members))

    async def _agreed_sleep(self, key: str, member: Container) -> bool:
        """Sleep C{member} only if every peer, fenced, says idle; the fences go once it is down (or not)."""
        name = member.name
        token, reason, unreachable = await self._peers.fence(name, idle_timeout(member, self._default))
        try:
            if reason is not None:
                if unreachable:
                    self.log.warn("not stopping {instance}: {reason}; an instance is only stopped when every "
                                  "peer agrees", instance=name, reason=reason)
                    self._not_before[key] = self._clock.seconds() + PEER_RETRY
                else:
                    self.log.debug("not stopping {instance}: {reason}", instance=name, reason=reason)
                return False
            current = self._runtime.get(name)
            if current is None or not self._expired(current, self._clock.seconds()):
                return False  # used here while the peers were asked
            return await self._waker.sleep(name, stop_method(member))
        finally:
            await self._peers.release(name, token)

    def _only_members_depend(self, name: str, running: list[Container], members: set[str]) -> bool:
        return all(c.name in members for c in running if name in depends_on(c, self._runtime.get))

    def _expired(self, container: Container, now: float) -> bool:
        deadline = self.deadline(container)
        return deadline is not None and now >= deadline

    def _sleep_unit(self, key: str, members: list[Container]) -> Deferred:
        self._busy.add(key)

        async def run() -> None:
            for member in members:
                if self._peers:
                    slept = await self._agreed_sleep(key, member)
                else:
                    slept = await self._waker.sleep(member.name, stop_method(member))
                if not slept:
                    return  # a request arrived (here or at a peer): the rest stays up

        d = Deferred.fromCoroutine(run())
        d.addErrback(lambda f: self.log.failure("putting {unit} to sleep failed", f, unit=key))
        d.addBoth(lambda _: self._busy.discard(key))
        return d
