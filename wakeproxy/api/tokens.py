# -*- test-case-name: tests.test_auth -*-
"""
The deploy API's bearer tokens (L{TokenStore}): random, with a fixed lifetime counted from their creation,
kept in memory as sha256 digests (never the tokens themselves) and evicted on access once expired. A
token names its user; the role is looked up in the passwd file on every request. Time comes from the
injected clock; nothing here logs a token.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Optional

__all__ = ["TokenStore"]


@dataclass
class _Token:
    user: str
    expires: float


class TokenStore:
    """
    Bearer tokens: 32 random bytes, url-safe, valid C{ttl} seconds from creation. Expired tokens are
    evicted on access, and every C{sweep_every} seconds all of them; at most C{max_tokens} live at once
    (the oldest goes first).
    """

    def __init__(self, clock, ttl: float, max_tokens: int = 10000, sweep_every: float = 60.0):
        self._clock = clock
        self._ttl = ttl
        self._max = max_tokens
        self._sweep_every = sweep_every
        self._next_sweep = clock.seconds() + sweep_every
        self._tokens: dict[bytes, _Token] = {}  # sha256(token) -> owner; dicts keep creation order

    def __len__(self) -> int:
        return len(self._tokens)

    @property
    def ttl(self) -> float:
        return self._ttl

    def issue(self, user: str) -> str:
        self._sweep()
        token = secrets.token_urlsafe(32)
        while len(self._tokens) >= self._max:
            del self._tokens[next(iter(self._tokens))]
        self._tokens[_digest(token)] = _Token(user, self._clock.seconds() + self._ttl)
        return token

    def check(self, token: str) -> tuple[Optional[str], str]:
        """C{(user, "")} for a valid token, else C{(None, why)}."""
        key = _digest(token)
        entry = self._tokens.get(key)
        self._sweep()
        if entry is None:
            return None, "the token is not valid: sign in again with POST /login"
        if entry.expires <= self._clock.seconds():
            self._tokens.pop(key, None)
            return None, "the token has expired: sign in again with POST /login"
        return entry.user, ""

    def _sweep(self) -> None:
        now = self._clock.seconds()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._sweep_every
        for key in [k for k, t in self._tokens.items() if t.expires <= now]:
            del self._tokens[key]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


