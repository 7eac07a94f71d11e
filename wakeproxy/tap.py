# -*- test-case-name: tests.test_twistd -*-
"""
C{twistd wakeproxy}: command-line options and the service tree.

makeService returns a MultiService holding, in start order: the container runtime (thread pool and
event stream), then one listening endpoint service per C{--listen} (proxied traffic) and per
C{--api-listen} (deploy API). Stopping it reverses that order.
"""

import ipaddress
import os
import re


from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.server import Site

from wakeproxy.http.access import COOKIE as ACCESS_COOKIE
from wakeproxy.http.access import AccessKeys
from wakeproxy.durations import parse_duration
from wakeproxy.runtime.interface import OwnerLabel, parse_owner_label
from wakeproxy.http.selector import parse_selector
from wakeproxy.waking.wakepolicy import DEFAULT_NO_WAKE_PATHS, parse_wake_rate

__all__ = ["Options", "makeService", "parse_port_range"]

_DURATIONS = ("wake-timeout", "stop-timeout", "ready-delay", "token-ttl", "head-timeout", "body-timeout",
              "keepalive-timeout", "connect-timeout", "upstream-idle-timeout", "access-ttl", "forward-auth-cache",
              "drain-timeout")
#: the ports a tenant's wakeproxy.port may name when no --allow-port is given.
DEFAULT_ALLOWED_PORTS = [(1024, 65535)]
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: header and cookie names

