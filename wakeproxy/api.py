# -*- test-case-name: tests.test_api_unit -*-
"""
The deploy API's resource tree, served on C{--api-listen}: the old spawner's routes and body shapes
(seed-spawner.md §2), without its bugs.

    GET    /healthz                     no auth: 200 once the engine has answered
    GET    /openapi.json                no auth: the OpenAPI 3 description (wakeproxy/openapi.json)
    POST   /login                       {"username", "password"} -> {"token"}; failures are rate-limited
    GET    /deploy  (or /deploy/)       the managed instances   } everything under /deploy needs a token:
    POST   /deploy  (or /deploy/)       create, then start: 201  } 'Authorization: Bearer T' or 'token: T'
    GET    /deploy/<name>               one instance
    PUT    /deploy/<name>[?wait=ready]  start it (and wait until it is ready, through the proxy's waker)
    POST   /deploy/<name>/stop          stop it
    DELETE /deploy/<name>[?force]       stop it, then remove it

Every error is application/problem+json. Bodies are checked by L{wakeproxy.deployspec}, credentials by
L{wakeproxy.auth}; the operations themselves are in L{wakeproxy.instances}.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Callable, Optional
from urllib.parse import unquote

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from .auth import LoginLimiter, PasswdFile, TokenStore, verify_user
from .deployspec import BodyError, CreatePolicy, check_login, parse_json
from .instances import InstanceOperations, crashed, instance_document
from .metrics import Registry
from .problem import write_problem
from .reply import Reply
from .selector import valid_instance_name
from .statuspage import HEADERS as UI_HEADERS
from .statuspage import PAGE as UI_PAGE

__all__ = ["Authenticator", "api_resource", "instance_document", "openapi_document"]

log = Logger()

_CHALLENGE = {b"www-authenticate": b'Bearer realm="wakeproxy"'}


class Authenticator:
    """Signs users in (C{POST /login}) and tells who sends a request from its token."""

    log = Logger()

    def __init__(self, passwd: PasswdFile, tokens: TokenStore, limiter: LoginLimiter, enabled: bool = True,
                 max_body: int = 1024 * 1024, run_blocking: Callable[..., Deferred] = maybeDeferred):
        self.passwd = passwd
        self.tokens = tokens
        self.limiter = limiter
        self.enabled = enabled
        self.max_body = max_body
        #: runs the (deliberately slow) password check; in the reactor's thread pool when there is one.
        self._run_blocking = run_blocking

    def user(self, reply: Reply) -> Optional[str]:
        """Who sends this request, or None after answering 401. With --no-auth, everyone is 'anonymous'."""
        if not self.enabled:
            return "anonymous"
        headers = reply.request.requestHeaders
        token = None
        for value in headers.getRawHeaders(b"authorization", []):
            scheme, _, credentials = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and credentials.strip():
                token = credentials.strip()
        if token is None:
            values = headers.getRawHeaders(b"token", [])  # the old spawner's header
            token = values[-1].strip() if values else None
        if not token:
            why = "this endpoint needs a token: get one with POST /login and send 'Authorization: Bearer <token>'"
        else:
            user, why = self.tokens.check(token.decode("latin-1"))
            if user is not None:
                return user
        reply.problem(401, why, headers=_CHALLENGE)
        return None

    def login(self, reply: Reply) -> None:
        raw = reply.body(self.max_body)
        if raw is None:
            return
        try:
            user, password = check_login(parse_json(raw))
        except BodyError as e:
            reply.problem(e.status, e.detail, errors=[x.as_dict() for x in e.errors])
            return
        address = _client(reply.request)
        wait = self.limiter.retry_after(address, user)
        if wait is not None:
            self.log.warn("deploy API: sign-in from {address} refused: too many failures from there or for that user",
                          address=address)
            reply.problem(429, "too many failed sign-ins; try again in {} s".format(wait), retry_after=wait)
            return
        attempt = self.limiter.failed(address, user)  # counts until it succeeds, so concurrent guesses count
        d = self._run_blocking(verify_user, self.passwd.stored(user), password)
        d.addCallback(self._checked, reply, address, user, attempt)
        d.addErrback(crashed, reply)

    def _checked(self, ok: bool, reply: Reply, address: str, user: str, attempt: float) -> None:
        if not ok:
            self.log.warn("deploy API: failed sign-in for {who} from {address}", address=address,
                          who=user if self.passwd.known(user) else "an unknown user")
            reply.problem(401, "login invalid: wrong user name or password", headers=_CHALLENGE)
            return
        self.limiter.succeeded(address, user, attempt)
        self.log.info("deploy API: {user} signed in from {address}", user=user, address=address)
        reply.json(200, {"token": self.tokens.issue(user), "token_type": "Bearer",
                         "expires_in": int(self.tokens.ttl)})


def _client(request) -> str:
    address = request.getClientAddress()
    return getattr(address, "host", None) or str(getattr(address, "name", None) or "local")


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


#: method -> operation, for the collection, one instance, and its stop action.
_COLLECTION = {b"GET": "list", b"HEAD": "list", b"POST": "create"}
_INSTANCE = {b"GET": "show", b"HEAD": "show", b"PUT": "start", b"DELETE": "delete"}
_STOP = {b"POST": "stop"}


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
            if name is None or not valid_instance_name(name) or runtime.get(name) is None:
                reply.problem(404, "no managed instance named {}".format(json.dumps((name or "?")[:128])))
                return NOT_DONE_YET
            args = (name,)
            if len(segments) == 1:
                routes = _INSTANCE
            elif segments[1:] == [b"stop"]:
                routes = _STOP
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
    return files("wakeproxy").joinpath("openapi.json").read_bytes()


class _Ui(_Readable):
    """C{GET /ui}: the status page (static; its script uses the API with the operator's token)."""

    def render_GET(self, request):
        for name, value in UI_HEADERS:
            request.setHeader(name, value)
        return UI_PAGE


class _Metrics(_Readable):
    """C{GET /metrics}: Prometheus text exposition (no secrets, low-cardinality labels)."""

    def __init__(self, registry):
        _Readable.__init__(self)
        self._registry = registry

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        return self._registry.render()


def api_resource(options, runtime, waker, reactor, activity=None, metrics=None) -> Resource:
    enabled = not options["no-auth"]
    if not enabled:
        log.warn("--no-auth: the deploy API on {listen} lets ANYONE who can connect create, start, stop and remove "
                 "containers; use it for local demos only", listen=options["api-listen"])
    elif options["passwd"] is None:
        log.warn("no --passwd: nobody can use the deploy API; give --passwd FILE or --no-auth")
    if IReactorThreads.providedBy(reactor):
        def run_blocking(f, *args):
            return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)
    else:
        run_blocking = maybeDeferred
    auth = Authenticator(PasswdFile(options["passwd"]), TokenStore(reactor, options["token-ttl"]),
                         LoginLimiter(reactor), enabled=enabled, max_body=options["max-api-body"],
                         run_blocking=run_blocking)
    operations = InstanceOperations(runtime, waker, CreatePolicy.from_options(options),
                                    stop_timeout=options["stop-timeout"], pull=options["pull"] == "missing",
                                    max_body=options["max-api-body"], activity=activity)
    root = _Root()
    root.putChild(b"healthz", _Health(runtime))
    root.putChild(b"openapi.json", _Document(openapi_document()))
    root.putChild(b"login", _Login(auth))
    root.putChild(b"deploy", _Deploy(auth, operations))
    root.putChild(b"ui", _Ui())
    root.putChild(b"metrics", _Metrics(metrics if metrics is not None else Registry()))
    return root
