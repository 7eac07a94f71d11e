# -*- test-case-name: tests.test_auth -*-
"""
Who may use the deploy API: the passwd file, password hashes, tokens and the login rate limit.

- L{PasswdFile}: lines C{user,hash} or C{user,hash,admin}, re-read when the file changes. A hash is either
  the old spawner's unsalted sha256 hex (accepted, with a warning) or a salted, slow, self-describing one
  written by C{python -m wakeproxy.api.passwd add USER}: C{scrypt$N$r$p$salt$hash} (or
  C{pbkdf2_sha256$iterations$salt$hash}), salt and hash in unpadded url-safe base64. Every comparison is
  constant-time, and every check costs at least one standard scrypt (L{verify_user}), so that neither an
  unknown user nor a legacy entry answers faster than the others.
- L{TokenStore}: random bearer tokens with a fixed lifetime counted from their creation, kept in memory
  as sha256 digests (never the tokens themselves) and evicted on access once expired. A token names its
  user; the role (L{User.admin}) is looked up in the passwd file on every request.
- L{LoginLimiter}: failed logins per client address (a sliding window) and per user (a delay that doubles
  with each failure); beyond, 429 with Retry-After.
- L{client_address}: the address a request really comes from, through C{--trusted-proxy} peers only.

Time comes from the injected clock; nothing here logs a password, a hash or a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import math
import os
import re
import secrets
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from twisted.logger import Logger

__all__ = [
    "ADMIN",
    "Account",
    "Attempt",
    "LoginLimiter",
    "PasswdFile",
    "TokenStore",
    "User",
    "client_address",
    "is_trusted",
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
#: the third field of a passwd line that makes its user an admin (sees and manages every instance).
ADMIN = "admin"
_ROLES = {"": False, "user": False, ADMIN: True}


@dataclass(frozen=True)
class Account:
    """One line of the passwd file: the stored hash and whether the user is an admin."""

    stored: str
    admin: bool = False


@dataclass(frozen=True)
class User:
    """Who sends a deploy API request: a user of the passwd file (or C{anonymous} with --no-auth)."""

    name: str
    admin: bool = False


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
    """
    L{verify_password} for a user who may not exist (C{stored} None), costing at least one standard
    scrypt whatever the entry: an unknown user is checked against a dummy scrypt hash, and an entry that
    is not a standard scrypt one (the old spawner's fast sha256, PBKDF2, another scrypt cost) is checked
    and then pays the dummy scrypt as well, so no answer comes back faster than a real user's.
    """
    if stored is None:
        verify_password(_DUMMY_HASH, password)
        return False
    ok = verify_password(stored, password)
    if not _standard_scrypt(stored):
        verify_password(_DUMMY_HASH, password)
    return ok


def _standard_scrypt(stored: str) -> bool:
    parsed = _parse_slow(stored)
    return parsed is not None and parsed[0] == "scrypt" and parsed[1] == (SCRYPT_N, SCRYPT_R, SCRYPT_P)


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


def parse_passwd(text: str, source: str = "passwd") -> dict[str, Account]:
    """
    User -> L{Account} from the lines of a passwd file (C{user,hash} or C{user,hash,admin}; blank lines and
    C{#} comments are skipped). Bad lines are skipped with a warning naming the line number only: a line
    may hold a secret.
    """
    users: dict[str, Account] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",")]
        while len(fields) > 2 and not fields[-1]:
            fields.pop()
        if len(fields) not in (2, 3) or not all(fields):
            log.warn("{source}:{line}: skipped, not 'user,hash' or 'user,hash,admin'", source=source, line=number)
            continue
        user, stored = fields[:2]
        role = fields[2].lower() if len(fields) == 3 else ""
        if role not in _ROLES:
            log.warn("{source}:{line}: skipped user {user}: unknown role (the third field may only be 'admin')",
                     source=source, line=number, user=user)
            continue
        if not known_format(stored):
            log.warn("{source}:{line}: skipped user {user}: unknown hash format", source=source, line=number,
                     user=user)
            continue
        if is_legacy_hash(stored):
            log.warn("{source}:{line}: user {user} has an unsalted sha256 hash (the old spawner's); replace it "
                     "with `python -m wakeproxy.api.passwd add {user}`", source=source, line=number, user=user)
        users[user] = Account(stored, _ROLES[role])
    return users


class PasswdFile:
    """The users of a passwd file, re-read whenever the file's size or modification time changes."""

    def __init__(self, path: Optional[str]):
        self._path = path
        self._stamp: Optional[tuple] = None
        self._users: dict[str, Account] = {}
        self._refresh()

    def __len__(self) -> int:
        self._refresh()
        return len(self._users)

    def stored(self, user: str) -> Optional[str]:
        """C{user}'s stored hash (re-reading the file if it changed), or None for an unknown user."""
        account = self.account(user)
        return None if account is None else account.stored

    def account(self, user: str) -> Optional[Account]:
        """C{user}'s entry (re-reading the file if it changed), or None for an unknown user."""
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


def client_address(peer: str, forwarded_for: Iterable[str], trusted: Sequence) -> str:
    """
    The address a request comes from: its peer's, unless the peer is in C{trusted} (C{--trusted-proxy}
    networks); then C{X-Forwarded-For} (its values in order) is read from the right, skipping trusted
    hops, and the first untrusted one is the client (an entry that is not an address ends the walk at the
    last trusted hop). A client outside C{trusted} cannot choose its address by sending the header.
    """
    address = peer
    if not is_trusted(peer, trusted):
        return address
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        try:
            ip = ipaddress.ip_address(hop)
        except ValueError:
            break
        address = str(ip)
        if not is_trusted(ip, trusted):
            break
    return address


def is_trusted(address, networks: Sequence) -> bool:
    """Is C{address} (text or an ipaddress object) in one of C{networks}?"""
    if not networks:
        return False
    try:
        ip = address if not isinstance(address, str) else ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip.version == net.version and ip in net for net in networks)