log = Logger()
_POSITIVE_INTS = ("max-held", "max-held-per-instance", "max-upstream-per-instance",
                  "docker-threads", "max-api-body", "max-head-bytes")


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("wakeproxy holds requests for stopped Docker containers, starts them once, waits until "
                "they are ready and replays the requests; a second listener serves the deploy API.")

    optParameters = [
        ["api-listen", None, "tcp:8008:interface=127.0.0.1",
         "Endpoint for the deploy API (localhost only unless told otherwise)."],
        ["docker-url", None, None,
         "Docker engine URL [default: $DOCKER_HOST, else unix:///var/run/docker.sock]."],
        ["owner-label", None, "wakeproxy.managed=true",
         "KEY=VALUE label marking the containers wakeproxy manages; all others are invisible."],
        ["select", None, "cookie:instance",
         "How a request names its instance: cookie:NAME, path:PREFIX, host:PATTERN or header:NAME."],
        ["home-url", None, "/home", "Where browsers asking for an unknown instance are redirected."],
        ["home-path", None, "/home",
         "Path prefix of the home site, forwarded without instance selection (to --home-upstream, or to the "
         "--upstream router)."],
        ["home-upstream", None, None, "URL of the home site (mock_home) in direct mode."],
        ["upstream", None, "direct",
         "'direct' (to each container) or a URL of one router (Traefik) that receives every request."],
        ["upstream-ca", None, None, "PEM file of the CA that signs an https upstream's certificate."],
        ["traefik-api", None, None, "Traefik API base URL; after a wake, wait until the instance's router is up."],
        ["wake-timeout", None, "60s", "Deadline for a wake (start, health, route); then 504."],
        ["ready-delay", None, "0", "Opt-in extra delay after a container starts, when it has no readiness probe."],
        ["stop-timeout", None, "10s", "SIGTERM grace before Docker kills a container being stopped."],
        ["max-held", None, "10000", "Requests held while waking, all instances together; beyond: 503."],
        ["max-held-per-instance", None, "1000", "Requests held while one instance wakes; beyond: 503."],
        ["max-upstream-per-instance", None, "64", "Concurrent upstream requests per instance; the rest queue."],
        ["docker-threads", None, "8", "Threads for blocking Docker calls."],
        ["passwd", None, None,
         "Deploy API users: lines 'user,hash' (salted scrypt from `python -m wakeproxy.api.passwd add USER`, "
         "or the old spawner's sha256 hex). Without it nobody can sign in (unless --no-auth)."],
        ["token-ttl", None, "60m", "Lifetime of a deploy API token."],
        ["name-pattern", None, "^[a-z0-9][a-z0-9-]{0,62}$", "Regex every new instance name must match."],
        ["pull", None, "never", "Pull a missing image on deploy: 'never' or 'missing'."],
        ["max-api-body", None, str(1024 * 1024), "Largest deploy API request body (bytes); beyond: 413."],
        ["idle-timeout", None, "15m",
         "Stop an instance after this long without activity (label wakeproxy.idle-timeout overrides; 0: never)."],
        ["wake-rate", None, None, "At most COUNT wakes per instance per PERIOD, e.g. 5/1m; beyond: 503."],
        ["head-timeout", None, "15s", "The whole request head must arrive within this; else 408 and close."],
        ["body-timeout", None, "60s", "Longest silence while a request body streams; then 408 (or abort)."],
        ["keepalive-timeout", None, "75s", "Idle keep-alive client connections are closed after this."],
        ["connect-timeout", None, "5s", "Upstream connect deadline; then 502."],
        ["upstream-timeout", None, None, "Deadline for the upstream's response head; then 504 [default: none]."],
        ["upstream-idle-timeout", None, "30s", "Idle pooled upstream connections are closed after this."],
        ["max-head-bytes", None, str(64 * 1024), "Largest request head (bytes); beyond, or over 100 fields: 431."],
        ["max-body", None, "0", "Largest request body (bytes) to any instance; beyond: 413 (0: no limit)."],
        ["idle-tunnel", None, "data",
         "What keeps an instance awake through a WebSocket/upgraded tunnel: 'data' frames, or the 'open' tunnel "
         "(label wakeproxy.idle-tunnel overrides)."],
        ["drain-timeout", None, "10s",
         "On SIGTERM: how long exchanges in flight and tunnels may take to finish before they are closed."],
        ["access-log", None, None, "Access log of the proxy listener: a FILE, or '-' for standard output [default: off]."],
        ["access-log-format", None, "json", "Access log lines: 'json' (one object per line) or 'combined' (Apache)."],
        ["access", None, None,
         "Who may use an instance through the proxy: 'open' (anyone who names it), 'signed' (an access token "
         "from the deploy API) or 'forward-auth:URL' (ask URL first) [default: signed with --access-key, "
         "else open]."],
        ["access-key", None, None,
         "File of access token keys (one per line, at least 32 characters; the first signs, any verifies)."],
        ["access-cookie", None, ACCESS_COOKIE, "Cookie carrying the access token (or header X-Wakeproxy-Access)."],
        ["access-ttl", None, "12h", "Lifetime of an access token issued by POST /deploy/<name>/access."],
        ["forward-auth-headers", None, None,
         "With --access forward-auth: response headers (H1,H2) copied onto the upstream request [default: none]."],
        ["forward-auth-cache", None, "0",
         "With --access forward-auth: how long an answer is reused per credential and instance (0: never)."],
    ]
    optFlags = [
        ["keep-path", None, "With --select path:PREFIX, forward the path unchanged."],
        ["no-auth", None, "Serve the deploy API without credentials (local demos only: logged loudly)."],
        ["allow-host-network", None, "Let the deploy API create containers with network 'host'."],
        ["loading-page", None, "Browsers navigating to a sleeping instance get a page that waits, then reloads."],
        ["access-cookie-secure", None, "Mark the access cookie Secure even when the API is asked over plain http."],
        ["metrics-auth", None, "GET /metrics needs a deploy API token (Bearer) or a passwd user (Basic)."],
        ["allow-router-rules", None, "Let API users set a Traefik router's rule and priority (refused otherwise)."],
        ["router-labels", None, "The deploy API writes each instance's Traefik router labels itself."],
    ]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self["listen"] = []
        self["allow-image"] = []
        self["no-wake-path"] = []
        self["no-wake-user-agent"] = []
        self["trusted-proxy"] = []
        self["allow-port"] = []

    def opt_listen(self, description: str) -> None:
        """Endpoint for proxied traffic (repeatable) [default: tcp:8000]."""
        self["listen"].append(description)

    def opt_allow_image(self, pattern: str) -> None:
        """Image the deploy API may create from, a glob like 'mock-app:*' (repeatable) [default: any local image]."""
        self["allow-image"].append(pattern)

    def opt_no_wake_path(self, glob: str) -> None:
        """Path glob that never wakes an instance nor counts as activity (repeatable) [default: /favicon.ico, /robots.txt]."""
        self["no-wake-path"].append(glob)

    def opt_trusted_proxy(self, cidr: str) -> None:
        """Peer address range (CIDR) whose X-Forwarded-*/Forwarded/X-Real-IP headers are extended, not replaced (repeatable) [default: none]."""
        try:
            self["trusted-proxy"].append(ipaddress.ip_network(cidr, strict=False))
        except ValueError as e:
            raise usage.UsageError("--trusted-proxy: {}".format(e))

    def opt_allow_port(self, ports: str) -> None:
        """Port or range (8080, 1024-65535) a tenant's wakeproxy.port may name (repeatable) [default: 1024-65535]."""
        try:
            self["allow-port"].append(parse_port_range(ports))
        except ValueError as e:
            raise usage.UsageError("--allow-port: {}".format(e))

    def opt_no_wake_user_agent(self, regex: str) -> None:
        """User-Agent regex that never wakes an instance nor counts as activity (repeatable), e.g. UptimeRobot."""
        try:
            re.compile(regex)
        except re.error as e:
            raise usage.UsageError("--no-wake-user-agent: not a regular expression ({})".format(e))
        self["no-wake-user-agent"].append(regex)

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = ["tcp:8000"]
        if not self["no-wake-path"]:
            self["no-wake-path"] = list(DEFAULT_NO_WAKE_PATHS)
        if self["wake-rate"] is not None:
            try:
                self["wake-rate"] = parse_wake_rate(self["wake-rate"])
            except ValueError as e:
                raise usage.UsageError("--wake-rate: {}".format(e))
        try:
            idle = parse_duration(self["idle-timeout"]) if self["idle-timeout"].strip().lower() != "never" else 0
        except ValueError as e:
            raise usage.UsageError("--idle-timeout: {}".format(e))
        self["idle-timeout"] = idle or None
        if self["docker-url"] is None:
            self["docker-url"] = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        try:
            self["owner-label"] = parse_owner_label(self["owner-label"])
        except ValueError as e:
            raise usage.UsageError("--owner-label: {}".format(e))
        try:
            self["selector"] = parse_selector(self["select"], keep_path=bool(self["keep-path"]))
        except ValueError as e:
            raise usage.UsageError("--select: {}".format(e))
        for name in _DURATIONS:
            try:
                self[name] = parse_duration(self[name])
            except ValueError as e:
                raise usage.UsageError("--{}: {}".format(name, e))
        for name in _POSITIVE_INTS:
            try:
                value = int(self[name])
            except ValueError:
                raise usage.UsageError("--{}: {!r} is not a whole number".format(name, self[name]))
            if value < 1:
                raise usage.UsageError("--{}: must be at least 1, got {}".format(name, value))
            self[name] = value
        if self["upstream-timeout"] is not None:
            try:
                self["upstream-timeout"] = parse_duration(self["upstream-timeout"]) or None
            except ValueError as e:
                raise usage.UsageError("--upstream-timeout: {}".format(e))
        try:
            self["max-body"] = int(self["max-body"])
        except ValueError:
            raise usage.UsageError("--max-body: {!r} is not a whole number".format(self["max-body"]))
        if self["access-log-format"] not in ("json", "combined"):
            raise usage.UsageError("--access-log-format: use 'json' or 'combined', got {!r}".format(
                self["access-log-format"]))
        if self["access-log"] not in (None, "-"):
            directory = os.path.dirname(os.path.abspath(self["access-log"]))
            if not os.path.isdir(directory):
                raise usage.UsageError("--access-log: no such directory {!r}".format(directory))
        if self["idle-tunnel"] not in ("data", "open"):
            raise usage.UsageError("--idle-tunnel: use 'data' or 'open', got {!r}".format(self["idle-tunnel"]))
        if self["wake-timeout"] <= 0:
            raise usage.UsageError("--wake-timeout: must be more than 0 seconds")
        upstream = self["upstream"]
        if upstream != "direct" and not upstream.startswith(("http://", "https://")):
            raise usage.UsageError("--upstream: use 'direct' or an http:// or https:// URL, got {!r}".format(upstream))
        if self["home-upstream"] is not None and not self["home-upstream"].startswith(("http://", "https://")):
            raise usage.UsageError("--home-upstream: use an http:// or https:// URL, got {!r}".format(
                self["home-upstream"]))
        if self["upstream-ca"] is not None and not os.path.isfile(self["upstream-ca"]):
            raise usage.UsageError("--upstream-ca: no such file {!r}".format(self["upstream-ca"]))
        for desc in self["listen"] + [self["api-listen"]]:
            _check_endpoint(desc)
        if self["passwd"] is not None and not os.path.isfile(self["passwd"]):
            raise usage.UsageError("--passwd: no such file {!r}".format(self["passwd"]))
        try:
            re.compile(self["name-pattern"])
        except re.error as e:
            raise usage.UsageError("--name-pattern: not a regular expression ({})".format(e))
        if self["pull"] not in ("never", "missing"):
            raise usage.UsageError("--pull: use 'never' or 'missing', got {!r}".format(self["pull"]))
        if not self["allow-port"]:
            self["allow-port"] = list(DEFAULT_ALLOWED_PORTS)
        self._access_options()

    def _access_options(self) -> None:
        keys = None
        if self["access-key"] is not None:
            try:
                keys = AccessKeys.from_file(self["access-key"])
            except OSError as e:
                raise usage.UsageError("--access-key: cannot read {!r} ({})".format(self["access-key"], e.strerror))
            except ValueError as e:
                raise usage.UsageError("--access-key: {} in {!r}".format(e, self["access-key"]))
        self["access-keys"] = keys
        mode = self["access"] if self["access"] is not None else ("signed" if keys is not None else "open")
        self["forward-auth-url"] = None
        if mode.startswith("forward-auth:"):
            url = mode[len("forward-auth:"):]
            if not url.startswith(("http://", "https://")):
                raise usage.UsageError("--access forward-auth:URL needs an http:// or https:// URL, got {!r}".format(url))
            mode, self["forward-auth-url"] = "forward-auth", url
        elif mode not in ("open", "signed"):
            raise usage.UsageError("--access: use 'open', 'signed' or 'forward-auth:URL', got {!r}".format(mode))
        if mode == "signed" and keys is None:
            raise usage.UsageError("--access signed needs --access-key FILE (the keys that sign access tokens)")
        self["access"] = mode
        if _TOKEN_RE.fullmatch(self["access-cookie"]) is None:
            raise usage.UsageError("--access-cookie: {!r} is not a cookie name".format(self["access-cookie"]))
        if self["access-ttl"] <= 0:
            raise usage.UsageError("--access-ttl: must be more than 0 seconds")
        headers = [h.strip() for h in (self["forward-auth-headers"] or "").split(",") if h.strip()]
        for header in headers:
            if _TOKEN_RE.fullmatch(header) is None:
                raise usage.UsageError("--forward-auth-headers: {!r} is not a header name".format(header))
        self["forward-auth-headers"] = [h.lower() for h in headers]


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


