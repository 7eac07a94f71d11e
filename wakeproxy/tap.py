# -*- test-case-name: tests.test_twistd -*-
"""
C{twistd wakeproxy}: command-line options and the service tree.

L{Options} declares every option (name, default, help); its C{postOptions} checks them and keeps what they
mean as frozen L{wakeproxy.settings.Settings}. L{makeService} is the one place that builds the parts, each
from plain values of those settings, and returns a MultiService holding, in start order: the container
runtime (thread pool and event stream), the idle stopper, the proxy listener's lifetime
(L{wakeproxy.proxy.ProxyService}), then one listening endpoint service per C{--listen} (proxied traffic)
and the C{--api-listen} one (deploy API). Stopping it reverses that order.
"""

import ipaddress
import re
from functools import partial
from typing import Optional

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.server import Site

from wakeproxy.api.deployspec import CreatePolicy
from wakeproxy.http.access import COOKIE as ACCESS_COOKIE
from wakeproxy.settings import AccessSettings, PeerSettings, RuntimeSettings, Settings, from_options, parse_port_range

__all__ = ["Options", "create_policy", "makeService"]

log = Logger()


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("wakeproxy holds requests for stopped Docker containers, starts them once, waits until "
                "they are ready and replays the requests; a second listener serves the deploy API.")

    optParameters = [
        ["api-listen", None, "tcp:8008:interface=127.0.0.1",
         "Endpoint for the deploy API (localhost only unless told otherwise)."],
        ["runtime", None, "docker", "Where instances live: 'docker' (containers) or 'swarm' (Swarm services, "
         "asleep at 0 replicas; --docker-url names a manager node)."],
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
        ["peer-secret-file", None, None,
         "File holding the secret (at least 16 characters) that replicas (--peer) present to each other."],
        ["workers", None, "1",
         "Processes sharing the --listen sockets (tcp:/tcp6: only), each the others' peer; the first also serves "
         "the deploy API and restarts workers that exit."],
        ["peer-fence-timeout", None, "30s",
         "How long a peer's fence holds an instance's new requests at most, if its stopper never releases it."],
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
        self["peer"] = []

    def opt_peer(self, url: str) -> None:
        """Another replica's API listener URL (repeatable): instances are stopped only when every peer agrees."""
        if not url.startswith(("http://", "https://")):
            raise usage.UsageError("--peer: use the http:// or https:// URL of a replica's API listener, got {!r}"
                                   .format(url))
        self["peer"].append(url)

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

    def parseOptions(self, options=None) -> None:
        """Also keeps the arguments as given: what C{--workers} starts its workers with."""
        import sys

        self.argv = list(sys.argv[1:] if options is None else options)
        usage.Options.parseOptions(self, options)

    def postOptions(self) -> None:
        """Check every value and keep what they mean in L{settings}, the only thing makeService reads."""
        self.settings: Settings = from_options(self)


class QuietSite(Site):
    """A Site without per-request access logging (it costs more than the proxying on the hot path)."""

    noisy = False

    def log(self, request) -> None:
        pass


def makeService(options: Options, reactor=None) -> MultiService:
    """
    The one place that builds wakeproxy's parts, each from plain values of L{Options.settings}: the
    runtime, the waker, the idle stopper, the proxy listener's dispatcher, upstream pool and relay, and the
    deploy API. Children start in order and stop in reverse (the listeners close before the proxy drains).
    """
    if reactor is None:
        from twisted.internet import reactor
        from wakeproxy.eventloop import lean_poll
        lean_poll(reactor)  # twistd's own reactor: its loop without the per-event log context
    from wakeproxy.trustedproxies import is_trusted
    from wakeproxy.api.bodylimit import limited_request
    from wakeproxy.api.resources import api_resource
    from wakeproxy.http.accesslog import AccessLog
    from wakeproxy.http.dispatch import Dispatcher
    from wakeproxy.http.relay import RelayFactory, Timeouts
    from wakeproxy.http.upstreampool import UpstreamPool, upstream_from_url
    from wakeproxy.metrics import process_registry
    from wakeproxy.listeners import listening_endpoint
    from wakeproxy.proxy import ProxyService
    from wakeproxy.waking.idle import IdleStopper
    from wakeproxy.waking.readiness import Prober, ReadinessPlan
    from wakeproxy.waking.waker import Waker
    from wakeproxy.waking.wakepolicy import WakePolicy

    from wakeproxy.workers import worker_plan

    settings: Settings = options.settings
    workers = worker_plan(settings, getattr(options, "argv", []), reactor)
    if workers is not None:
        settings = workers.settings  # its sibling processes as peers
    proxy, waking, api = settings.proxy, settings.waking, settings.api
    if settings.access.mode == "open":
        log.warn("--access open: ANYONE who can reach the proxy listener can wake and use ANY instance by naming "
                 "it; give --access-key FILE (signed access tokens) or --access forward-auth:URL")
    top = MultiService()
    runtime = make_runtime(settings.runtime, reactor, stop_grace=waking.stop_timeout)
    runtime.setServiceParent(top)
    metrics = process_registry()
    policy = create_policy(settings)  # tenants' ports: the same at create (the API) and at wake
    plan = ReadinessPlan(reactor, Prober(reactor), direct=proxy.direct, traefik_api=waking.traefik_api,
                         ready_delay=waking.ready_delay, allow_ports=policy.allow_ports,
                         forbidden_ports=policy.forbidden_ports)
    waker = Waker(reactor, runtime, plan, wake_timeout=waking.wake_timeout, max_held=waking.max_held,
                  max_held_per_instance=waking.max_held_per_instance, stop_timeout=waking.stop_timeout,
                  wake_rate=waking.wake_rate, metrics=metrics)
    idle = IdleStopper(reactor, runtime, waker, waking.idle_timeout, peers=_peers(settings.peers, reactor))
    idle.setServiceParent(top)

    tls_policy = _tls_policy(proxy.upstream_ca)
    home = proxy.home_upstream or proxy.upstream
    dispatcher = Dispatcher(
        proxy.selector(), runtime, waker, upstream=None if proxy.direct else upstream_from_url(proxy.upstream),
        home_url=proxy.home_url, max_upstream_per_instance=proxy.max_upstream_per_instance,
        policy=WakePolicy(waking.no_wake_paths, waking.no_wake_user_agents), loading_page=proxy.loading_page,
        home_path=proxy.home_path, home_upstream=upstream_from_url(home) if home else None,
        idle_tunnel=waking.idle_tunnel, clock=reactor, gate=_gate(settings.access, reactor, tls_policy, runtime))
    pool = UpstreamPool(reactor, connect_timeout=proxy.connect_timeout, idle_timeout=proxy.upstream_idle_timeout,
                        tls_policy=tls_policy)
    relay = RelayFactory(
        dispatcher, pool, reactor,
        Timeouts(proxy.head_timeout, proxy.body_timeout, proxy.keepalive_timeout, proxy.upstream_timeout),
        max_head=proxy.max_head_bytes, max_body=proxy.max_body,
        trusted=partial(is_trusted, networks=settings.trusted_proxies) if settings.trusted_proxies else None,
        access_log=AccessLog.open(proxy.access_log, proxy.access_log_format) if proxy.access_log else None)
    ProxyService(relay, pool, waker, proxy.drain_timeout).setServiceParent(top)
    if workers is None:
        for description in proxy.listen:
            StreamServerEndpointService(listening_endpoint(reactor, description), relay).setServiceParent(top)
    else:
        _add_workers(workers, top, relay, runtime, waker, reactor)
    if workers is None or workers.first:  # the deploy API: one process only
        api_site = QuietSite(api_resource(api, runtime, waker, reactor, policy=policy, access=settings.access,
                                          trusted_proxies=settings.trusted_proxies, stop_timeout=waking.stop_timeout,
                                          activity=idle.activity, metrics=metrics, peer_secret=settings.peers.secret,
                                          peer_fences=_group_fences(workers, waker, reactor)),
                             requestFactory=limited_request(api.max_body), reactor=reactor)
        StreamServerEndpointService(listening_endpoint(reactor, api.listen), api_site).setServiceParent(top)
    _stop_on_signals(reactor, proxy.drain_timeout)
    return top


def _add_workers(workers, top: MultiService, relay, runtime, waker, reactor) -> None:
    """C{--workers}: accept on the shared sockets, serve /peer on the internal one; the first supervises."""
    from wakeproxy.api.peer import PeerResource
    from wakeproxy.api.resources import health_resource
    from wakeproxy.workers import AdoptedPort, peer_root

    for fd in workers.listen_fds:
        AdoptedPort(reactor, fd, relay, ready=None if workers.first else runtime.ready).setServiceParent(top)
    root = peer_root(PeerResource(waker, workers.settings.peers.secret), health_resource(runtime))
    AdoptedPort(reactor, workers.peer_fd, QuietSite(root, reactor=reactor)).setServiceParent(top)
    if workers.supervisor is not None:
        workers.supervisor.setServiceParent(top)


def create_policy(settings: Settings) -> CreatePolicy:
    """What the deploy API may create; its port ranges also bound where tenants' instances are reached."""
    api = settings.api
    return CreatePolicy(owner=settings.runtime.owner, name_pattern=api.name_pattern, allowed_images=api.allow_images,
                        allow_host_network=api.allow_host_network, allow_ports=settings.allow_ports,
                        forbidden_ports=settings.own_ports, allow_router_rules=api.allow_router_rules,
                        router_labels=api.router_labels, select=settings.proxy.select,
                        keep_path=settings.proxy.keep_path)


def _tls_policy(upstream_ca: Optional[str]):
    """C{--upstream-ca}: the policy that verifies https upstreams against that CA; None: the system's CAs."""
    if upstream_ca is None:
        return None
    from twisted.internet.ssl import Certificate
    from twisted.web.client import BrowserLikePolicyForHTTPS

    with open(upstream_ca, "rb") as f:
        return BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(f.read()))


