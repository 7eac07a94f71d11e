# -*- test-case-name: tests.test_auth -*-
"""
C{--trusted-proxy}: which peers' forwarding headers (X-Forwarded-For, X-Forwarded-Proto) are believed, and
the address a request really comes from through them. Both listeners use it: the proxy's relay (whose
X-Forwarded-* are extended, not replaced) and the deploy API (whose login rate limit counts per client).
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Sequence

__all__ = ["client_address", "is_trusted"]


def client_address(peer: str, forwarded_for: Iterable[str], trusted: Sequence) -> str:
    """
    The address a request comes from: its peer's, unless the peer is in C{trusted} (C{--trusted-proxy}
    networks); then C{X-Forwarded-For} (its values in order) is read from the right, skipping trusted
    hops, and the first untrusted one is the client (an entry that is not an address ends the walk at the
    last trusted hop). A client outside C{trusted} cannot choose its address by sending the header.
    """
    address = peer
    if not is_trusted(peer, trusted):
        return address
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        try:
            ip = ipaddress.ip_address(hop)
        except ValueError:
            break
        address = str(ip)
        if not is_trusted(ip, trusted):
            break
    return address


def is_trusted(address, networks: Sequence) -> bool:
    """Is C{address} (text or an ipaddress object) in one of C{networks}?"""
    if not networks:
        return False
    try:
        ip = address if not isinstance(address, str) else ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip.version == net.version and ip in net for net in networks)
