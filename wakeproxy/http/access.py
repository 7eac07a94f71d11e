# -*- test-case-name: tests.test_access -*-
"""
Access tokens for instances (C{--access signed}): who may use an instance through the proxy listener.

A token is C{<payload>.<mac>}, both base64url without padding (cookie- and header-safe): the payload is
C{instance NUL owner NUL expiry} (expiry in whole Unix seconds), the MAC is HMAC-SHA256 of the payload with
a key from C{--access-key FILE}. The file holds one key per line (at least 32 bytes of text each); the
first signs, every one verifies, so a key is rotated by putting the new one first and dropping the old
one once its tokens have expired. The deploy API issues tokens to an instance's owner; the proxy checks
them (L{AccessKeys.check}) before anything is woken or forwarded, and removes them from the request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Optional

__all__ = ["AccessKeys", "AccessRefused", "COOKIE", "HEADER"]

#: default names of the cookie and the header that carry a token
COOKIE = "wakeproxy_access"
HEADER = b"x-wakeproxy-access"

MIN_KEY_LENGTH = 32


class AccessRefused(Exception):
    """Why a token does not give access: one sentence for a 401's detail."""


class AccessKeys:
    def __init__(self, keys: list[bytes]):
        if not keys:
            raise ValueError("no access key")
        for key in keys:
            if len(key) < MIN_KEY_LENGTH:
                raise ValueError("an access key must be at least {} bytes long".format(MIN_KEY_LENGTH))
        self._keys = list(keys)

    @classmethod
    def from_file(cls, path: str) -> "AccessKeys":
        with open(path, "rb") as f:
            keys = [line.strip() for line in f.read().splitlines() if line.strip() and not line.startswith(b"#")]
        return cls(keys[:2] if len(keys) > 2 else keys) if keys else cls([])

    def issue(self, instance: str, owner: str, expires: int) -> str:
        """A token for C{instance} (owned by C{owner}) valid until C{expires} (Unix seconds)."""
        payload = "{}\0{}\0{}".format(instance, owner, int(expires)).encode("utf-8")
        return _b64(payload) + "." + _b64(_mac(self._keys[0], payload))

    def check(self, token: str, instance: str, now: float) -> str:
        """The owner named by a valid, unexpired C{token} for C{instance}; else raise L{AccessRefused}."""
        encoded, dot, mac = token.strip().partition(".")
        try:
            payload = _unb64(encoded)
            given = _unb64(mac)
        except ValueError:
            raise AccessRefused("the access token is malformed")
        if not dot or not any(hmac.compare_digest(_mac(key, payload), given) for key in self._keys):
            raise AccessRefused("the access token is not valid (wrong signature)")
        try:
            name, owner, expires = payload.decode("utf-8").split("\0")
            expires_at = int(expires)
        except ValueError:
            raise AccessRefused("the access token is malformed")
        if name != instance:
            raise AccessRefused("the access token is for another instance")
        if expires_at <= now:
            raise AccessRefused("the access token expired; open the instance again from the home page")
        return owner


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text or len(text) > 4096:
        raise ValueError(text)
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (ValueError, TypeError):
        raise ValueError(text)


def token_from(cookie_values, header: Optional[bytes], cookie_name: str = COOKIE) -> Optional[str]:
    """The token a request carries: the header wins over the cookie."""
    if header:
        return header.decode("latin-1")
    from wakeproxy.http.selector import cookie_value

    return cookie_value(cookie_values, cookie_name) if cookie_values else None
