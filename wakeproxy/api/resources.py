# -*- test-case-name: tests.test_api_unit -*-
"""
The deploy API's resource tree, served on C{--api-listen}: the old spawner's routes and body shapes
(seed-spawner.md §2), without its bugs.

    GET    /healthz                     no auth: 200 once the engine has answered
    GET    /openapi.json                no auth: the OpenAPI 3 description (wakeproxy/api/openapi.json)
    GET    /ui                          no auth: the status page (static; its script signs in)
    GET    /metrics                     Prometheus metrics; with --metrics-auth a token (or Basic) is needed
    POST   /login                       {"username", "password"} -> {"token"}; failures are rate-limited
    GET    /deploy  (or /deploy/)       the instances the user may see } everything under /deploy needs a
    POST   /deploy  (or /deploy/)       create, then start: 201        } token: 'Authorization: Bearer T'
    GET    /deploy/<name>               one instance                   } or 'token: T'
    PUT    /deploy/<name>[?wait=ready]  start it (and wait until it is ready, through the proxy's waker)
    POST   /deploy/<name>/stop          stop it
    DELETE /deploy/<name>[?force]       stop it, then remove it
    POST   /deploy/<name>/access        an access token for the proxy (--access signed): {token, cookie, expires}

A user sees and manages their own instances only (an admin: all of them); anything else is a 404 like a
missing name. Every error is application/problem+json. Bodies are checked by L{wakeproxy.api.deployspec},
credentials by L{wakeproxy.api.auth}; the operations themselves are in L{wakeproxy.api.instances}.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Optional
from urllib.parse import unquote

from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from wakeproxy.answers import write_problem
from wakeproxy.api.auth import Authenticator, User
from wakeproxy.api.deployspec import CreatePolicy
from wakeproxy.api.instances import InstanceOperations
from wakeproxy.api.loginlimit import LoginLimiter
from wakeproxy.api.passwd import PasswdFile
from wakeproxy.api.peer import PeerResource
from wakeproxy.api.reply import Reply, crashed, not_found
from wakeproxy.api.statuspage import HEADERS as UI_HEADERS
from wakeproxy.api.statuspage import PAGE as UI_PAGE
from wakeproxy.api.tokens import TokenStore
from wakeproxy.http.selector import valid_instance_name
from wakeproxy.metrics import CollectorRegistry, exposition
from wakeproxy.settings import AccessSettings, ApiSettings

__all__ = ["api_resource", "health_resource", "openapi_document"]

log = Logger()

class _Login(Resource):
    isLeaf = True

    def __init__(self, auth: Authenticator):
        Resource.__init__(self)
        self._auth = auth

    def render(self, request):
        reply = Reply(request)
        if request.method != b"POST":
            reply.problem(405, "use POST /login", headers={b"allow": b"POST"})
            return NOT_DONE_YET
        try:
            self._auth.login(reply)
        except Exception:
            crashed(Failure(), reply)
        return NOT_DONE_YET


#: method -> operation, for the collection, one instance, and its actions (stop, access).
_COLLECTION = {b"GET": "list", b"HEAD": "list", b"POST": "create"}
_INSTANCE = {b"GET": "show", b"HEAD": "show", b"PUT": "start", b"DELETE": "delete"}
_STOP = {b"POST": "stop"}
_ACCESS = {b"POST": "access"}
#: the actions below /deploy/<name>/
_ACTIONS = {b"stop": _STOP, b"access": _ACCESS}


class _Deploy(Resource):
    """C{/deploy} and below: authenticate, then route on the rest of the path and the method."""

    isLeaf = True

    def __init__(self, auth: Authenticator, operations: InstanceOperations):
        Resource.__init__(self)
        self._auth = auth
        self._operations = operations

    def render(self, request):
        reply = Reply(request)
        user = self._auth.user(reply)
        if user is None:
            return NOT_DONE_YET
        runtime = self._operations.runtime
        if not runtime.ready().called:
            reply.problem(503, "the Docker engine has not answered yet", retry_after=1)
            return NOT_DONE_YET
        segments = list(request.postpath)
        if segments and segments[-1] == b"":
            segments.pop()  # /deploy/ is /deploy, /deploy/x/ is /deploy/x
        args: tuple = ()
        if not segments:
            routes = _COLLECTION
        else:
            name = _segment(segments[0])
            if name is None or not valid_instance_name(name) or self._operations.visible(user, name) is None:
                not_found(reply, name)  # missing, unmanaged and someone else's alike
                return NOT_DONE_YET
            args = (name,)
            if len(segments) == 1:
                routes = _INSTANCE
            elif len(segments) == 2 and segments[1] in _ACTIONS:
                routes = _ACTIONS[segments[1]]
            else:
                reply.problem(404, "no such API endpoint: {}".format(request.path.decode("latin-1")[:200]))
                return NOT_DONE_YET
        operation = routes.get(request.method)
        if operation is None:
            allow = ", ".join(m.decode("ascii") for m in routes)
            reply.problem(405, "{} is not allowed here; use {}".format(request.method.decode("latin-1")[:16], allow),
                          headers={b"allow": allow.encode("ascii")})
            return NOT_DONE_YET
        try:
            getattr(self._operations, operation)(reply, user, *args)
        except Exception:
            crashed(Failure(), reply)
        return NOT_DONE_YET


def _segment(raw: bytes) -> Optional[str]:
    try:
        return unquote(raw.decode("ascii"), errors="strict")
    except UnicodeError:
        return None


class _Readable(Resource):
    """A leaf answering GET (and HEAD) only; other methods get 405 problem+json."""

    isLeaf = True

    def render(self, request):
        if request.method not in (b"GET", b"HEAD"):
            Reply(request).problem(405, "only GET is allowed here", headers={b"allow": b"GET, HEAD"})
            return NOT_DONE_YET
        return self.render_GET(request)


class _Health(_Readable):
    """C{GET /healthz}: 200 once the runtime has listed the engine's containers, else 503."""

    def __init__(self, runtime):
        Resource.__init__(self)
        self._runtime = runtime

    def render_GET(self, request):
        d = self._runtime.ready()
        if not d.called:
            write_problem(request, 503, "the Docker engine has not answered yet", retry_after=1)
            return NOT_DONE_YET
        body = json.dumps({"status": "ok", "instances": len(self._runtime.list())}).encode() + b"\n"
        request.setHeader(b"content-type", b"application/json")
        return body


