# -*- test-case-name: tests.test_access -*-
"""
Who may use an instance through the proxy listener (C{--access}): the step after selection and before
anything is woken, answered, or forwarded. An unauthorised request learns nothing (not even whether the
instance exists): 401 problem+json, or a redirect home for a browser navigation.

  - L{OpenGate} (C{open}): everyone (the old spawner's behaviour; logged loudly at start-up).
  - L{SignedGate} (C{signed}): the request carries an access token for the instance it selects (cookie
    C{wakeproxy_access} or header C{X-Wakeproxy-Access}; L{access}); both are removed before forwarding.
  - L{ForwardAuthGate} (C{forward-auth:URL}): Traefik's forwardAuth / nginx's auth_request convention: the
    method, URI and headers (no body) go to URL; 2xx allows (the named response headers are copied onto
    the upstream request), any other answer goes back to the client as it is. Answers are cached per
    credential and instance for C{--forward-auth-cache} seconds.

C{check(head, name)} returns None (allowed), a str (refused: the detail of the 401 the dispatcher answers,
or a redirect home for a browser), an L{answers.Answer} (forward-auth's own refusal, passed on as it is),
or a Deferred firing with one of these.
"""

from __future__ import annotations

from typing import Optional, Sequence

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from wakeproxy import answers
from wakeproxy.httpclient import read_body
from wakeproxy.http.access import COOKIE, HEADER, AccessKeys, AccessRefused
from wakeproxy.http.headers import HOP_BY_HOP
from wakeproxy.http.selector import parse_cookies

__all__ = ["ForwardAuthGate", "OpenGate", "SignedGate", "strip_token"]


class OpenGate:
    def check(self, head, name: str):
        return None


class SignedGate:
    """
    C{owner_of(name)}: the instance's current owner (C{""} for the operator's), or None when there is no
    such instance; a token issued to an earlier instance of the same name (another owner) is refused.
    """

    def __init__(self, keys: AccessKeys, clock, cookie: str = COOKIE, owner_of=None):
        self._keys = keys
        self._clock = clock
        self._cookie = cookie
        self._owner_of = owner_of
        self._prefix = cookie.encode("ascii") + b"="

    def check(self, head, name: str):
        header = _first(head, HEADER)
        token = header.decode("latin-1") if header else None
        if token is None:
            for value in head.cookie:
                if self._prefix in value:
                    for key, text in parse_cookies((value,)):
                        if key == self._cookie:
                            token = text
        if token is None:
            return "this instance needs an access token: open it from the home page"
        try:
            owner = self._keys.check(token, name, self._clock.seconds())
        except AccessRefused as e:
            return str(e)
        if self._owner_of is not None:
            current = self._owner_of(name)
            if current is not None and current != owner:
                return "the access token was issued for an earlier instance of this name; open it again"
        strip_token(head, self._cookie)
        return None


def strip_token(head, cookie: str = COOKIE) -> None:
    """Remove the access token (header and cookie) from the lines forwarded upstream."""
    prefix = cookie.encode("ascii") + b"="
    kept = []
    for line in head.lines:
        lower = line[:20].lower()
        if lower.startswith(HEADER + b":"):
            continue
        if lower.startswith(b"cookie:") and prefix in line:
            pairs = [p.strip() for p in line.split(b":", 1)[1].split(b";")]
            pairs = [p for p in pairs if p and not p.startswith(prefix)]
            if not pairs:
                continue
            line = line.split(b":", 1)[0] + b": " + b"; ".join(pairs)
        kept.append(line)
    head.lines = kept


class ForwardAuthGate:
    log = Logger()

    def __init__(self, url: str, agent, clock, copy_headers: Sequence[str] = (), cache_seconds: float = 0.0):
        self._url = url.encode("utf-8")
        self._agent = agent
        self._clock = clock
        self._copy = [h.strip().lower().encode("ascii") for h in copy_headers if h.strip()]
        self._cache_seconds = cache_seconds
        self._cache: dict = {}

    def check(self, head, name: str):
        key = (name, head.cookie, _first(head, b"authorization"))
        now = self._clock.seconds()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return self._apply(head, cached[1])
        headers = Headers()
        for line in head.lines:
            field, _, value = line.partition(b":")
            if field.lower() not in HOP_BY_HOP and field.lower() != b"content-length":
                headers.addRawHeader(field, value.strip())
        headers.setRawHeaders(b"x-forwarded-method", [head.method])
        headers.setRawHeaders(b"x-forwarded-uri", [head.target])
        if head.host is not None:
            headers.setRawHeaders(b"x-forwarded-host", [head.host])
        d = self._agent.request(b"GET", self._url, headers)
        d.addTimeout(10, self._clock)
        d.addCallback(self._answered, key)
        d.addErrback(self._failed)
        d.addCallback(lambda verdict: self._apply(head, verdict))
        return d

    def _answered(self, response, key) -> Deferred:
        def verdict(body: bytes):
            if 200 <= response.code < 300:
                copied = [(name, value) for name, values in response.headers.getAllRawHeaders()
                          if name.lower() in self._copy for value in values]
                result = ("allow", copied)
            else:
                headers = tuple((name, value) for name, values in response.headers.getAllRawHeaders()
                                for value in values
                                if name.lower() not in HOP_BY_HOP and name.lower() != b"content-length")
                result = ("deny", answers.Answer(response.code, headers, body))
            if self._cache_seconds > 0:
                if len(self._cache) > 10000:
                    self._cache.clear()
                self._cache[key] = (self._clock.seconds() + self._cache_seconds, result)
            return result

        return read_body(response).addCallback(verdict)

    def _failed(self, failure):
        self.log.warn("forward-auth failed: {why}", why=failure.getErrorMessage())
        return ("deny", answers.problem(503, "the access check is not answering; try again shortly",
                                        retry_after=5))

    def _apply(self, head, verdict) -> Optional["answers.Answer"]:
        kind, value = verdict
        if kind == "deny":
            return value
        if value:
            names = {name.lower() for name, _ in value}
            head.lines = [line for line in head.lines if line.split(b":", 1)[0].lower() not in names] + \
                [name + b": " + v for name, v in value]
        return None


def _first(head, name: bytes) -> Optional[bytes]:
    prefix = name + b":"
    for line in head.lines:
        if line[:len(prefix)].lower() == prefix:
            return line[len(prefix):].strip()
    return None
