# -*- test-case-name: tests.test_api_unit -*-
"""
Who sends a deploy API request (L{Authenticator}): C{POST /login} checks a passwd user's password
(L{wakeproxy.api.passwd}, L{wakeproxy.api.hashes}) under the login rate limit (L{wakeproxy.api.loginlimit})
and issues a token (L{wakeproxy.api.tokens}); every other request is told apart by its token, and
C{/metrics} may also take Basic credentials. The client's address and scheme come through
C{--trusted-proxy} peers only (L{wakeproxy.trustedproxies}).

Nothing here logs a password, a hash or a token.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Callable, Optional

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger

from wakeproxy.api.jsonbody import BodyError, check_login, parse_json
from wakeproxy.api.hashes import verify_user
from wakeproxy.api.loginlimit import LoginLimiter
from wakeproxy.api.passwd import PasswdFile
from wakeproxy.api.reply import Reply, crashed
from wakeproxy.api.tokens import TokenStore
from wakeproxy.trustedproxies import client_address, is_trusted

__all__ = ["Authenticator", "User"]

_CHALLENGE = {b"www-authenticate": b'Bearer realm="wakeproxy"'}
_METRICS_CHALLENGE = {b"www-authenticate": b'Bearer realm="wakeproxy", Basic realm="wakeproxy"'}


@dataclass(frozen=True)
class User:
    """Who sends a deploy API request: a user of the passwd file (or C{anonymous} with --no-auth)."""

    name: str
    admin: bool = False



class Authenticator:
    """
    Signs users in (C{POST /login}) and tells who sends a request from its token: the token names the
    user, the passwd file says (on every request) whether they still exist and whether they are an admin.
    """

    log = Logger()

    def __init__(self, passwd: PasswdFile, tokens: TokenStore, limiter: LoginLimiter, enabled: bool = True,
                 max_body: int = 1024 * 1024, run_blocking: Callable[..., Deferred] = maybeDeferred,
                 trusted_proxies=()):
        self.passwd = passwd
        self.tokens = tokens
        self.limiter = limiter
        self.enabled = enabled
        self.max_body = max_body
        #: runs the (deliberately slow) password check; in the reactor's thread pool when there is one.
        self._run_blocking = run_blocking
        #: --trusted-proxy networks: their X-Forwarded-For / X-Forwarded-Proto are believed
        self.trusted_proxies = list(trusted_proxies)

    def user(self, reply: Reply, challenge: dict = _CHALLENGE) -> Optional[User]:
        """Who sends this request, or None after answering 401. With --no-auth, everyone is an 'anonymous' admin."""
        if not self.enabled:
            return User("anonymous", admin=True)
        token = self._token(reply.request)
        if not token:
            why = "this endpoint needs a token: get one with POST /login and send 'Authorization: Bearer <token>'"
        else:
            name, why = self.tokens.check(token.decode("latin-1"))
            if name is not None:
                account = self.passwd.account(name)
                if account is not None:
                    return User(name, account.admin)
                why = "the token's user is no longer in the passwd file"
        reply.problem(401, why, headers=challenge)
        return None

    @staticmethod
    def _token(request) -> Optional[bytes]:
        headers = request.requestHeaders
        token = None
        for value in headers.getRawHeaders(b"authorization", []):
            scheme, _, credentials = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and credentials.strip():
                token = credentials.strip()
        if token is None:
            values = headers.getRawHeaders(b"token", [])  # the old spawner's header
            token = values[-1].strip() if values else None
        return token

    def client(self, request) -> str:
        """The real client's address: the peer's, or what --trusted-proxy peers say in X-Forwarded-For."""
        values = [v.decode("latin-1") for v in request.requestHeaders.getRawHeaders(b"x-forwarded-for", [])]
        return client_address(_peer(request), values, self.trusted_proxies)

    def https(self, request) -> bool:
        """Was the request made over https: TLS here, or X-Forwarded-Proto from a --trusted-proxy peer."""
        if request.isSecure():
            return True
        if not is_trusted(_peer(request), self.trusted_proxies):
            return False
        protos = b",".join(request.requestHeaders.getRawHeaders(b"x-forwarded-proto", []))
        return b"https" in [p.strip().lower() for p in protos.split(b",")]

    def login(self, reply: Reply) -> None:
        raw = reply.body(self.max_body)
        if raw is None:
            return
        try:
            user, password = check_login(parse_json(raw))
        except BodyError as e:
            reply.problem(e.status, e.detail, errors=[x.as_dict() for x in e.errors])
            return
        self.check_password(reply, user, password).addCallback(self._signed_in, reply).addErrback(crashed, reply)

    def check_password(self, reply: Reply, user: str, password: str) -> Deferred:
        """
        Fires with the L{User} when C{password} is right, else with None after answering (401, or 429 when
        too many sign-ins failed from that address or for that user). Always costs one slow hash when it
        gets as far as checking.
        """
        address = self.client(reply.request)
        wait = self.limiter.retry_after(address, user)
        if wait is not None:
            self.log.warn("deploy API: sign-in for {who} from {address} refused: too many failures from there or "
                          "for that user", address=address, who=user if self.passwd.known(user) else "an unknown user")
            reply.problem(429, "too many failed sign-ins; try again in {} s".format(wait), retry_after=wait)
            return succeed(None)
        attempt = self.limiter.begin(address, user)  # counts until it ends, so concurrent guesses count
        d = self._run_blocking(verify_user, self.passwd.stored(user), password)
        d.addCallback(self._checked, reply, attempt)
        return d

    def _checked(self, ok: bool, reply: Reply, attempt) -> Optional[User]:
        account = self.passwd.account(attempt.user) if ok else None
        if account is None:
            self.limiter.failed(attempt)
            self.log.warn("deploy API: failed sign-in for {who} from {address}", address=attempt.address,
                          who=attempt.user if self.passwd.known(attempt.user) else "an unknown user")
            reply.problem(401, "login invalid: wrong user name or password", headers=_CHALLENGE)
            return None
        self.limiter.succeeded(attempt)
        self.log.info("deploy API: {user} signed in from {address}{admin}", user=attempt.user, address=attempt.address,
                      admin=" (admin)" if account.admin else "")
        return User(attempt.user, account.admin)

    def _signed_in(self, user: Optional[User], reply: Reply) -> None:
        if user is not None:
            reply.json(200, {"token": self.tokens.issue(user.name), "token_type": "Bearer",
                             "expires_in": int(self.tokens.ttl)})

    def metrics_reader(self, reply: Reply) -> Deferred:
        """
        Fires with the L{User} allowed to read /metrics: a token's (Bearer), or a passwd user's (Basic, for
        scrapers that cannot sign in; checked like a sign-in, limits included); else None after a 401.
        """
        if not self.enabled:
            return succeed(User("anonymous", admin=True))
        for value in reply.request.requestHeaders.getRawHeaders(b"authorization", []):
            scheme, _, credentials = value.strip().partition(b" ")
            if scheme.lower() == b"basic":
                try:
                    user, sep, password = base64.b64decode(credentials.strip(), validate=True).decode("utf-8").partition(":")
                except (binascii.Error, UnicodeDecodeError):
                    sep = ""
                if not sep or not user:
                    reply.problem(401, "malformed Basic credentials", headers=_METRICS_CHALLENGE)
                    return succeed(None)
                return self.check_password(reply, user, password)
        return succeed(self.user(reply, _METRICS_CHALLENGE))


def _peer(request) -> str:
    address = request.getClientAddress()
    return getattr(address, "host", None) or str(getattr(address, "name", None) or "local")
