# -*- test-case-name: tests.test_waker -*-
"""
One instance as the waker sees it: its state (L{wakeproxy.waking.states}), what belongs to that state
(the wake under way, the ticket, the stops under way), the callers held for it, and its activity.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Optional

from twisted.internet.defer import Deferred

from wakeproxy.waking.outcomes import Ticket
from wakeproxy.waking.states import State
from wakeproxy.waking.wake import Wake

__all__ = ["Instance", "UNKNOWN"]

#: what L{Instance.describe} shows for an instance the waker has no record of
UNKNOWN = {"inflight": 0, "last_activity": None, "waking": False, "stopping": False, "held": 0,
           "last_wake": None, "phase": None, "waking_for": None}

#: states in which an instance is busy whatever its activity (never idle)
_BUSY = frozenset({State.WAKING, State.STOPPING})


@dataclass(eq=False)
class Instance:
    name: str
    state: State = State.UNREADY
    waiters: list[Deferred] = field(default_factory=list)
    #: the wake under way (WAKING only)
    wake: Optional[Wake] = None
    #: where requests go (READY only)
    ticket: Optional[Ticket] = None
    #: stops or pauses under way (STOPPING only)
    stops: int = 0
    inflight: int = 0
    last_activity: float = 0.0
    #: when its recent wakes began (for --wake-rate)
    wake_times: deque = field(default_factory=deque)
    last_wake: Optional[dict] = None
    #: the phase its last wake ended in
    phase: str = "start"
    #: peers' fences (FENCED only): token -> its expiry (an IDelayedCall)
    fences: dict = field(default_factory=dict)
    #: the ticket it had when it was fenced, given back if it still runs when the fences go
    stashed: Optional[Ticket] = None

    def describe(self, now: float) -> dict:
        """What the deploy API shows about its activity and its last wake."""
        wake = self.wake
        return {"inflight": self.inflight, "last_activity": self.last_activity or None,
                "waking": wake is not None, "stopping": self.state is State.STOPPING,
                "held": len(self.waiters), "last_wake": self.last_wake,
                "phase": wake.phase if wake is not None else None,
                "waking_for": round(now - wake.began, 3) if wake is not None else None}

    def idle_since(self) -> Optional[float]:
        """When its last exchange ended, or None while it is busy (in flight, held callers, waking, stopping)."""
        if self.inflight or self.waiters or self.state in _BUSY:
            return None
        return self.last_activity

    def take_waiters(self) -> list[Deferred]:
        waiters, self.waiters = self.waiters, []
        return waiters