def _peers(peers: PeerSettings, reactor):
    """C{--peer}: the replicas asked before an instance is stopped (waking/peers.py); None without any."""
    if not peers.urls:
        return None
    from wakeproxy.waking.peers import CALL_TIMEOUT, Peers

    return Peers(peers.urls, _peer_caller(reactor, peers.secret, CALL_TIMEOUT), fence_seconds=peers.fence_timeout)


def _group_fences(workers, waker, reactor):
    """The first of C{--workers}: peers' fences on its API listener go to its workers too; else None (the waker's)."""
    if workers is None or not workers.siblings:
        return None
    from wakeproxy.waking.peers import RELAY_TIMEOUT, GroupFences, Peers

    secret = workers.settings.peers.secret
    return GroupFences(waker, Peers(workers.siblings, _peer_caller(reactor, secret, RELAY_TIMEOUT)))


def _peer_caller(reactor, secret: str, timeout: float):
    """The fence protocol's client (waking/peers.py): a fresh connection per call, a deadline of C{timeout}."""
    from twisted.web.client import HTTPConnectionPool

    from wakeproxy.httpclient import make_agent
    from wakeproxy.waking.peers import http_caller

    agent = make_agent(reactor, HTTPConnectionPool(reactor, persistent=False), timeout)
    return http_caller(reactor, agent, secret, timeout)


