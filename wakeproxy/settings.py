# -*- test-case-name: tests.test_settings -*-
"""
What C{twistd wakeproxy}'s options mean, as frozen, typed values: one group per room (L{RuntimeSettings},
L{ProxySettings}, L{WakingSettings}, L{ApiSettings}, L{AccessSettings}) and what they share, in one
L{Settings}.

L{from_options} is the only reader of option keys: C{Options.postOptions} (L{wakeproxy.tap}) calls it,
so every value is checked once, at start, with a L{usage.UsageError} that names the option; C{makeService}
then builds every part from these values. Each field's default is the option's default, parsed
(C{Settings()} is what C{twistd wakeproxy} without options runs with).

Importing this must stay cheap (C{twistd wakeproxy --help} imports L{wakeproxy.tap}): pure parsers only.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from wakeproxy.api.deployspec import DEFAULT_NAME_PATTERN
from wakeproxy.durations import parse_duration
from wakeproxy.http.access import COOKIE as ACCESS_COOKIE
from wakeproxy.http.access import AccessKeys
from wakeproxy.http.selector import parse_selector
from wakeproxy.listeners import listening_ports
from wakeproxy.runtime.interface import OwnerLabel, parse_owner_label
from wakeproxy.waking.labels import DEFAULT_ALLOW_PORTS
from wakeproxy.waking.wakepolicy import DEFAULT_NO_WAKE_PATHS, parse_wake_rate

__all__ = [
    "AccessSettings",
    "ApiSettings",
    "PeerSettings",
    "ProxySettings",
    "RuntimeSettings",
    "Settings",
    "WakingSettings",
    "from_options",
    "parse_port_range",
]

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: header and cookie names


@dataclass(frozen=True)
class RuntimeSettings:
    """The container engine: where it is, which containers are wakeproxy's, how many threads call it."""

    docker_url: str = "unix:///var/run/docker.sock"
    owner: OwnerLabel = OwnerLabel()
    threads: int = 8
    kind: str = "docker"  # --runtime: docker (containers) or swarm (services)


@dataclass(frozen=True)
class ProxySettings:
    """The proxy listener: where it listens, how it names instances, where it forwards, limits, timeouts."""

    listen: tuple[str, ...] = ("tcp:8000",)
    #: --select and --keep-path, checked by L{parse_selector} (see L{selector}).
    select: str = "cookie:instance"
    keep_path: bool = False
    #: the router (Traefik) every request goes to; None: direct to each container (--upstream direct).
    upstream: Optional[str] = None
    upstream_ca: Optional[str] = None
    home_url: str = "/home"
    home_path: str = "/home"
    home_upstream: Optional[str] = None
    max_upstream_per_instance: int = 64
    head_timeout: float = 15.0
    body_timeout: float = 60.0
    keepalive_timeout: float = 75.0
    connect_timeout: float = 5.0
    #: deadline for an upstream's response head; None: none.
    upstream_timeout: Optional[float] = None
    upstream_idle_timeout: float = 30.0
    max_head_bytes: int = 64 * 1024
    #: largest request body; 0: no limit.
    max_body: int = 0
    loading_page: bool = False
    #: a file, "-" for standard output, or None (off).
    access_log: Optional[str] = None
    access_log_format: str = "json"
    drain_timeout: float = 10.0

    @property
    def direct(self) -> bool:
        return self.upstream is None

    def selector(self):
        """The request -> instance name selector these settings describe (a new one on every call)."""
        return parse_selector(self.select, keep_path=self.keep_path)


@dataclass(frozen=True)
class WakingSettings:
    """Waking and putting to sleep: deadlines, how many requests may wait, what does not wake."""

    wake_timeout: float = 60.0
    ready_delay: float = 0.0
    stop_timeout: float = 10.0
    max_held: int = 10000
    max_held_per_instance: int = 1000
    #: at most (count, per seconds) wakes per instance; None: no limit.
    wake_rate: Optional[tuple[int, float]] = None
    #: seconds without activity before an instance is stopped; None: never.
    idle_timeout: Optional[float] = 15 * 60.0
    idle_tunnel: str = "data"
    traefik_api: Optional[str] = None
    no_wake_paths: tuple[str, ...] = tuple(DEFAULT_NO_WAKE_PATHS)
    no_wake_user_agents: tuple[str, ...] = ()


@dataclass(frozen=True)
class PeerSettings:
    """Replicas acting as one (--peer): whom to ask before stopping an instance, and the secret they share."""

    urls: tuple[str, ...] = ()
    secret: Optional[str] = None
    fence_timeout: float = 30.0
    #: --workers: replicas on this host sharing the proxy's listening sockets (wakeproxy/workers.py)
    workers: int = 1


