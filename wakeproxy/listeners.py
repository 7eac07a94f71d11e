# -*- test-case-name: tests.test_listeners -*-
"""
Listening endpoints from C{--listen}/C{--api-listen} strings, with a listen backlog fit for bursts.

Twisted's C{tcp:}, C{ssl:} and C{unix:} server endpoints call C{listen(50)} unless the string says
C{backlog=N}. Fifty is far too few for a proxy that holds requests while an instance wakes: a burst of
thousands of new connections overflows the accept queue and clients get connection resets (measured in
issue 12: 386 of 10,000 concurrent requests). When the string gives no backlog, L{DEFAULT_BACKLOG} is
added; the kernel caps it at C{net.core.somaxconn} (4096 by default since Linux 5.4, 128 before).
"""

import re

from twisted.internet.endpoints import serverFromString

__all__ = ["DEFAULT_BACKLOG", "listening_endpoint", "with_backlog"]

DEFAULT_BACKLOG = 4096

#: the endpoint types whose parsers take C{backlog=}; others (systemd:, plugins) are left as given
_TAKES_BACKLOG = ("tcp", "tcp6", "ssl", "unix")
_UNESCAPED_COLON = re.compile(r"(?<!\\):")


def with_backlog(description: str, backlog: int = DEFAULT_BACKLOG) -> str:
    """C{description} with C{:backlog=N} appended when it is a tcp/tcp6/ssl/unix endpoint without one."""
    parts = _UNESCAPED_COLON.split(description)
    if parts[0].lower() not in _TAKES_BACKLOG or any(p.startswith("backlog=") for p in parts[1:]):
        return description
    return "{}:backlog={:d}".format(description, backlog)


def listening_endpoint(reactor, description: str):
    """C{serverFromString(reactor, description)} with L{with_backlog}'s default backlog."""
    return serverFromString(reactor, with_backlog(description))