def _check_endpoint(description: str) -> None:
    from twisted.internet.testing import MemoryReactor  # parse only: nothing listens

    try:
        serverFromString(MemoryReactor(), description)
    except Exception as e:
        raise usage.UsageError("bad endpoint {!r}: {}".format(description, e))


class QuietSite(Site):
    """A Site without per-request access logging (it costs more than the proxying on the hot path)."""

    noisy = False

    def log(self, request) -> None:
        pass


def makeService(options: Options, reactor=None) -> MultiService:
    if reactor is None:
        from twisted.internet import reactor
    from wakeproxy.api.resources import api_resource
    from wakeproxy.api.bodylimit import limited_request
    from wakeproxy.runtime.docker import DockerRuntime
    from wakeproxy.metrics import Registry
    from wakeproxy.listeners import listening_endpoint
    from wakeproxy.proxy import ProxyService

    if options["access"] == "open":
        log.warn("--access open: ANYONE who can reach the proxy listener can wake and use ANY instance by naming "
                 "it; give --access-key FILE (signed access tokens) or --access forward-auth:URL")
    top = MultiService()
    owner: OwnerLabel = options["owner-label"]
    runtime = DockerRuntime(reactor, options["docker-url"], owner, max_threads=options["docker-threads"])
    runtime.setServiceParent(top)

    metrics = Registry()
    proxy = ProxyService(options, runtime, reactor, metrics)
    proxy.setServiceParent(top)
    for description in options["listen"]:
        StreamServerEndpointService(listening_endpoint(reactor, description), proxy.relay).setServiceParent(top)

    api_site = QuietSite(api_resource(options, runtime, proxy.waker, reactor, activity=proxy.activity,
                                         metrics=metrics),
                         requestFactory=limited_request(options["max-api-body"]), reactor=reactor)
    StreamServerEndpointService(listening_endpoint(reactor, options["api-listen"]), api_site).setServiceParent(top)
    reactor.addSystemEventTrigger("before", "shutdown", _repeated_signals_wait, options["drain-timeout"])
    return top


def _repeated_signals_wait(drain_timeout: float) -> None:
    """
    Once shutting down (draining, at most --drain-timeout), a second Ctrl-C or SIGTERM only says so: the
    reactor's own handler would try to stop it again and log a traceback.
    """
    import signal

    from twisted.logger import Logger

    log = Logger(namespace="wakeproxy.tap")

    def again(signum, frame) -> None:
        log.info("already stopping: connections in flight get at most {seconds:g}s", seconds=drain_timeout)

    try:
        signal.signal(signal.SIGINT, again)
        signal.signal(signal.SIGTERM, again)
    except ValueError:
        pass  # not the main thread (tests): nothing to do
