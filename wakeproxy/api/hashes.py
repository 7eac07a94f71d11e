# -*- test-case-name: tests.test_auth -*-
"""
Password hashes of the deploy API's passwd file.

Either the old spawner's unsalted sha256 hex (accepted, with a warning where the file is read) or a salted,
slow, self-describing one written by C{python -m wakeproxy.api.passwd add USER}: C{scrypt$N$r$p$salt$hash}
(or C{pbkdf2_sha256$iterations$salt$hash}), salt and hash in unpadded url-safe base64. Every comparison is
constant-time, and every check costs at least one standard scrypt (L{verify_user}), so that neither an
unknown user nor a legacy entry answers faster than the others. Nothing here logs a password or a hash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from typing import Optional

__all__ = ["SCRYPT_N", "SCRYPT_P", "SCRYPT_R", "hash_password", "is_legacy_hash", "known_format", "verify_password",
           "verify_user"]

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


