# -*- test-case-name: tests.test_labels -*-
"""
What wakeproxy reads from a managed container's labels: where its app listens, how to probe it and
which Traefik router serves it. Pure functions of a L{Container} snapshot.
"""

from __future__ import annotations

from typing import Optional

from .durations import parse_duration
from .runtime import Container

__all__ = ["PORT", "NETWORK", "HEALTH_CHECK", "SEED_HEALTH_CHECK", "ROUTER", "IDLE_TIMEOUT", "STOP_METHOD",
           "GROUP", "DEPENDS_ON", "LOADING_PAGE", "IDLE_TUNNEL", "depends_on", "direct_address", "group", "health_check_url",
           "idle_timeout", "idle_tunnel", "loading_page", "router_name", "stop_method"]

PORT = "wakeproxy.port"
NETWORK = "wakeproxy.network"
HEALTH_CHECK = "wakeproxy.health-check"
SEED_HEALTH_CHECK = "health-check"  # the old spawner's label, still honoured
ROUTER = "wakeproxy.router"
IDLE_TIMEOUT = "wakeproxy.idle-timeout"
STOP_METHOD = "wakeproxy.stop-method"
GROUP = "wakeproxy.group"
DEPENDS_ON = "wakeproxy.depends-on"
LOADING_PAGE = "wakeproxy.loading-page"
IDLE_TUNNEL = "wakeproxy.idle-tunnel"


class AddressError(ValueError):
    """The container's labels do not say where its app listens; the message says what is missing."""


def direct_address(container: Container) -> tuple[str, int]:
    """
    C{(host, port)} of the app: C{127.0.0.1:<wakeproxy.port>} with host networking, else the container's
    IP on the network named by C{wakeproxy.network} (or on its only network).
    """
    raw = container.labels.get(PORT)
    if raw is None:
        raise AddressError("instance {} has no {} label saying where its app listens".format(container.name, PORT))
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise AddressError("instance {} has an invalid {} label: {!r}".format(container.name, PORT, raw))
    if container.network_mode == "host":
        return "127.0.0.1", port
    wanted = container.labels.get(NETWORK)
    if wanted is not None:
        ip = container.networks.get(wanted)
        if not ip:
            raise AddressError("instance {} is not on network {!r} ({} label)".format(container.name, wanted, NETWORK))
        return ip, port
    addresses = [ip for ip in container.networks.values() if ip]
    if len(addresses) != 1:
        raise AddressError("instance {} is on {} networks: say which one with the {} label".format(
            container.name, len(addresses), NETWORK))
    return addresses[0], port


def health_check_url(container: Container, address: Optional[tuple[str, int]]) -> Optional[str]:
    """
    The URL to probe, from C{wakeproxy.health-check} (or the seed's C{health-check}): a full URL is used
    as it is, a path is joined to the app's address. None when neither label is set.
    """
    value = container.labels.get(HEALTH_CHECK) or container.labels.get(SEED_HEALTH_CHECK)
    if not value:
        return None
    if value.startswith(("http://", "https://")):
        return value
    if address is None or not value.startswith("/"):
        return None
    return "http://{}:{}{}".format(address[0], address[1], value)


def router_name(container: Container) -> str:
    """Traefik router serving the instance: label C{wakeproxy.router}, else the instance's name."""
    return container.labels.get(ROUTER) or container.name


def idle_timeout(container: Container, default: Optional[float]) -> Optional[float]:
    """
    Seconds of inactivity before the instance is stopped, None for never: label C{wakeproxy.idle-timeout}
    (C{90s}, C{15m}; C{0} or C{never} disable it), else C{default}. An unreadable label means never
    (stopping a container by mistake is worse than keeping it).
    """
    raw = container.labels.get(IDLE_TIMEOUT)
    if raw is None:
        return default
    if raw.strip().lower() in ("never", "off", "0", ""):
        return None
    try:
        return parse_duration(raw) or None
    except ValueError:
        return None


def stop_method(container: Container) -> str:
    """C{stop} (default) or C{pause}, from label C{wakeproxy.stop-method}."""
    return "pause" if container.labels.get(STOP_METHOD, "").strip().lower() == "pause" else "stop"


def group(container: Container) -> Optional[str]:
    return container.labels.get(GROUP) or None


def depends_on(container: Container) -> list[str]:
    """Instances to start (and wait for) before this one, from C{wakeproxy.depends-on=a,b}."""
    raw = container.labels.get(DEPENDS_ON, "")
    return [name.strip() for name in raw.split(",") if name.strip()]


def loading_page(container: Container, default: bool) -> bool:
    raw = container.labels.get(LOADING_PAGE)
    if raw is None:
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def idle_tunnel(container: Container, default: str) -> str:
    """What keeps an instance awake through an upgraded tunnel: C{data} frames (default) or the C{open} tunnel."""
    raw = (container.labels.get(IDLE_TUNNEL) or "").strip().lower()
    return raw if raw in ("data", "open") else default
