# -*- test-case-name: tests.test_listeners -*-
"""
Listening endpoints from C{--listen}/C{--api-listen} strings, with a listen backlog fit for bursts, and the
TCP ports such strings name (L{listening_ports}: wakeproxy's own ports, which tenants may not claim).

Twisted's C{tcp:}, C{ssl:} and C{unix:} server endpoints call C{listen(50)} unless the string says
C{backlog=N}. Fifty is far too few for a proxy that holds requests while an instance wakes: a burst of
thousands of new connections overflows the accept queue and clients get connection resets (measured in
issue 12: 386 of 10,000 concurrent requests). When the string gives no backlog, L{DEFAULT_BACKLOG} is
added; the kernel caps it at C{net.core.somaxconn} (4096 by default since Linux 5.4, 128 before).
"""

from typing import Iterable

from twisted.internet.endpoints import serverFromString

__all__ = ["DEFAULT_BACKLOG", "listening_endpoint", "listening_ports", "with_backlog"]

DEFAULT_BACKLOG = 4096

#: the endpoint types whose parsers take C{backlog=}; others (systemd:, plugins) are left as given
_TAKES_BACKLOG = ("tcp", "tcp6", "ssl", "unix")
#: the endpoint types that listen on a TCP port
_PORT_KINDS = ("tcp", "tcp6", "ssl")


def with_backlog(description: str, backlog: int = DEFAULT_BACKLOG) -> str:
    """C{description} with C{:backlog=N} appended when it is a tcp/tcp6/ssl/unix endpoint without one."""
    parts = _endpoint_parts(description)
    if parts[0].lower() not in _TAKES_BACKLOG or any(p.startswith("backlog=") for p in parts[1:]):
        return description
    return "{}:backlog={:d}".format(description, backlog)


def listening_endpoint(reactor, description: str):
    """C{serverFromString(reactor, description)} with L{with_backlog}'s default backlog."""
    return serverFromString(reactor, with_backlog(description))


def listening_ports(descriptions: Iterable[str]) -> frozenset:
    """
    The TCP ports of Twisted server endpoint strings (C{tcp:8000}, C{tcp:port=8008:interface=127.0.0.1},
    C{ssl:443:privateKey=...}, C{tcp6:8000}); others (C{unix:}, port 0) have none.
    """
    ports = set()
    for description in descriptions:
        parts = _endpoint_parts(description or "")
        if not parts or parts[0].lower() not in _PORT_KINDS:
            continue
        positional = [p for p in parts[1:] if "=" not in p]
        keywords = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        raw = keywords.get("port", positional[0] if positional else "")
        if raw.isascii() and raw.isdigit() and 0 < int(raw) < 65536:
            ports.add(int(raw))
    return frozenset(ports)


def _endpoint_parts(description: str) -> list[str]:
    """Split an endpoint string at its colons, as Twisted does (a backslash escapes the next character)."""
    parts, current, escaped = [], [], False
    for char in description:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts
