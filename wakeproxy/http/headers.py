# -*- test-case-name: tests.test_headers -*-
"""
Header hygiene for a reverse proxy (RFC 9110 section 7.6.1), as whole heads built for the relay.

The parser (L{wire}) sorts each field of a head by its role as it reads it (hop-by-hop, framing, Via,
forwarding headers, fields kept as they are), using the tables here; L{request_head} and
L{response_head} then only assemble: kept fields in their order, name case and duplicates, minus those the
Connection header nominates, plus what a proxy adds (X-Forwarded-*, Via, framing). Pure functions.
"""

from __future__ import annotations

import re
from typing import Sequence

from wakeproxy.answers import reason_phrase

__all__ = [
    "FORWARDING",
    "HOP_BY_HOP",
    "NOTED",
    "ORIGIN_FORM",
    "VIA",
    "field_block",
    "field_lines",
    "is_origin_form",
    "request_head",
    "response_head",
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

VIA = b"wakeproxy"

#: headers a client outside --trusted-proxy may not set: wakeproxy writes its own
FORWARDING = frozenset({b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto", b"x-forwarded-port",
                        b"forwarded", b"x-real-ip"})

#: request headers whose first value the proxy reads (noted while parsing, so nothing scans twice)
NOTED = frozenset({b"accept", b"user-agent", b"x-wakeproxy-status", b"referer"})


def request_head(head, uri: bytes, client_ip: bytes, proto: bytes, trusted: bool, upstream=None,
                 via: bytes = VIA) -> bytes:
    """
    The head to send upstream for a parsed request (L{wire.RequestHead}, whose fields the parser already
    sorted): target C{uri}; the client's address and scheme (bytes, ASCII); the fields kept as they are, minus those the client's Connection header
    nominates; C{X-Forwarded-For/-Proto/-Host} and C{Via}; the body's framing (Content-Length stays,
    C{Transfer-Encoding: chunked} is restated); for an upgrade, C{Connection: upgrade} and C{Upgrade}.

    From a peer outside C{--trusted-proxy} (C{trusted} false), client-sent forwarding headers
    (L{FORWARDING}) are dropped and rebuilt. From a trusted peer X-Forwarded-For is extended, its
    X-Forwarded-Proto/-Host are kept (a TLS-terminating proxy in front) and the others pass. An HTTP/1.0
    request without Host gets the C{upstream}'s.
    """
    fields = head.fields
    if head.nominated:
        fields = _without(fields, head.nominated)
    parts = [head.method, b" ", uri, b" HTTP/1.1", fields]
    host = head.host
    if host is None and upstream is not None:
        parts.append(b"\r\nHost: %s:%d" % (upstream.host.encode("idna"), upstream.port))
    chain = client_ip
    proto_b = proto
    forwarded_host = host.strip(_WHITESPACE) if host is not None else None
    if trusted and head.forwarding:
        earlier = []
        for lower, value in head.forwarding:
            value = value.strip(_WHITESPACE)
            if lower == b"x-forwarded-for":
                if value:
                    earlier.append(value)
            elif lower == b"x-forwarded-proto":
                proto_b = value or proto_b
            elif lower == b"x-forwarded-host":
                forwarded_host = value or forwarded_host
            else:
                parts.append(b"\r\n" + _FORWARDING_NAMES[lower] + b": " + value)
        if earlier:
            chain = b", ".join(earlier) + b", " + chain
    parts += (b"\r\nX-Forwarded-For: ", chain, b"\r\nX-Forwarded-Proto: ", proto_b)
    if forwarded_host:
        parts += (b"\r\nX-Forwarded-Host: ", forwarded_host)
    parts.append(b"\r\n" + _via(head.vias, via) if head.vias or via != VIA else _VIA_LINE)
    if head.length < 0:
        parts.append(b"\r\nTransfer-Encoding: chunked")
    if head.upgrade is not None:
        parts.append(b"\r\nConnection: upgrade\r\nUpgrade: " + head.upgrade)
    parts.append(b"\r\n\r\n")
    return b"".join(parts)


def response_head(head, extra, framing: bytes, close: bool, upgrade: bytes = None, via: bytes = VIA) -> bytes:
    """
    The head to send the client for an upstream response (L{wire.ResponseHead}): the fields the parser
    kept (hop-by-hop, Content-Length, Transfer-Encoding and Via are gone), minus those the upstream's
    Connection nominates; Via extended; C{extra} pairs; the C{framing} line(s) the relay chose; and
    C{Connection: close} or the upgrade.
    """
    fields = head.fields
    if head.nominated:
        fields = _without(fields, head.nominated)
    status_line = head.status_line
    if status_line[:9] != b"HTTP/1.1 " or not head.reason:  # an HTTP/1.0 upstream's, or without a reason
        status_line = b"HTTP/1.1 %d %s" % (head.status, head.reason or reason_phrase(head.status))
    parts = [status_line, fields, b"\r\n" + _via(head.vias, via) if head.vias or via != VIA else _VIA_LINE]
    for name, value in extra:
        parts += (b"\r\n", name, b": ", value)
    if upgrade is not None:
        parts += (b"\r\nConnection: Upgrade\r\nUpgrade: ", upgrade)
    elif close:
        parts.append(b"\r\nConnection: close")
    parts += (b"\r\n", framing, b"\r\n")
    return b"".join(parts)


def _without(fields: bytes, nominated) -> bytes:
    """C{fields} (a field block) minus the lines of the names a Connection header nominated."""
    drop = nominated - _NOT_NOMINABLE
    return field_block(line for line in field_lines(fields) if line.split(b":", 1)[0].lower() not in drop)


def field_lines(fields: bytes) -> list:
    """A field block (each line preceded by CRLF, as the parsed heads keep them) as its lines."""
    return fields.split(b"\r\n")[1:]


def field_block(lines) -> bytes:
    """Field lines as a field block: each preceded by CRLF."""
    return b"".join(b"\r\n" + line for line in lines)


def _via(earlier, via: bytes) -> bytes:
    if not earlier:
        return b"Via: 1.1 " + via
    chain = [v.strip(_WHITESPACE) for v in earlier if v.strip(_WHITESPACE)]
    chain.append(b"1.1 " + via)
    return b"Via: " + b", ".join(chain)


_VIA_LINE = b"\r\nVia: 1.1 " + VIA

_FORWARDING_NAMES = {b"x-forwarded-port": b"X-Forwarded-Port", b"forwarded": b"Forwarded", b"x-real-ip": b"X-Real-IP"}


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
    return ORIGIN_FORM.fullmatch(uri) is not None


ORIGIN_FORM = re.compile(rb"/[^\x00-\x20\x7f#]*")
