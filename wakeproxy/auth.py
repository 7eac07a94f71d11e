# -*- test-case-name: tests.test_auth -*-
"""
Who may use the deploy API: the passwd file, password hashes, tokens and the login rate limit.

- L{PasswdFile}: lines C{user,hash}, re-read when the file changes. A hash is either the old spawner's
  unsalted sha256 hex (accepted, with a warning) or a salted, slow, self-describing one written by
  C{python -m wakeproxy.passwd add USER}: C{scrypt$N$r$p$salt$hash} (or C{pbkdf2_sha256$iterations$salt$hash}),
  salt and hash in unpadded url-safe base64. Every comparison is constant-time.
- L{TokenStore}: random bearer tokens with a fixed lifetime counted from their creation, kept in memory
  as sha256 digests (never the tokens themselves) and evicted on access once expired.
- L{LoginLimiter}: failed logins per client address and per user within a sliding window; beyond, 429.

Time comes from the injected clock; nothing here logs a password, a hash or a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import re
import secrets
from collections import deque
from dataclasses import dataclass
from typing import Optional

from twisted.logger import Logger

__all__ = [
    "LoginLimiter",
    "PasswdFile",
    "TokenStore",
    "hash_password",
    "is_legacy_hash",
    "verify_password",
    "verify_user",
]

log = Logger()

#: scrypt cost: 16 MiB of memory and some 50 ms per check on a small VM.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
_SALT_BYTES = 16
_LEGACY_RE = re.compile(r"[0-9a-fA-F]{64}")
#: what a failed lookup of an unknown user verifies against, so that it costs as much as a known one.
_DUMMY_HASH = "scrypt${}${}${}$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".format(
    SCRYPT_N, SCRYPT_R, SCRYPT_P)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, salt: Optional[bytes] = None) -> str:
    """A salted scrypt hash of C{password} in the self-describing C{scrypt$N$r$p$salt$hash} format."""
    salt = os.urandom(_SALT_BYTES) if salt is None else salt
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            maxmem=_SCRYPT_MAXMEM, dklen=32)
    return "scrypt${}${}${}${}${}".format(SCRYPT_N, SCRYPT_R, SCRYPT_P, _b64(salt), _b64(digest))


def is_legacy_hash(stored: str) -> bool:
    """The old spawner's format: the unsalted sha256 of the password, in hex."""
    return _LEGACY_RE.fullmatch(stored) is not None


def known_format(stored: str) -> bool:
    return is_legacy_hash(stored) or _parse_slow(stored) is not None


def verify_password(stored: str, password: str) -> bool:
    """Does C{password} match C{stored} (any supported format)? Constant-time in the comparison."""
    secret = password.encode("utf-8", "surrogatepass")
    if is_legacy_hash(stored):
        return hmac.compare_digest(hashlib.sha256(secret).hexdigest(), stored.lower())
    parsed = _parse_slow(stored)
    if parsed is None:
        return False
    kind, params, salt, expected = parsed
    if kind == "scrypt":
        n, r, p = params
        actual = hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=len(expected))
    else:
        actual = hashlib.pbkdf2_hmac("sha256", secret, salt, params[0], dklen=len(expected))
    return hmac.compare_digest(actual, expected)


def verify_user(stored: Optional[str], password: str) -> bool:
    """L{verify_password} for a user who may not exist (C{stored} None): that costs the same slow hash."""
    ok = verify_password(_DUMMY_HASH if stored is None else stored, password)
    return ok and stored is not None


def _parse_slow(stored: str):
    parts = stored.split("$")
    try:
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = (int(x) for x in parts[1:4])
            if n < 2 or n & (n - 1) or not 0 < r <= 64 or not 0 < p <= 16 or 128 * r * n > _SCRYPT_MAXMEM // 2:
                return None
            return "scrypt", (n, r, p), _unb64(parts[4]), _unb64(parts[5])
        if parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            iterations = int(parts[1])
            if not 0 < iterations <= 10_000_000:
                return None
            return "pbkdf2_sha256", (iterations,), _unb64(parts[2]), _unb64(parts[3])
    except (ValueError, TypeError):
        return None
    return None


