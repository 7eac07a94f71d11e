# -*- test-case-name: tests.test_idle_docker -*-
"""
Which requests may wake a sleeping instance (and count as activity on a running one). Bots, uptime
monitors and browsers' automatic fetches should neither wake instances nor keep them awake.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Optional, Sequence
from urllib.parse import unquote_to_bytes

__all__ = ["DEFAULT_NO_WAKE_PATHS", "WakePolicy", "parse_wake_rate"]

DEFAULT_NO_WAKE_PATHS = ("/favicon.ico", "/robots.txt")
#: request targets whose path verdict is remembered, at most (then forgotten all at once)
_MEMO = 4096


class WakePolicy:
    """C{wakes(uri, user_agent)}: False for paths matching a C{--no-wake-path} glob or agents matching a regex."""

    def __init__(self, no_wake_paths: Sequence[str] = DEFAULT_NO_WAKE_PATHS,
                 no_wake_user_agents: Sequence[str] = ()):
        self._paths = re.compile("|".join("(?:{})".format(fnmatch.translate(g)) for g in no_wake_paths).encode()) \
            if no_wake_paths else None
        self._agents = re.compile("|".join("(?:{})".format(r) for r in no_wake_user_agents).encode(), re.I) \
            if no_wake_user_agents else None
        self._by_uri: dict = {}

    @property
    def reads_agent(self) -> bool:
        """Does the decision depend on the User-Agent at all?"""
        return self._agents is not None

    def wakes(self, uri: bytes, user_agent: Optional[bytes]) -> bool:
        if self._paths is not None:
            known = self._by_uri.get(uri)  # the same paths come again and again (a memo, not state)
            if known is None:
                if len(self._by_uri) >= _MEMO:
                    self._by_uri.clear()
                known = self._by_uri[uri] = self._path_wakes(uri)
            if not known:
                return False
        if self._agents is not None and user_agent and self._agents.search(user_agent):
            return False
        return True

    def _path_wakes(self, uri: bytes) -> bool:
        path = uri.split(b"?", 1)[0]
        if b"%" in path:
            path = unquote_to_bytes(path)
        return not self._paths.match(path)


def parse_wake_rate(text: str) -> tuple[int, float]:
    """C{"5/1m"} -> (5, 60.0): at most 5 wakes per instance in any 60 s. Raise ValueError otherwise."""
    from wakeproxy.durations import parse_duration

    count, sep, period = text.partition("/")
    try:
        n = int(count)
        seconds = parse_duration(period)
    except ValueError:
        n, seconds = 0, 0.0
    if not sep or n < 1 or seconds <= 0:
        raise ValueError("{!r} is not a wake rate: use COUNT/PERIOD, e.g. 5/1m".format(text))
    return n, seconds
