# -*- test-case-name: tests.test_auth -*-
"""
How often a deploy API sign-in may fail, and for whom (L{LoginLimiter}): failed logins per client address
(a sliding window) and per user (a delay that doubles with each failure); beyond, the API answers 429
with Retry-After. Time comes from the injected clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Optional

__all__ = ["Attempt", "LoginLimiter"]


@dataclass
class _Backoff:
    failures: int = 0
    pending: int = 0
    last: float = 0.0
    until: float = 0.0


@dataclass(frozen=True)
class Attempt:
    """A sign-in being checked, as L{LoginLimiter.begin} counted it."""

    address: str
    user: str
    key: tuple
    at: float


class LoginLimiter:
    """
    How often a sign-in may fail, and for whom:

    - per client address, at most C{per_address} failures in any C{window} seconds (against one address
      trying many users); the address must be the real client's (L{client_address}).
    - per user, a delay that grows: after C{free} failures every further one doubles the wait before the
      next attempt (C{base}, 2 C{base}, 4 C{base}... at most C{max_delay}); a success, or C{forget}
      seconds without failures, starts over. The failures of addresses the user never signed in from
      count together; an address the user signed in from before (for C{remember} seconds) has its own
      count, so a stranger guessing a user's password delays the stranger, not that user at home.

    An attempt counts from its start (L{begin}) until its end (L{failed} or L{succeeded}), so guesses sent
    in parallel count too. Memory is bounded by C{max_keys} per table.
    """

    def __init__(self, clock, per_address: int = 20, window: float = 60.0, free: int = 3, base: float = 1.0,
                 max_delay: float = 900.0, forget: float = 3600.0, remember: float = 30 * 86400.0,
                 max_keys: int = 10000):
        self._clock = clock
        self._per_address = per_address
        self._window = window
        self._free = free
        self._base = base
        self._max_delay = max_delay
        self._forget = forget
        self._remember = remember
        self._max_keys = max_keys
        self._addresses: dict[str, deque] = {}
        self._backoff: dict[tuple, _Backoff] = {}
        self._known: dict[tuple[str, str], float] = {}  # (user, address) -> until when it is remembered

    def retry_after(self, address: str, user: str) -> Optional[int]:
        """Seconds to wait before trying again, or None when an attempt is allowed now."""
        now = self._clock.seconds()
        waits = []
        times = self._recent(address, now)
        if times is not None and len(times) >= self._per_address:
            waits.append(times[0] + self._window - now)
        entry = self._entry(self._key(address, user, now), now)
        if entry is not None:
            if entry.until > now:
                waits.append(entry.until - now)
            elif entry.pending and entry.failures + entry.pending >= self._free:
                waits.append(1)  # guesses are being checked already: one at a time from here on
        if not waits:
            return None
        return max(1, int(math.ceil(max(waits))))

    def begin(self, address: str, user: str) -> Attempt:
        """Count an attempt that has been allowed (L{retry_after} said None) and is about to be checked."""
        now = self._clock.seconds()
        if len(self._addresses) >= self._max_keys or len(self._backoff) >= self._max_keys:
            self._prune(now)
        times = self._recent(address, now)
        if times is None:
            times = self._addresses[address] = deque()
        times.append(now)
        while len(times) > self._per_address:
            times.popleft()
        key = self._key(address, user, now)
        entry = self._entry(key, now)
        if entry is None:
            entry = self._backoff[key] = _Backoff()
        entry.pending += 1
        entry.last = now
        return Attempt(address, user, key, now)

    def failed(self, attempt: Attempt) -> None:
        """The attempt failed: the user's next one waits longer once the free failures are used up."""
        now = self._clock.seconds()
        entry = self._backoff.get(attempt.key)
        if entry is None:
            entry = self._backoff[attempt.key] = _Backoff(pending=1)
        entry.pending = max(0, entry.pending - 1)
        entry.failures += 1
        entry.last = now
        if entry.failures >= self._free:
            delay = min(self._max_delay, self._base * 2 ** min(entry.failures - self._free, 32))
            entry.until = max(entry.until, now + delay)

    def succeeded(self, attempt: Attempt) -> None:
        """The attempt succeeded: it does not count, the user starts over there, and the address is known."""
        times = self._addresses.get(attempt.address)
        if times is not None:
            try:
                times.remove(attempt.at)
            except ValueError:
                pass
            if not times:
                del self._addresses[attempt.address]
        if attempt.key[0] == "pair":
            self._backoff.pop(attempt.key, None)
        else:
            entry = self._backoff.get(attempt.key)
            if entry is not None:
                entry.pending = max(0, entry.pending - 1)
        pair = (attempt.user, attempt.address)
        self._known.pop(pair, None)
        while len(self._known) >= self._max_keys:
            del self._known[next(iter(self._known))]
        self._known[pair] = self._clock.seconds() + self._remember
        self._backoff.pop(("pair",) + pair, None)

    def _key(self, address: str, user: str, now: float) -> tuple:
        until = self._known.get((user, address))
        if until is not None and until > now:
            return ("pair", user, address)
        return ("user", user)

    def _entry(self, key: tuple, now: float) -> Optional[_Backoff]:
        entry = self._backoff.get(key)
        if entry is not None and not entry.pending and entry.until <= now and now - entry.last >= self._forget:
            del self._backoff[key]
            return None
        return entry

    def _recent(self, address: str, now: float) -> Optional[deque]:
        times = self._addresses.get(address)
        if times is None:
            return None
        while times and times[0] <= now - self._window:
            times.popleft()
        if not times:
            del self._addresses[address]
            return None
        return times

    def _prune(self, now: float) -> None:
        for address in list(self._addresses):
            self._recent(address, now)
        for key in list(self._backoff):
            self._entry(key, now)
        for pair in [p for p, until in self._known.items() if until <= now]:
            del self._known[pair]
        for table in (self._addresses, self._backoff):
            while len(table) >= self._max_keys:
                del table[next(iter(table))]  # the oldest first