def _gate(access: AccessSettings, reactor, tls_policy, runtime):
    """C{--access}: who may use an instance through the proxy (http/gate.py); None when everyone may."""
    from wakeproxy.http.gate import ForwardAuthGate, SignedGate

    if access.mode == "signed":
        from wakeproxy.waking.labels import OWNER

        def owner_of(name: str):
            container = runtime.get(name)
            return None if container is None else container.labels.get(OWNER, "")

        return SignedGate(access.keys, reactor, access.cookie, owner_of)
    if access.mode == "forward-auth":
        from twisted.web.client import HTTPConnectionPool

        from wakeproxy.httpclient import make_agent

        agent = make_agent(reactor, HTTPConnectionPool(reactor, persistent=True), 5.0, tls_policy)
        return ForwardAuthGate(access.forward_auth_url, agent, reactor, copy_headers=access.forward_auth_headers,
                               cache_seconds=access.forward_auth_cache)
    return None


def make_runtime(settings: RuntimeSettings, reactor, stop_grace: float):
    """The runtime --runtime names, on the engine at --docker-url, managing what carries the owner label."""
    if settings.kind == "swarm":
        from wakeproxy.runtime.swarm import SwarmRuntime
        return SwarmRuntime(reactor, settings.docker_url, settings.owner, max_threads=settings.threads,
                            stop_grace=stop_grace)
    from wakeproxy.runtime.docker import DockerRuntime
    return DockerRuntime(reactor, settings.docker_url, settings.owner, max_threads=settings.threads)


def _stop_on_signals(reactor, drain_timeout: float) -> None:
    """
    SIGTERM and SIGINT stop the reactor once; any later one only says that wakeproxy is stopping (draining, at
    most --drain-timeout). Twisted's own handlers stop the reactor on every signal, so a second one raises
    and logs a traceback, even one that arrives before the first is handled (a worker can get its parent's
    death signal and another at once). Installed once the reactor runs, over Twisted's, which still handles
    the first signal (its log line, and the exit status twistd gives a signalled stop).
    """
    import signal

    from twisted.logger import Logger

    log = Logger(namespace="wakeproxy.tap")
    stopping = False
    first: dict = {}  # signal -> Twisted's handler, which the first signal still goes to (exit status, log)

    def stopped() -> None:
        nonlocal stopping
        stopping = True  # however the stop began

    def on_signal(signum, frame) -> None:
        nonlocal stopping
        if stopping:
            log.info("already stopping: connections in flight get at most {seconds:g}s", seconds=drain_timeout)
            return
        stopping = True
        handler = first.get(signum)
        if callable(handler):
            handler(signum, frame)
        else:
            reactor.callFromThread(reactor.stop)

    def install() -> None:
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                first[signum] = signal.signal(signum, on_signal)
        except ValueError:
            pass  # not the main thread (tests): nothing to do

    reactor.callWhenRunning(install)
    reactor.addSystemEventTrigger("before", "shutdown", stopped)
