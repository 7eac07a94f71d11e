# -*- test-case-name: tests.test_headers -*-
"""
Header hygiene for a reverse proxy (RFC 9110 section 7.6.1).

Headers are handled as sequences of C{(name, value)} byte pairs so that
order, name case and duplicates survive.  Every function is pure: it
returns a new list and never mutates its input.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

from .wire import reason_phrase

__all__ = [
    "FORWARDING",
    "HOP_BY_HOP",
    "is_origin_form",
    "request_head",
    "request_headers",
    "response_head",
    "response_headers",
    "strip_hop_by_hop",
]

Headers = Sequence[tuple[bytes, bytes]]

HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Headers a Connection header may not nominate for removal: dropping them
# would change which host the request is for or how its body is framed
# (a request-smuggling vector when the body is streamed on).
_NOT_NOMINABLE = frozenset({b"host", b"content-length"})

_WHITESPACE = b" \t"


def strip_hop_by_hop(headers: Headers) -> list[tuple[bytes, bytes]]:
    """
    Remove hop-by-hop headers.

    These are the headers in L{HOP_BY_HOP} and every header named in a
    Connection header (comma-separated, case-insensitive, whitespace
    tolerated; all Connection headers count).  As a safety measure, C{Host}
    and C{Content-Length} are never removed because of a Connection
    nomination.  The other headers keep their order, name case and
    duplicates.
    """
    drop = HOP_BY_HOP | (_connection_tokens(headers) - _NOT_NOMINABLE)
    return [(name, value) for name, value in headers
            if name.lower() not in drop]


def request_headers(
    headers: Headers, client_ip: str, proto: str, via: bytes
) -> list[tuple[bytes, bytes]]:
    """
    The headers to send upstream for a client request.

    Hop-by-hop headers are stripped, then:
      - C{X-Forwarded-For} becomes one header: the existing chain (all
        values, comma-joined) followed by C{client_ip};
      - C{X-Forwarded-Proto} is replaced by C{proto};
      - C{X-Forwarded-Host} is replaced by the (first) Host value, or
        removed if there is no Host header;
      - C{Via} becomes one header with C{1.1 <via>} appended.
    Host and Content-Length are kept as they are.  The rewritten headers
    are appended after the others, in the order above.

    @param client_ip: the address of the connected client.
    @param proto: C{"http"} or C{"https"}, the scheme the client used.
    @param via: the pseudonym of this proxy for the Via header.
    """
    kept = strip_hop_by_hop(headers)
    host = _values(kept, b"host")
    forwarded_for = _values(kept, b"x-forwarded-for")
    forwarded_for.append(client_ip.encode("ascii"))
    result = _without(
        kept,
        {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
         b"via"},
    )
    result.append((b"X-Forwarded-For", b", ".join(forwarded_for)))
    result.append((b"X-Forwarded-Proto", proto.encode("ascii")))
    if host:
        result.append((b"X-Forwarded-Host", host[0]))
    result.append(_via(kept, via))
    return result


def response_headers(
    headers: Headers, via: bytes
) -> list[tuple[bytes, bytes]]:
    """
    The headers to send to the client for an upstream response.

    Hop-by-hop headers and Content-Length are removed (the caller restores
    the length from the response it sends) and C{1.1 <via>} is appended to
    the Via header, which becomes a single header at the end.  Duplicates
    such as several Set-Cookie headers are preserved.
    """
    kept = strip_hop_by_hop(headers)
    result = _without(kept, {b"content-length", b"via"})
    result.append(_via(kept, via))
    return result


def is_origin_form(uri: bytes) -> bool:
    """
    Is C{uri} an origin-form request target (RFC 9112 section 3.2.1)?

    It must start with C{/}, which rules out absolute-form
    (C{http://host/}), authority-form (C{host:443}) and asterisk-form
    (C{*}).  A path starting with C{//} is still origin-form and accepted.
    Raw control bytes, space, DEL and C{#} (a fragment is never part of a
    request target) are rejected; other bytes, including bytes >= 0x80,
    are accepted liberally.
    """
    return _ORIGIN_FORM.fullmatch(uri) is not None


_ORIGIN_FORM = re.compile(rb"/[^\x00-\x20\x7f#]*")


# Helpers ------------------------------------------------------------------


def _connection_tokens(headers: Headers) -> frozenset[bytes]:
    """
    The lower-cased header names listed in all Connection headers.
    """
    tokens = set()
    for value in _values(headers, b"connection"):
        for token in value.split(b","):
            token = token.strip(_WHITESPACE).lower()
            if token:
                tokens.add(token)
    return frozenset(tokens)


def _values(headers: Headers, name: bytes) -> list[bytes]:
    """
    The non-empty, whitespace-stripped values of the headers called C{name}
    (lower-case), in order.
    """
    values = []
    for key, value in headers:
        if key.lower() == name:
            value = value.strip(_WHITESPACE)
            if value:
                values.append(value)
    return values


def _without(
    headers: Headers, names: Iterable[bytes]
) -> list[tuple[bytes, bytes]]:
    """
    C{headers} without those whose lower-cased name is in C{names}.
    """
    drop = frozenset(names)
    return [(key, value) for key, value in headers
            if key.lower() not in drop]


def _via(headers: Headers, via: bytes) -> tuple[bytes, bytes]:
    """
    The single Via header: existing Via values plus C{1.1 <via>}.
    """
    chain = _values(headers, b"via")
    chain.append(b"1.1 " + via)
    return (b"Via", b", ".join(chain))


# Whole heads, for the relay ---------------------------------------------------

VIA = b"wakeproxy"

#: headers a client outside --trusted-proxy may not set: wakeproxy writes its own
FORWARDING = frozenset({b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto", b"x-forwarded-port",
                        b"forwarded", b"x-real-ip"})
_REQUEST_DROP = HOP_BY_HOP | {b"x-forwarded-proto", b"x-forwarded-host", b"via", b"x-forwarded-for"}
_UNTRUSTED_DROP = _REQUEST_DROP | FORWARDING
_RESPONSE_DROP = HOP_BY_HOP | {b"content-length", b"via"}
_HARMLESS_TOKENS = frozenset({b"keep-alive", b"close", b"upgrade", b""})


def request_head(head, uri: bytes, client_ip: str, proto: str, trusted: bool, upstream=None,
                 via: bytes = VIA) -> bytes:
    """
    The head to send upstream for a parsed request (L{wire.RequestHead}), with target C{uri}: the same
    hygiene as L{request_headers} in one pass, then the framing the body keeps (Content-Length stays,
    C{Transfer-Encoding: chunked} is restated) and, for an upgrade, C{Connection: upgrade} and C{Upgrade}.
    From a peer outside C{--trusted-proxy} (C{trusted} false), client-sent forwarding headers
    (L{FORWARDING}) are dropped and rebuilt; a trusted peer's X-Forwarded-For is extended and its
    X-Forwarded-Proto/-Host kept (a TLS-terminating proxy in front). An HTTP/1.0 request without Host
    gets the C{upstream}'s.
    """
    drop = _REQUEST_DROP if trusted else _UNTRUSTED_DROP
    lines = [b"%s %s HTTP/1.1" % (head.method, uri)]
    chain = []
    vias = []
    tokens = None
    proto_b = proto.encode("ascii")
    forwarded_host = head.host.strip(_WHITESPACE) if head.host is not None else None
    for name, value in head.headers:
        lower = name.lower()
        if lower in drop:
            if lower == b"x-forwarded-for":
                if trusted:
                    value = value.strip(_WHITESPACE)
                    if value:
                        chain.append(value)
            elif lower == b"x-forwarded-proto":
                if trusted and value.strip(_WHITESPACE):
                    proto_b = value.strip(_WHITESPACE)
            elif lower == b"x-forwarded-host":
                if trusted and value.strip(_WHITESPACE):
                    forwarded_host = value.strip(_WHITESPACE)
            elif lower == b"via":
                value = value.strip(_WHITESPACE)
                if value:
                    vias.append(value)
            elif lower == b"connection":
                for token in value.lower().split(b","):
                    token = token.strip(_WHITESPACE)
                    if token not in _HARMLESS_TOKENS:
                        tokens = (tokens or set()) | {token}
            continue
        lines.append(name + b": " + value)
    if tokens:
        tokens -= _NOT_NOMINABLE
        lines = [line for line in lines if line.split(b":", 1)[0].lower() not in tokens]
    if head.host is None and upstream is not None:
        lines.append(b"Host: %s:%d" % (upstream.host.encode("idna"), upstream.port))
    chain.append(client_ip.encode("ascii"))
    lines.append(b"X-Forwarded-For: " + b", ".join(chain))
    lines.append(b"X-Forwarded-Proto: " + proto_b)
    if forwarded_host:
        lines.append(b"X-Forwarded-Host: " + forwarded_host)
    vias.append(b"1.1 " + via)
    lines.append(b"Via: " + b", ".join(vias))
    if head.length < 0:
        lines.append(b"Transfer-Encoding: chunked")
    if head.upgrade is not None:
        lines.append(b"Connection: upgrade")
        lines.append(b"Upgrade: " + head.upgrade)
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


def response_head(head, extra, framing: bytes, close: bool, upgrade: bytes = None, via: bytes = VIA) -> bytes:
    """
    The head to send the client for an upstream response (L{wire.ResponseHead}): hop-by-hop headers,
    those the upstream's Connection names, Content-Length and Via go (Via comes back extended), then
    C{extra} pairs, the C{framing} line(s) the relay chose, and C{Connection: close} or the upgrade.
    """
    lines = [b"HTTP/1.1 %d %s" % (head.status, head.reason or reason_phrase(head.status))]
    vias = []
    tokens = None
    for name, value in head.headers:
        lower = name.lower()
        if lower in _RESPONSE_DROP:
            if lower == b"via":
                value = value.strip(_WHITESPACE)
                if value:
                    vias.append(value)
            elif lower == b"connection":
                for token in value.lower().split(b","):
                    token = token.strip(_WHITESPACE)
                    if token not in _HARMLESS_TOKENS:
                        tokens = (tokens or set()) | {token}
            continue
        lines.append(name + b": " + value)
    if tokens:
        tokens -= _NOT_NOMINABLE
        lines = [line for line in lines if line.split(b":", 1)[0].lower() not in tokens]
    vias.append(b"1.1 " + via)
    lines.append(b"Via: " + b", ".join(vias))
    for name, value in extra:
        lines.append(name + b": " + value)
    if upgrade is not None:
        lines.append(b"Connection: Upgrade")
        lines.append(b"Upgrade: " + upgrade)
    elif close:
        lines.append(b"Connection: close")
    head_bytes = b"\r\n".join(lines) + b"\r\n"
    return head_bytes + framing + b"\r\n"
