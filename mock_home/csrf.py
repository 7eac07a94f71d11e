"""
CSRF tokens of mock_home's forms: a signed-in user's forms carry their session's token; the sign-in form,
before any session, an HMAC of the C{home_login} cookie (L{LoginTokens}).
"""

import hashlib
import hmac
import secrets


def matches(given, expected):
    """Does the submitted token C{given} equal C{expected} (constant time; empty never matches)?"""
    return bool(given) and bool(expected) and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


class LoginTokens:
    """The sign-in form's CSRF token: an HMAC of the C{home_login} cookie's nonce, with a per-process key."""

    def __init__(self):
        self._secret = secrets.token_bytes(32)

    def token(self, nonce):
        return hmac.new(self._secret, b"login:" + nonce.encode("utf-8"), hashlib.sha256).hexdigest()

    def valid(self, nonce, given):
        return bool(nonce) and matches(given, self.token(nonce))
