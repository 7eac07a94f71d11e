"""
Free ports on 127.0.0.1 for the processes the benchmark and the tests start.

Two plain "bind port 0" picks in a row can return the same port (the kernel hands a just-released port
out again), and a port inside the kernel's ephemeral range can be taken meanwhile by any client socket
— or, probed while closed, connect a probe socket to itself (TCP simultaneous open on loopback), so a
tight probe loop reports a stopped app as listening. L{free_port} therefore picks outside that range,
never the same port twice in one process.
"""

from __future__ import annotations

import random
import socket

__all__ = ["free_port"]

_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port nobody on 127.0.0.1 holds now, outside the ephemeral range, not handed out before."""
    low, high = _ephemeral_range()
    pool = range(20000, low) if low - 20000 >= 1000 else range(high + 1, 65000)
    for _ in range(500):
        port = random.choice(pool)
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port on 127.0.0.1 outside {}-{} after 500 tries".format(low, high))
