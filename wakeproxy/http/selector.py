# -*- test-case-name: tests.test_selector -*-
"""
Decide which instance (Docker container) a request names.

A selector is built from a spec string by L{parse_selector} and is a pure
function from a L{Head} (the parts of a request it may look at) to a
L{Selection}.  Four kinds exist:

  - C{cookie:NAME}: the exact value of the cookie C{NAME}.
  - C{path:PREFIX}: the path segment after C{/PREFIX/}; that prefix and the
    name are stripped from the forwarded target unless C{keep_path} is set.
  - C{host:PATTERN}: the C{{name}} label of the Host header, e.g.
    C{host:{name}.apps.example.com}.
  - C{header:NAME}: the first value of the request header C{NAME}.

Whatever the kind, the result must be a valid Docker container name (see
L{valid_instance_name}), otherwise the selection names no instance and
carries a human-readable reason instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence
from urllib.parse import unquote

__all__ = [
    "DEFAULT_SELECTOR",
    "Head",
    "Selection",
    "cookie_value",
    "parse_cookies",
    "parse_selector",
    "valid_instance_name",
]

DEFAULT_SELECTOR = "cookie:instance"

_MAX_NAME_LENGTH = 128
_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
# RFC 9110 token: used for cookie names and header names in specs.
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# What a path prefix may contain (between and around its slashes).
_PREFIX_RE = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")
# What a host pattern may contain once its {name} placeholder is removed.
_HOST_PATTERN_RE = re.compile(r"[a-z0-9_.-]*")
_PORT_RE = re.compile(r"[0-9]*")
_PLACEHOLDER = "{name}"
_QUOTE_LIMIT = 64
_USAGE = "use cookie:NAME, path:PREFIX, host:PATTERN or header:NAME"


@dataclass(frozen=True)
class Head:
    """
    What a selector may look at, built by the proxy from a request.

    @ivar method: the request method.
    @ivar uri: the origin-form request target, path and optional C{?query}.
    @ivar headers: lower-cased header names mapped to their raw values, in
        the order they were received.
    """

    method: bytes
    uri: bytes
    headers: Mapping[bytes, Sequence[bytes]]


@dataclass(frozen=True)
class Selection:
    """
    The outcome of a selector.

    @ivar name: the instance, or L{None} when it is unknown or missing.
    @ivar uri: the request target to forward upstream.
    @ivar reason: when C{name} is L{None}, one sentence suitable for the
        detail of a problem+json response; C{""} otherwise.
    """

    name: Optional[str]
    uri: bytes
    reason: str


def valid_instance_name(name: str) -> bool:
    """
    Is C{name} acceptable as a Docker container name?

    Docker's rule is C{^[a-zA-Z0-9][a-zA-Z0-9_.-]*$}; we also cap the length
    at 128 characters.
    """
    return (
        0 < len(name) <= _MAX_NAME_LENGTH
        and _NAME_RE.fullmatch(name) is not None
    )


def parse_cookies(values: Sequence[bytes]) -> list[tuple[str, str]]:
    """
    Parse every Cookie header value (RFC 6265 C{cookie-string}).

    Pairs are separated by C{;}, whitespace around names and values is
    ignored, pairs without C{=} or with an empty name are skipped, and one
    pair of double quotes around a value is removed.  Values are not
    percent-decoded.  Header values that are not UTF-8 are decoded as
    latin-1.

    @return: C{(name, value)} pairs in the order they appear.
    """
    pairs = []
    for value in values:
        for part in _decode(value).split(";"):
            name, sep, raw = part.partition("=")
            name = name.strip()
            if sep and name:
                pairs.append((name, _unquote_cookie(raw.strip())))
    return pairs


def cookie_value(values: Sequence[bytes], name: str) -> Optional[str]:
    """
    The value of the first cookie called exactly C{name} (case-sensitive).

    @param values: all Cookie header values of a request.
    @return: the value, or L{None} when there is no such cookie.
    """
    for cookie_name, value in parse_cookies(values):
        if cookie_name == name:
            return value
    return None


def parse_selector(
    spec: str, keep_path: bool = False
) -> Callable[[Head], Selection]:
    """
    Build the selector described by C{spec}.

    @param spec: C{cookie:NAME}, C{path:PREFIX}, C{host:PATTERN} or
        C{header:NAME}.
    @param keep_path: for C{path:} selectors, forward the request target
        unchanged instead of stripping C{/PREFIX/<name>}.
    @raise ValueError: if C{spec} is not a valid selector spec.
    """
    kind, sep, arg = spec.partition(":")
    if not sep:
        raise ValueError(
            "selector spec {!r} has no ':': {}".format(spec, _USAGE)
        )
    builders = {
        "cookie": _cookie_selector,
        "path": lambda prefix: _path_selector(prefix, keep_path),
        "host": _host_selector,
        "header": _header_selector,
    }
    if kind not in builders:
        raise ValueError(
            "unknown selector kind {!r}: {}".format(kind, _USAGE)
        )
    return builders[kind](arg)


# Selector kinds -----------------------------------------------------------


@dataclass(frozen=True)
class _CookieSelector:
    cookie: str
    #: the only request header a selection depends on (the proxy caches selections by its values)
    reads = b"cookie"

    def __call__(self, head: Head) -> Selection:
        value = cookie_value(head.headers.get(b"cookie", ()), self.cookie)
        if value is None:
            return _missing(
                head.uri,
                "no cookie named {!r} in the request".format(self.cookie),
            )
        return _validated(
            value, head.uri, "the cookie {!r}".format(self.cookie)
        )


@dataclass(frozen=True)
class _PathSelector:
    prefix: bytes  # b"/" or b"/PREFIX/"
    keep_path: bool

    def __call__(self, head: Head) -> Selection:
        path, sep, query = head.uri.partition(b"?")
        if not path.startswith(self.prefix):
            return _missing(head.uri, self._outside(path))
        segment, _, rest = path[len(self.prefix):].partition(b"/")
        if not segment:
            return _missing(head.uri, self._nameless(path))
        name = unquote(_decode(segment))
        if not valid_instance_name(name):
            source = "the path segment after {!r}".format(
                _decode(self.prefix))
            return _invalid(name, head.uri, source)
        if self.keep_path:
            return Selection(name=name, uri=head.uri, reason="")
        return Selection(name=name, uri=b"/" + rest + sep + query, reason="")

    def _outside(self, path: bytes) -> str:
        if self.prefix != b"/" and path == self.prefix[:-1]:
            return self._nameless(path)
        return "the path {} is not under {!r}".format(
            _quote(_decode(path)), _decode(self.prefix))

    def _nameless(self, path: bytes) -> str:
        return "the path {} names no instance after {!r}".format(
            _quote(_decode(path)), _decode(self.prefix))


@dataclass(frozen=True)
class _HostSelector:
    pattern: str
    regex: re.Pattern
    reads = b"host"

    def __call__(self, head: Head) -> Selection:
        values = head.headers.get(b"host", ())
        if not values:
            return _missing(head.uri, "the request has no Host header")
        if len(values) > 1:
            return _missing(
                head.uri, "the request has more than one Host header"
            )
        host = _host_name(_decode(values[0]))
        match = self.regex.fullmatch(host)
        if match is None:
            return _missing(
                head.uri,
                "the host {} does not match {!r}".format(
                    _quote(host), self.pattern),
            )
        return _validated(match.group(1), head.uri, "the host name")


@dataclass(frozen=True)
class _HeaderSelector:
    header: str

    def __call__(self, head: Head) -> Selection:
        key = self.header.lower().encode("ascii")
        values = head.headers.get(key, ())
        if not values:
            return _missing(
                head.uri,
                "no {} header in the request".format(self.header),
            )
        name = _decode(values[0]).strip()
        return _validated(
            name, head.uri, "the {} header".format(self.header)
        )


def _cookie_selector(cookie: str) -> _CookieSelector:
    if not _TOKEN_RE.fullmatch(cookie):
        raise ValueError(
            "cookie selector needs a cookie name, e.g. cookie:instance; "
            "got {!r}".format(cookie)
        )
    return _CookieSelector(cookie)


def _path_selector(prefix: str, keep_path: bool) -> _PathSelector:
    segments = prefix.strip("/")
    if not _PREFIX_RE.fullmatch(segments) or "//" in segments:
        raise ValueError(
            "path selector prefix must be plain path segments, e.g. path:u; "
            "got {!r}".format(prefix)
        )
    if segments:
        segments = "/" + segments + "/"
    else:
        segments = "/"
    return _PathSelector(segments.encode("ascii"), keep_path)


def _host_selector(pattern: str) -> _HostSelector:
    if pattern.count(_PLACEHOLDER) != 1:
        raise ValueError(
            "host selector pattern must contain {{name}} exactly once, e.g. "
            "host:{{name}}.apps.example.com; got {!r}".format(pattern)
        )
    normal = pattern.lower().rstrip(".")
    before, _, after = normal.partition(_PLACEHOLDER)
    if not _HOST_PATTERN_RE.fullmatch(before + after):
        raise ValueError(
            "host selector pattern may only hold letters, digits, '-', '_', "
            "'.' and one {{name}} (no port); got {!r}".format(pattern)
        )
    regex = re.compile(re.escape(before) + r"([^.]+)" + re.escape(after))
    return _HostSelector(pattern, regex)


def _header_selector(header: str) -> _HeaderSelector:
    if not _TOKEN_RE.fullmatch(header):
        raise ValueError(
            "header selector needs a header name, e.g. header:X-Instance; "
            "got {!r}".format(header)
        )
    return _HeaderSelector(header)


# Helpers ------------------------------------------------------------------


def _validated(name: str, uri: bytes, source: str) -> Selection:
    """
    Select C{name} if it is a valid instance name, else explain that
    C{source} holds an invalid one.
    """
    if valid_instance_name(name):
        return Selection(name=name, uri=uri, reason="")
    return _invalid(name, uri, source)


def _invalid(name: str, uri: bytes, source: str) -> Selection:
    """
    Explain that C{source} holds C{name}, an invalid instance name.
    """
    return _missing(
        uri,
        "{} holds an invalid instance name: {}".format(source, _quote(name)),
    )


def _missing(uri: bytes, reason: str) -> Selection:
    return Selection(name=None, uri=uri, reason=reason)


def _quote(text: str) -> str:
    """
    Quote untrusted C{text} for a human-readable reason: repr-escaped and
    truncated to 64 characters.
    """
    if len(text) > _QUOTE_LIMIT:
        return repr(text[:_QUOTE_LIMIT]) + "..."
    return repr(text)


def _decode(raw: bytes) -> str:
    """
    Decode header or path bytes as UTF-8, falling back to latin-1.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _unquote_cookie(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _host_name(host: str) -> str:
    """
    Normalise a Host header value: lower-case, without port and trailing
    dot.  IPv6 literals keep their brackets.
    """
    host = host.strip().lower()
    if host.startswith("["):
        literal, bracket, _ = host.partition("]")
        return literal + bracket
    name, colon, port = host.rpartition(":")
    if colon and _PORT_RE.fullmatch(port):
        host = name
    if host.endswith("."):
        host = host[:-1]
    return host
