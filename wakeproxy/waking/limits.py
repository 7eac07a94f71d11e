# -*- test-case-name: tests.test_waker -*-
"""
How many callers the waker holds, and how often it wakes one instance: C{--max-held},
C{--max-held-per-instance} (503 with Retry-After beyond) and C{--wake-rate} (N wakes per period).
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Optional

from wakeproxy.waking.outcomes import WakeFailure

__all__ = ["HoldLimits", "RETRY_AFTER"]

#: seconds a caller refused for too many held requests is told to wait
RETRY_AFTER = 2


class HoldLimits:
    def __init__(self, clock, max_held: int, max_held_per_instance: int,
                 wake_rate: Optional[tuple[int, float]] = None, rate_limited: Callable[[], None] = lambda: None):
        self._clock = clock
        self._max_held = max_held
        self._max_held_per_instance = max_held_per_instance
        self._wake_rate = wake_rate
        self._rate_limited = rate_limited

    def refusal(self, name: str, waiting: int, held: int, wake_times: Optional[deque]) -> Optional[WakeFailure]:
        """
        Why one more caller of C{name} may not be held (None: it may): C{waiting} already wait for it,
        C{held} in all; C{wake_times} (when the caller would begin a wake) are its recent wakes' times.
        """
        if waiting >= self._max_held_per_instance:
            return WakeFailure(503, "too many requests are already waiting for instance {} to wake ({})".format(
                name, self._max_held_per_instance), retry_after=RETRY_AFTER)
        if held >= self._max_held:
            return WakeFailure(503, "too many requests are already waiting for instances to wake ({})".format(
                self._max_held), retry_after=RETRY_AFTER)
        if wake_times is None or self._wake_rate is None:
            return None
        count, period = self._wake_rate
        now = self._clock.seconds()
        while wake_times and wake_times[0] <= now - period:
            wake_times.popleft()
        if len(wake_times) < count:
            return None
        self._rate_limited()
        return WakeFailure(503, "instance {} was woken {} times in the last {:g}s (--wake-rate); not waking it "
                                "again yet".format(name, count, period), retry_after=int(wake_times[0] + period - now) + 1)