def health_resource(runtime) -> Resource:
    """C{/healthz} alone (a C{--workers} process's internal listener serves it too)."""
    return _Health(runtime)


class _Document(_Readable):
    """A fixed JSON document (the OpenAPI description)."""

    def __init__(self, body: bytes):
        Resource.__init__(self)
        self._body = body

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return self._body


class _Root(Resource):
    def getChild(self, path, request):
        return _NotFound()


class _NotFound(Resource):
    isLeaf = True

    def render(self, request):
        write_problem(request, 404, "no such API endpoint: {}".format(request.path.decode("latin-1")[:200]))
        return NOT_DONE_YET


def openapi_document() -> bytes:
    """The OpenAPI 3 description of this API, as shipped in the package."""
    return files("wakeproxy.api").joinpath("openapi.json").read_bytes()


class _Ui(_Readable):
    """C{GET /ui}: the status page (static; its script uses the API with the signed-in user's token)."""

    def render_GET(self, request):
        for name, value in UI_HEADERS:
            request.setHeader(name, value)
        return UI_PAGE


class _Metrics(_Readable):
    """
    C{GET /metrics}: Prometheus text exposition by C{prometheus_client} (no secrets, low-cardinality labels); with
    C{--metrics-auth}, for signed-in users only (L{Authenticator.metrics_reader}).
    """

    def __init__(self, registry, auth: Optional[Authenticator] = None):
        _Readable.__init__(self)
        self._registry = registry
        self._auth = auth

    def render_GET(self, request):
        if self._auth is None:
            return self._body(request)
        reply = Reply(request)
        d = self._auth.metrics_reader(reply)
        d.addCallback(self._answer, reply)
        d.addErrback(crashed, reply)
        return NOT_DONE_YET

    def _answer(self, user: Optional[User], reply: Reply) -> None:
        if user is None or reply.done:
            return
        body = self._body(reply.request)
        reply.request.setHeader(b"content-length", str(len(body)).encode("ascii"))
        reply.request.setHeader(b"cache-control", b"no-store")
        if reply.request.method != b"HEAD":
            reply.request.write(body)
        reply.request.finish()

    def _body(self, request) -> bytes:
        body, content_type = exposition(self._registry, request.getHeader(b"accept"))
        request.setHeader(b"content-type", content_type)
        return body


def api_resource(settings: ApiSettings, runtime, waker, reactor, policy: CreatePolicy,
                 access: AccessSettings = AccessSettings(), trusted_proxies=(), stop_timeout: float = 10.0,
                 activity=None, metrics=None, peer_secret: Optional[str] = None, peer_fences=None) -> Resource:
    """
    The deploy API's resource tree for C{settings} (its listener's group), creating what C{policy} allows,
    issuing the access tokens C{access} describes, believing the X-Forwarded-* of C{trusted_proxies},
    stopping instances with C{stop_timeout} (--stop-timeout). With C{peer_secret}, C{/peer} fences on
    C{peer_fences} (the first process of C{--workers}: its group's), else on the waker.
    """
    enabled = not settings.no_auth
    if not enabled:
        log.warn("--no-auth: the deploy API on {listen} lets ANYONE who can connect create, start, stop and remove "
                 "containers; use it for local demos only", listen=settings.listen)
    elif settings.passwd is None:
        log.warn("no --passwd: nobody can use the deploy API; give --passwd FILE or --no-auth")
    if IReactorThreads.providedBy(reactor):
        def run_blocking(f, *args):
            return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)
    else:
        run_blocking = maybeDeferred
    auth = Authenticator(PasswdFile(settings.passwd), TokenStore(reactor, settings.token_ttl),
                         LoginLimiter(reactor), enabled=enabled, max_body=settings.max_body,
                         run_blocking=run_blocking, trusted_proxies=trusted_proxies)
    https = (lambda request: True) if settings.access_cookie_secure else auth.https
    operations = InstanceOperations(runtime, waker, policy, stop_timeout=stop_timeout,
                                    pull=settings.pull, max_body=settings.max_body, activity=activity, clock=reactor,
                                    access_keys=access.keys, access_ttl=access.ttl, access_cookie=access.cookie,
                                    https=https)
    root = _Root()
    root.putChild(b"healthz", _Health(runtime))
    root.putChild(b"openapi.json", _Document(openapi_document()))
    root.putChild(b"login", _Login(auth))
    root.putChild(b"deploy", _Deploy(auth, operations))
    root.putChild(b"ui", _Ui())
    root.putChild(b"metrics", _Metrics(metrics if metrics is not None else CollectorRegistry(),
                                       auth if settings.metrics_auth else None))
    if peer_secret:
        root.putChild(b"peer", PeerResource(waker if peer_fences is None else peer_fences, peer_secret))
    return root