def parse_passwd(text: str, source: str = "passwd") -> dict[str, str]:
    """
    User -> stored hash from the lines of a passwd file (C{user,hash}; blank lines and C{#} comments are
    skipped). Bad lines are skipped with a warning naming the line number only: a line may hold a secret.
    """
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",") if f.strip()]
        if len(fields) != 2:
            log.warn("{source}:{line}: skipped, not 'user,hash'", source=source, line=number)
            continue
        user, stored = fields
        if not known_format(stored):
            log.warn("{source}:{line}: skipped user {user}: unknown hash format", source=source, line=number,
                     user=user)
            continue
        if is_legacy_hash(stored):
            log.warn("{source}:{line}: user {user} has an unsalted sha256 hash (the old spawner's); replace it "
                     "with `python -m wakeproxy.passwd add {user}`", source=source, line=number, user=user)
        users[user] = stored
    return users


class PasswdFile:
    """The users of a passwd file, re-read whenever the file's size or modification time changes."""

    def __init__(self, path: Optional[str]):
        self._path = path
        self._stamp: Optional[tuple] = None
        self._users: dict[str, str] = {}
        self._refresh()

    def __len__(self) -> int:
        self._refresh()
        return len(self._users)

    def stored(self, user: str) -> Optional[str]:
        """C{user}'s stored hash (re-reading the file if it changed), or None for an unknown user."""
        self._refresh()
        return self._users.get(user)

    def check(self, user: str, password: str) -> bool:
        """Is C{password} right for C{user}?"""
        return verify_user(self.stored(user), password)

    def known(self, user: str) -> bool:
        return user in self._users

    def _refresh(self) -> None:
        if self._path is None:
            return
        try:
            info = os.stat(self._path)
        except OSError as e:
            if self._stamp != "missing":
                log.warn("cannot read --passwd {path} ({error}): nobody can sign in", path=self._path,
                         error=e.strerror)
            self._stamp, self._users = "missing", {}
            return
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        if stamp == self._stamp:
            return
        try:
            with open(self._path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as e:
            log.warn("cannot read --passwd {path} ({error}): nobody can sign in", path=self._path, error=e.strerror)
            self._stamp, self._users = "missing", {}
            return
        self._stamp, self._users = stamp, parse_passwd(text, self._path)
        log.info("{path}: {count} deploy API user(s)", path=self._path, count=len(self._users))


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


class LoginLimiter:
    """
    Failed logins in the last C{window} seconds, per client address and per user name. Once either
    reaches its limit, further attempts are refused (429) until the oldest failure leaves the window.
    Successful logins do not count, and clear the user's failures.
    """

    def __init__(self, clock, per_user: int = 5, per_address: int = 20, window: float = 60.0,
                 max_keys: int = 10000):
        self._clock = clock
        self._limits = {"user": per_user, "address": per_address}
        self._window = window
        self._max_keys = max_keys
        self._failures: dict[tuple[str, str], deque] = {}

    def retry_after(self, address: str, user: str) -> Optional[int]:
        """Seconds to wait before trying again, or None when an attempt is allowed now."""
        now = self._clock.seconds()
        waits = []
        for key in (("address", address), ("user", user)):
            times = self._recent(key, now)
            if times is not None and len(times) >= self._limits[key[0]]:
                waits.append(times[0] + self._window - now)
        if not waits:
            return None
        return max(1, int(math.ceil(max(waits))))

    def failed(self, address: str, user: str) -> float:
        """Count a failure (or an attempt not yet known to succeed); returns its time, for L{succeeded}."""
        now = self._clock.seconds()
        if len(self._failures) >= self._max_keys:
            self._prune(now)
        for key in (("address", address), ("user", user)):
            times = self._recent(key, now)
            if times is None:
                times = self._failures[key] = deque()
            times.append(now)
            while len(times) > self._limits[key[0]]:
                times.popleft()
        return now

    def succeeded(self, address: str, user: str, attempt: float) -> None:
        """The attempt counted at C{attempt} succeeded: forget it, and the user's earlier failures."""
        self._failures.pop(("user", user), None)
        times = self._failures.get(("address", address))
        if times is not None:
            try:
                times.remove(attempt)
            except ValueError:
                pass
            if not times:
                del self._failures[("address", address)]

    def _recent(self, key: tuple[str, str], now: float) -> Optional[deque]:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self._window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def _prune(self, now: float) -> None:
        for key in list(self._failures):
            self._recent(key, now)
        while len(self._failures) >= self._max_keys:
            del self._failures[next(iter(self._failures))]
