# -*- test-case-name: tests.test_waker -*-
"""
What waiting for an instance gives: a L{Ticket} (the container snapshot it was found ready in, where its
app listens and, after a wake, the L{WakeReport}), or a L{WakeFailure} saying why not as an HTTP status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from twisted.logger import Logger
from twisted.python.failure import Failure

from wakeproxy.runtime.interface import Container, EngineFailure, NoSuchInstance, RuntimeFailure
from wakeproxy.waking.labels import Reach

__all__ = ["Ticket", "WakeFailure", "WakeReport", "exited", "no_such_instance", "wake_failure_of"]

log = Logger()


class WakeFailure(Exception):
    """Why held requests could not be served: an HTTP status, a sentence, maybe a phase and Retry-After."""

    def __init__(self, status: int, detail: str, phase: Optional[str] = None, retry_after: Optional[int] = None):
        Exception.__init__(self, detail)
        self.status = status
        self.detail = detail
        self.phase = phase
        self.retry_after = retry_after


@dataclass(frozen=True)
class WakeReport:
    """How long each phase of a wake took, in seconds."""

    phases: dict[str, float]
    total: float

    def server_timing(self) -> bytes:
        parts = ["{};dur={:.1f}".format(name, seconds * 1000) for name, seconds in self.phases.items()]
        parts.append("total;dur={:.1f}".format(self.total * 1000))
        return ", ".join(parts).encode("ascii")


@dataclass(frozen=True)
class Ticket:
    """
    A ready instance: the snapshot it was found ready in, where its app listens (L{Reach}: an address, or
    why there is none wakeproxy may use), and the report of the wake that made it ready (None when it
    already was). The waker keeps one per ready instance, renewed when the snapshot changes.
    """

    container: Container
    reach: Reach
    report: Optional[WakeReport] = None


def no_such_instance(name: str) -> WakeFailure:
    return WakeFailure(404, "no managed instance named {!r}".format(name))


def exited(name: str, container: Optional[Container], when: str, phase: str) -> WakeFailure:
    """The 502 for an instance that exited or was removed C{when} (a sentence fragment)."""
    if container is None:
        return WakeFailure(502, "instance {} was removed {}".format(name, when), phase=phase)
    return WakeFailure(502, "instance {} exited with code {} {}".format(name, container.exit_code, when),
                       phase=phase)


def wake_failure_of(failure: Failure, name: str, phase: str) -> WakeFailure:
    """What a failed wake of C{name} tells its callers, from whatever it failed with (bugs are logged)."""
    if failure.check(WakeFailure):
        return failure.value
    if failure.check(NoSuchInstance):
        return no_such_instance(name)
    if failure.check(EngineFailure):
        return WakeFailure(503, "could not start instance {}: {}".format(name, failure.value), phase=phase,
                           retry_after=failure.value.retry_after)
    if failure.check(RuntimeFailure):
        return WakeFailure(502, "could not start instance {}: {}".format(name, failure.value), phase=phase)
    log.failure("wake of {instance} failed", failure, instance=name)
    return WakeFailure(502, "waking instance {} failed unexpectedly".format(name), phase=phase)