@dataclass(frozen=True)
class ApiSettings:
    """The deploy API listener: who may sign in, and what it may create."""

    listen: str = "tcp:8008:interface=127.0.0.1"
    passwd: Optional[str] = None
    no_auth: bool = False
    token_ttl: float = 60 * 60.0
    max_body: int = 1024 * 1024
    metrics_auth: bool = False
    access_cookie_secure: bool = False
    name_pattern: str = DEFAULT_NAME_PATTERN
    #: image globs; empty: any local image.
    allow_images: tuple[str, ...] = ()
    allow_host_network: bool = False
    allow_router_rules: bool = False
    router_labels: bool = False
    #: pull a missing image on deploy (--pull missing)
    pull: bool = False


@dataclass(frozen=True)
class AccessSettings:
    """Who may use an instance through the proxy (--access) and the access tokens the API issues."""

    #: "open", "signed" or "forward-auth"
    mode: str = "open"
    keys: Optional[AccessKeys] = None
    cookie: str = ACCESS_COOKIE
    ttl: float = 12 * 3600.0
    forward_auth_url: Optional[str] = None
    #: lower-case header names
    forward_auth_headers: tuple[str, ...] = ()
    forward_auth_cache: float = 0.0


@dataclass(frozen=True)
class Settings:
    """Everything C{twistd wakeproxy} runs with; what several rooms use sits here, not in a group."""

    runtime: RuntimeSettings = RuntimeSettings()
    proxy: ProxySettings = ProxySettings()
    waking: WakingSettings = WakingSettings()
    api: ApiSettings = ApiSettings()
    access: AccessSettings = AccessSettings()
    peers: PeerSettings = PeerSettings()
    #: inclusive port ranges a tenant's wakeproxy.port may name (--allow-port), at create and at wake.
    allow_ports: tuple[tuple[int, int], ...] = tuple(DEFAULT_ALLOW_PORTS)
    #: peers whose X-Forwarded-* headers are believed (--trusted-proxy), on both listeners.
    trusted_proxies: tuple[Network, ...] = ()

    @property
    def own_ports(self) -> frozenset:
        """wakeproxy's own TCP ports (both listeners): a tenant on host networking may not claim them."""
        return listening_ports(self.proxy.listen + (self.api.listen,))


def from_options(options: Mapping[str, Any]) -> Settings:
    """
    The settings the parsed options (a C{usage.Options}, or any mapping of option names to their raw
    values) describe; L{usage.UsageError}, one sentence naming the option, for any value that is wrong.
    """
    waking = _waking(options)  # in the order the options were checked before there were settings
    runtime = _runtime(options)
    proxy = _proxy(options)
    api = _api(options)
    return Settings(runtime=runtime, proxy=proxy, waking=waking, api=api, access=_access(options),
                    peers=_peers(options, waking.stop_timeout, proxy.listen), allow_ports=tuple(options["allow-port"]) or tuple(DEFAULT_ALLOW_PORTS),
                    trusted_proxies=tuple(options["trusted-proxy"]))


