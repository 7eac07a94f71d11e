# -*- test-case-name: tests.test_labels -*-
"""
What wakeproxy reads from a managed container's labels: where its app listens, how to probe it and
which Traefik router serves it. Pure functions of a L{Container} snapshot.

Instances created through the deploy API carry their owner in C{wakeproxy.owner} (L{OWNER}); their labels
were written by a tenant and are read with suspicion: their port must be an allowed one
(L{port_allowed}), their health check is a path on their own address (L{health_check_url}), and their
group and dependencies only ever reach instances of the same owner (L{group}, L{depends_on}). Containers
without that label were made by the operator, and are trusted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence
from urllib.parse import quote

from wakeproxy.durations import parse_duration
from wakeproxy.runtime.interface import Container

__all__ = ["PORT", "NETWORK", "HEALTH_CHECK", "SEED_HEALTH_CHECK", "ROUTER", "IDLE_TIMEOUT", "STOP_METHOD",
           "GROUP", "DEPENDS_ON", "LOADING_PAGE", "IDLE_TUNNEL", "OWNER", "DEFAULT_ALLOW_PORTS", "depends_on",
           "direct_address", "group", "health_check_ignored", "health_check_problem", "health_check_url",
           "idle_timeout", "idle_tunnel", "loading_page", "owner_of", "port_allowed", "port_problem", "Reach", "reach",
           "router_name",
           "same_owner", "stop_method", "instance_owns", "router_labels", "router_rule", "traefik_label_problem"]

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
OWNER = "wakeproxy.owner"
#: Ports a tenant's app may listen on unless --allow-port says otherwise: inclusive ranges.
DEFAULT_ALLOW_PORTS: tuple[tuple[int, int], ...] = ((1024, 65535),)

#: Looks an instance up by name (the runtime's C{get}).
Lookup = Callable[[str], Optional[Container]]


def owner_of(container: Container) -> Optional[str]:
    """The deploy API user who owns the instance (label C{wakeproxy.owner}); None: the operator made it."""
    return container.labels.get(OWNER)


def same_owner(a: Container, b: Container) -> bool:
    """Whether C{a} and C{b} belong to the same owner (two operator-made containers do, too)."""
    return owner_of(a) == owner_of(b)


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


def health_check_problem(value: str) -> Optional[str]:
    """
    Why C{value} is not a health-check path a tenant may give (None: it is one): a path starting with
    C{/}, not C{//} (that names a host), in printable ASCII without spaces or backslashes.
    """
    if not value.startswith("/"):
        return "must be a path starting with '/' (no scheme or host: it is probed on the instance's own address)"
    if value.startswith("//"):
        return "must not start with '//' (that names another host): give a path on the instance's own address"
    if any(not ("\x21" <= c <= "\x7e") or c == "\\" for c in value):
        return "must be printable ASCII without spaces or backslashes (percent-encode the rest)"
    return None


def health_check_url(container: Container, address: Optional[tuple[str, int]]) -> Optional[str]:
    """
    The URL to probe, from C{wakeproxy.health-check} (or the seed's C{health-check}): a path is joined to
    the app's address; a full URL is used as it is, but only on an operator-made container (a tenant's is
    ignored, see L{health_check_ignored}). None when there is nothing to probe by HTTP.
    """
    value = container.labels.get(HEALTH_CHECK) or container.labels.get(SEED_HEALTH_CHECK)
    if not value or health_check_ignored(container) is not None:
        return None
    if value.startswith(("http://", "https://")):
        return value
    if address is None or not value.startswith("/"):
        return None
    return "http://{}:{}{}".format(address[0], address[1], value)


def health_check_ignored(container: Container) -> Optional[str]:
    """Why a tenant's health-check label is not probed (a URL, another host...), for the log; None: it is used."""
    value = container.labels.get(HEALTH_CHECK) or container.labels.get(SEED_HEALTH_CHECK)
    if not value or owner_of(container) is None:
        return None
    problem = health_check_problem(value)
    return None if problem is None else "its health-check label {!r} {}".format(value[:200], problem)


def port_problem(port: int, network_host: bool, allow_ports: Iterable[tuple[int, int]],
                 forbidden_ports: Iterable[int]) -> Optional[str]:
    """
    Why a tenant's app may not listen on C{port} (None: it may): outside C{allow_ports} (inclusive
    ranges), or, with host networking, one of wakeproxy's own listening ports (C{forbidden_ports}: on
    127.0.0.1 it would be wakeproxy itself; on another network the port is the container's own).
    """
    ranges = list(allow_ports)
    if not any(low <= port <= high for low, high in ranges):
        return "port {} is outside the allowed ports ({})".format(port, _ranges(ranges))
    if network_host and port in set(forbidden_ports):
        return "port {} is one of wakeproxy's own listening ports".format(port)
    return None


def port_allowed(container: Container, allow_ports: Sequence[tuple[int, int]] = DEFAULT_ALLOW_PORTS,
                 forbidden_ports: Iterable[int] = ()) -> Optional[str]:
    """
    None when wakeproxy may forward to the instance's C{wakeproxy.port}, else why not (for the log):
    always allowed for operator-made containers; for a tenant's, see L{port_problem}. A missing or
    malformed port is L{direct_address}'s to report.
    """
    if owner_of(container) is None:
        return None
    raw = container.labels.get(PORT)
    if raw is None or not (raw.isascii() and raw.isdigit()):
        return None
    problem = port_problem(int(raw), container.network_mode == "host", allow_ports, forbidden_ports)
    return None if problem is None else "instance {}: {}".format(container.name, problem)


@dataclass(frozen=True)
class Reach:
    """
    Where an instance's app listens (C{address}), or why wakeproxy may not go there (C{refused}: a tenant's
    port outside the policy) or does not know where it is (C{unknown}: labels missing or wrong). Exactly
    one of the three is set.
    """

    address: Optional[tuple[str, int]] = None
    refused: Optional[str] = None
    unknown: Optional[str] = None


def reach(container: Container, allow_ports: Sequence[tuple[int, int]] = DEFAULT_ALLOW_PORTS,
          forbidden_ports: Iterable[int] = ()) -> Reach:
    """L{port_allowed}, then L{direct_address}: where wakeproxy probes and forwards to, in direct mode."""
    refused = port_allowed(container, allow_ports, forbidden_ports)
    if refused is not None:
        return Reach(refused=refused)
    try:
        return Reach(address=direct_address(container))
    except AddressError as e:
        return Reach(unknown=str(e))


def _ranges(ranges: Sequence[tuple[int, int]]) -> str:
    return ", ".join(str(low) if low == high else "{}-{}".format(low, high) for low, high in ranges) or "none"


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
    """
    The group the instance wakes and sleeps with (label C{wakeproxy.group}), as a key that only equals
    another container's key when both are in the same group I{and} have the same owner: groups are per
    owner, so C{"g"} for operator-made containers, C{"g@owner:alice"} for alice's (the owner quoted, so no
    two owners' keys meet).
    """
    name = container.labels.get(GROUP) or None
    owner = owner_of(container)
    if name is None or owner is None:
        return name
    return "{}@owner:{}".format(name, quote(owner, safe=""))


def depends_on(container: Container, lookup: Optional[Lookup] = None) -> list[str]:
    """
    Instances to start (and wait for) before this one, from C{wakeproxy.depends-on=a,b}. For a tenant's
    instance only those of the same owner count, so C{lookup} (the runtime's C{get}) is needed: without
    it, or for names that do not exist or belong to someone else, they are ignored (all alike: waking
    tells nobody which names exist).
    """
    raw = container.labels.get(DEPENDS_ON, "")
    names = [name.strip() for name in raw.split(",") if name.strip()]
    if owner_of(container) is None:
        return names
    if lookup is None:
        return []
    kept = []
    for name in names:
        other = lookup(name)
        if other is not None and same_owner(container, other):
            kept.append(name)
    return kept


def loading_page(container: Container, default: bool) -> bool:
    raw = container.labels.get(LOADING_PAGE)
    if raw is None:
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def idle_tunnel(container: Container, default: str) -> str:
    """What keeps an instance awake through an upgraded tunnel: C{data} frames (default) or the C{open} tunnel."""
    raw = (container.labels.get(IDLE_TUNNEL) or "").strip().lower()
    return raw if raw in ("data", "open") else default


# Traefik labels: what a tenant may give, and what wakeproxy writes itself (--router-labels)


def instance_owns(object_name: str, name: str) -> bool:
    """Whether a router, service... named C{object_name} is instance C{name}'s: C{name} itself or C{name-...}."""
    return object_name == name or object_name.startswith(name + "-")


#: Traefik's kinds and, for each, the sections whose next segment names a router, service... of one instance.
_TRAEFIK_SECTIONS = {
    "http": ("routers", "services", "middlewares", "serverstransports"),
    "tcp": ("routers", "services", "middlewares", "serverstransports"),
    "udp": ("routers", "services"),
}
#: Other Traefik labels a container may carry: they concern only that container.
_TRAEFIK_CONTAINER_KEYS = ("enable", "docker.network", "docker.lbswarm", "docker.allownonrunning", "swarm.network",
                           "swarm.lbswarm")
#: Router settings that decide which requests a router takes from every other route.
_ROUTER_RULE_SETTINGS = ("rule", "priority")
#: Middleware types that make Traefik call an address (or a service) the label names.
_CALLING_MIDDLEWARES = ("forwardauth", "errors", "plugin")
_SERVERS_RE = re.compile(r"servers(\[.*)?")


def traefik_label_problem(key: str, value: str, name: str, allow_router_rules: bool = False,
                          router_labels: bool = False) -> Optional[str]:
    """
    What is wrong with one C{traefik.*} label a tenant gives instance C{name} (None: nothing). Keys are
    compared as Traefik compares them (case-insensitively) and must be C{traefik.enable},
    C{traefik.docker.network} (and the like), or C{traefik.<http|tcp|udp>.<section>.<object>.<setting>}
    with no empty segment, a known section and an object of the instance's own (C{name} or C{name-...}).
    Then:

     - a router's C{rule} and C{priority} need C{allow_router_rules} (--allow-router-rules); with
       C{router_labels} wakeproxy writes the rule itself; a router's C{service} must be the instance's own;
     - services are load balancers of the instance's own address: no server URLs or addresses, no
       weighted, mirroring or failover services (they name other services);
     - middlewares may not call out (forwardAuth, errors, plugins);
     - C{traefik.tls.*} (stores, options) is shared by every route: refused.
    """
    parts = key.split(".")
    folded = [p.casefold() for p in parts]
    if not all(parts):
        return "{} has an empty segment: Traefik label keys are dot-separated names".format(_quote(key))
    if ".".join(folded[1:]) in _TRAEFIK_CONTAINER_KEYS:
        return None
    if len(parts) < 2 or folded[1] not in _TRAEFIK_SECTIONS:
        return ("{} is not a Traefik label an instance may set: traefik.enable, traefik.docker.network, or "
                "traefik.<http|tcp|udp>.<routers|services|...>.<name>.<setting>".format(_quote(key)))
    kind = folded[1]
    if len(parts) < 5:
        return "{} is not a Traefik label of the form traefik.{}.<section>.<name>.<setting>".format(_quote(key), kind)
    section, setting = folded[2], folded[4:]
    if section not in _TRAEFIK_SECTIONS[kind]:
        return "{} names no Traefik section: traefik.{} has {}".format(_quote(key), kind,
                                                                      ", ".join(_TRAEFIK_SECTIONS[kind]))
    if not instance_owns(parts[3], name):
        return ("{} belongs to {} {!r}, which instance {} may not claim: use {!r} or a name starting with "
                "{!r}".format(_quote(key), parts[2], parts[3], name, name, name + "-"))
    if section == "routers":
        if setting[0] in _ROUTER_RULE_SETTINGS and not allow_router_rules:
            return ("a router's {} decides which requests it takes from every other route: refused unless wakeproxy "
                    "runs with --allow-router-rules{}".format(
                        setting[0], " (wakeproxy writes the instance's rule itself)" if router_labels else ""))
        service = value[:-len("@docker")] if value.endswith("@docker") else value
        if setting == ["service"] and not instance_owns(service, name):
            return "a router of instance {} may only use its own services, not {}".format(name, _quote(value))
    elif section == "services":
        if setting[0] != "loadbalancer":
            return ("{}: only load-balancer services of the instance itself (weighted, mirroring and failover "
                    "services name other services)".format(_quote(key)))
        if any(s in ("url", "address") or _SERVERS_RE.fullmatch(s) for s in setting):
            return "{}: a service's servers are the instance itself; Traefik finds its address".format(_quote(key))
    elif section == "middlewares" and setting[0] in _CALLING_MIDDLEWARES:
        return "{}: {} middlewares make Traefik call other addresses".format(_quote(key), parts[4])
    return None


def router_rule(select: str, name: str, keep_path: bool = False) -> str:
    """
    The Traefik rule routing exactly instance C{name}'s requests, as selected by C{select} (a --select
    spec): the anchored cookie rule docker-compose.yml shows (C{minion-1} never takes C{minion-10}'s
    requests), an exact header or host, or, with C{keep_path}, the path prefix. C{ValueError} when Traefik
    cannot tell (C{path:} without C{keep_path}: wakeproxy strips the prefix before Traefik sees it).
    """
    kind, _, arg = select.partition(":")
    if "`" in arg:
        raise ValueError("--select {!r}: a backquote cannot go into a Traefik rule".format(select))
    if kind == "cookie":
        return "HeadersRegexp(`Cookie`, `(^|;\\s*){}={}(;|$)`)".format(_go_regex_literal(arg),
                                                                       _go_regex_literal(name))
    if kind == "header":
        return "Header(`{}`, `{}`)".format(arg, name)
    if kind == "host":
        return "Host(`{}`)".format(arg.replace("{name}", name))
    if kind == "path" and keep_path:
        prefix = "/" + "/".join(s for s in arg.split("/") if s)
        prefix = "" if prefix == "/" else prefix
        return "Path(`{0}/{1}`) || PathPrefix(`{0}/{1}/`)".format(prefix, name)
    why = " without --keep-path (wakeproxy strips the prefix before the router sees it)" if kind == "path" else ""
    raise ValueError("--router-labels cannot write a Traefik rule for --select {!r}{}".format(select, why))


def router_labels(name: str, select: str, keep_path: bool = False, port: Optional[str] = None) -> dict[str, str]:
    """The Traefik labels wakeproxy writes for instance C{name} with --router-labels (see L{router_rule})."""
    labels = {"traefik.enable": "true",
              "traefik.http.routers.{}.rule".format(name): router_rule(select, name, keep_path)}
    if port:
        labels["traefik.http.services.{}.loadbalancer.server.port".format(name)] = port
        labels["traefik.http.routers.{}.service".format(name)] = name
    return labels


def _go_regex_literal(text: str) -> str:
    return re.sub(r"([^A-Za-z0-9_-])", r"\\\1", text)


def _quote(text: str, limit: int = 64) -> str:
    return json.dumps(text if len(text) <= limit else text[:limit] + "...")