def _runtime(o: Mapping[str, Any]) -> RuntimeSettings:
    docker_url = o["docker-url"] if o["docker-url"] is not None else (
        os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock")
    return RuntimeSettings(docker_url=docker_url, owner=_parsed(parse_owner_label, o, "owner-label"),
                           threads=_positive(o, "docker-threads"), kind=_choice(o, "runtime", ("docker", "swarm")) if "runtime" in o else "docker")


def _peers(o: Mapping[str, Any], stop_timeout: float, listen: tuple[str, ...] = ()) -> PeerSettings:
    urls = tuple(o.get("peer") or ())
    fence_timeout = _duration(o, "peer-fence-timeout")
    workers = _workers(o, listen)
    if (urls or workers > 1) and fence_timeout <= stop_timeout + 5:
        raise usage.UsageError("--peer-fence-timeout must be longer than --stop-timeout plus 5s: a peer's fence "
                               "has to outlast the stop it guards")
    path = o.get("peer-secret-file")
    if path is None:
        if urls:
            raise usage.UsageError("--peer needs --peer-secret-file (the secret replicas share)")
        return PeerSettings(fence_timeout=fence_timeout, workers=workers)
    try:
        with open(path, encoding="utf-8") as f:
            secret = f.read().strip()
    except (OSError, UnicodeError) as e:
        raise usage.UsageError("--peer-secret-file: cannot read {!r} ({})".format(path, e))
    if len(secret) < 16:
        raise usage.UsageError("--peer-secret-file: the secret must have at least 16 characters")
    return PeerSettings(urls, secret, fence_timeout, workers)


def _workers(o: Mapping[str, Any], listen: tuple[str, ...]) -> int:
    """C{--workers N}: 1 to 64; above 1, every --listen must be a tcp: or tcp6: endpoint (the shared sockets)."""
    try:
        workers = int(o.get("workers") or 1)
    except ValueError:
        raise usage.UsageError("--workers: {!r} is not a whole number".format(o.get("workers")))
    if not 1 <= workers <= 64:
        raise usage.UsageError("--workers must be between 1 and 64, got {}".format(workers))
    if workers > 1:
        for description in listen:
            if description.split(":", 1)[0].lower() not in ("tcp", "tcp6"):
                raise usage.UsageError("--workers above 1 shares only tcp: and tcp6: listeners, not {!r} "
                                       "(terminate TLS in front, or run one worker)".format(description))
    return workers


def _waking(o: Mapping[str, Any]) -> WakingSettings:
    wake_rate = None if o["wake-rate"] is None else _parsed(parse_wake_rate, o, "wake-rate")
    if o["idle-timeout"].strip().lower() == "never":
        idle = 0.0
    else:
        idle = _duration(o, "idle-timeout")
    wake_timeout = _duration(o, "wake-timeout")
    if wake_timeout <= 0:
        raise usage.UsageError("--wake-timeout: must be more than 0 seconds")
    return WakingSettings(
        wake_timeout=wake_timeout, ready_delay=_duration(o, "ready-delay"), stop_timeout=_duration(o, "stop-timeout"),
        max_held=_positive(o, "max-held"), max_held_per_instance=_positive(o, "max-held-per-instance"),
        wake_rate=wake_rate, idle_timeout=idle or None,
        idle_tunnel=_choice(o, "idle-tunnel", ("data", "open")), traefik_api=o["traefik-api"],
        no_wake_paths=tuple(o["no-wake-path"]) or tuple(DEFAULT_NO_WAKE_PATHS),
        no_wake_user_agents=tuple(o["no-wake-user-agent"]))


def _proxy(o: Mapping[str, Any]) -> ProxySettings:
    listen = tuple(o["listen"]) or ("tcp:8000",)
    _parsed(lambda spec: parse_selector(spec, keep_path=bool(o["keep-path"])), o, "select")
    upstream_timeout = None if o["upstream-timeout"] is None else _duration(o, "upstream-timeout") or None
    try:
        max_body = int(o["max-body"])
    except ValueError:
        raise usage.UsageError("--max-body: {!r} is not a whole number".format(o["max-body"]))
    access_log_format = _choice(o, "access-log-format", ("json", "combined"))
    if o["access-log"] not in (None, "-"):
        directory = os.path.dirname(os.path.abspath(o["access-log"]))
        if not os.path.isdir(directory):
            raise usage.UsageError("--access-log: no such directory {!r}".format(directory))
    upstream = o["upstream"]
    if upstream != "direct" and not upstream.startswith(("http://", "https://")):
        raise usage.UsageError("--upstream: use 'direct' or an http:// or https:// URL, got {!r}".format(upstream))
    if o["home-upstream"] is not None and not o["home-upstream"].startswith(("http://", "https://")):
        raise usage.UsageError("--home-upstream: use an http:// or https:// URL, got {!r}".format(o["home-upstream"]))
    if o["upstream-ca"] is not None and not os.path.isfile(o["upstream-ca"]):
        raise usage.UsageError("--upstream-ca: no such file {!r}".format(o["upstream-ca"]))
    for description in listen:
        _check_endpoint(description)
    return ProxySettings(
        listen=listen, select=o["select"], keep_path=bool(o["keep-path"]),
        upstream=None if upstream == "direct" else upstream, upstream_ca=o["upstream-ca"],
        home_url=o["home-url"], home_path=o["home-path"], home_upstream=o["home-upstream"],
        max_upstream_per_instance=_positive(o, "max-upstream-per-instance"),
        head_timeout=_duration(o, "head-timeout"), body_timeout=_duration(o, "body-timeout"),
        keepalive_timeout=_duration(o, "keepalive-timeout"), connect_timeout=_duration(o, "connect-timeout"),
        upstream_timeout=upstream_timeout, upstream_idle_timeout=_duration(o, "upstream-idle-timeout"),
        max_head_bytes=_positive(o, "max-head-bytes"), max_body=max_body, loading_page=bool(o["loading-page"]),
        access_log=o["access-log"], access_log_format=access_log_format, drain_timeout=_duration(o, "drain-timeout"))


def _api(o: Mapping[str, Any]) -> ApiSettings:
    _check_endpoint(o["api-listen"])
    if o["passwd"] is not None and not os.path.isfile(o["passwd"]):
        raise usage.UsageError("--passwd: no such file {!r}".format(o["passwd"]))
    try:
        re.compile(o["name-pattern"])
    except re.error as e:
        raise usage.UsageError("--name-pattern: not a regular expression ({})".format(e))
    return ApiSettings(
        listen=o["api-listen"], passwd=o["passwd"], no_auth=bool(o["no-auth"]), token_ttl=_duration(o, "token-ttl"),
        max_body=_positive(o, "max-api-body"), metrics_auth=bool(o["metrics-auth"]),
        access_cookie_secure=bool(o["access-cookie-secure"]), name_pattern=o["name-pattern"],
        allow_images=tuple(o["allow-image"]), allow_host_network=bool(o["allow-host-network"]),
        allow_router_rules=bool(o["allow-router-rules"]), router_labels=bool(o["router-labels"]),
        pull=_choice(o, "pull", ("never", "missing")) == "missing")


def _access(o: Mapping[str, Any]) -> AccessSettings:
    keys = None
    if o["access-key"] is not None:
        try:
            keys = AccessKeys.from_file(o["access-key"])
        except OSError as e:
            raise usage.UsageError("--access-key: cannot read {!r} ({})".format(o["access-key"], e.strerror))
        except ValueError as e:
            raise usage.UsageError("--access-key: {} in {!r}".format(e, o["access-key"]))
    mode = o["access"] if o["access"] is not None else ("signed" if keys is not None else "open")
    url = None
    if mode.startswith("forward-auth:"):
        url = mode[len("forward-auth:"):]
        if not url.startswith(("http://", "https://")):
            raise usage.UsageError("--access forward-auth:URL needs an http:// or https:// URL, got {!r}".format(url))
        mode = "forward-auth"
    elif mode not in ("open", "signed"):
        raise usage.UsageError("--access: use 'open', 'signed' or 'forward-auth:URL', got {!r}".format(mode))
    if mode == "signed" and keys is None:
        raise usage.UsageError("--access signed needs --access-key FILE (the keys that sign access tokens)")
    if _TOKEN_RE.fullmatch(o["access-cookie"]) is None:
        raise usage.UsageError("--access-cookie: {!r} is not a cookie name".format(o["access-cookie"]))
    ttl = _duration(o, "access-ttl")
    if ttl <= 0:
        raise usage.UsageError("--access-ttl: must be more than 0 seconds")
    headers = [h.strip() for h in (o["forward-auth-headers"] or "").split(",") if h.strip()]
    for header in headers:
        if _TOKEN_RE.fullmatch(header) is None:
            raise usage.UsageError("--forward-auth-headers: {!r} is not a header name".format(header))
    return AccessSettings(mode=mode, keys=keys, cookie=o["access-cookie"], ttl=ttl, forward_auth_url=url,
                          forward_auth_headers=tuple(h.lower() for h in headers),
                          forward_auth_cache=_duration(o, "forward-auth-cache"))


def _parsed(parse, o: Mapping[str, Any], name: str):
    """C{parse(o[name])}, its ValueError turned into a usage error naming the option."""
    try:
        return parse(o[name])
    except ValueError as e:
        raise usage.UsageError("--{}: {}".format(name, e))


def _duration(o: Mapping[str, Any], name: str) -> float:
    return _parsed(parse_duration, o, name)


def _positive(o: Mapping[str, Any], name: str) -> int:
    try:
        value = int(o[name])
    except ValueError:
        raise usage.UsageError("--{}: {!r} is not a whole number".format(name, o[name]))
    if value < 1:
        raise usage.UsageError("--{}: must be at least 1, got {}".format(name, value))
    return value


def _choice(o: Mapping[str, Any], name: str, choices: tuple[str, str]) -> str:
    if o[name] not in choices:
        raise usage.UsageError("--{}: use '{}' or '{}', got {!r}".format(name, choices[0], choices[1], o[name]))
    return o[name]


def _check_endpoint(description: str) -> None:
    from twisted.internet.testing import MemoryReactor  # parse only: nothing listens

    try:
        serverFromString(MemoryReactor(), description)
    except Exception as e:
        raise usage.UsageError("bad endpoint {!r}: {}".format(description, e))


def parse_port_range(text: str) -> tuple[int, int]:
    """C{(low, high)} from C{"8080"} or C{"1024-65535"}; ValueError with a sentence otherwise."""
    low, sep, high = text.strip().partition("-")
    try:
        bounds = (int(low), int(high) if sep else int(low))
    except ValueError:
        raise ValueError("use a port (8080) or a range (1024-65535), got {!r}".format(text))
    if not 1 <= bounds[0] <= bounds[1] <= 65535:
        raise ValueError("ports are 1-65535, low to high, got {!r}".format(text))
    return bounds
