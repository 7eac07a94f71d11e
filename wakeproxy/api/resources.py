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

import base64
import binascii
import json
from importlib.resources import files
from typing import Callable, Optional
from urllib.parse import unquote

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from wakeproxy.api.auth import LoginLimiter, PasswdFile, TokenStore, User, client_address, is_trusted, verify_user
from wakeproxy.api.deployspec import BodyError, CreatePolicy, check_login, parse_json
from wakeproxy.api.instances import InstanceOperations, crashed, instance_document, not_found
from wakeproxy.metrics import Registry
from wakeproxy.answers import write_problem
from wakeproxy.api.peer import PeerResource
from wakeproxy.api.reply import Reply
from wakeproxy.http.selector import valid_instance_name
from wakeproxy.api.statuspage import HEADERS as UI_HEADERS
from wakeproxy.api.statuspage import PAGE as UI_PAGE

__all__ = ["Authenticator", "api_resource", "instance_document", "openapi_document"]

log = Logger()

_CHALLENGE = {b"www-authenticate": b'Bearer realm="wakeproxy"'}
_METRICS_CHALLENGE = {b"www-authenticate": b'Bearer realm="wakeproxy", Basic realm="wakeproxy"'}


class Authenticator:
    """
    Signs users in (C{POST /login}) and tells who sends a request from its token: the token names the
    user, the passwd file says (on every request) whether they still exist and whether they are an admin.
    """

    log = Logger()

    def __init__(self, passwd: PasswdFile, tokens: TokenStore, limiter: LoginLimiter, enabled: bool = True,
                 max_body: int = 1024 * 1024, run_blocking: Callable[..., Deferred] = maybeDeferred,
                 trusted_proxies=()):
        self.passwd = passwd
        self.tokens = tokens
        self.limiter = limiter
        self.enabled = enabled
        self.max_body = max_body
        #: runs the (deliberately slow) password check; in the reactor's thread pool when there is one.
        self._run_blocking = run_blocking
        #: --trusted-proxy networks: their X-Forwarded-For / X-Forwarded-Proto are believed
        self.trusted_proxies = list(trusted_proxies)

    def user(self, reply: Reply, challenge: dict = _CHALLENGE) -> Optional[User]:
        """Who sends this request, or None after answering 401. With --no-auth, everyone is an 'anonymous' admin."""
        if not self.enabled:
            return User("anonymous", admin=True)
        token = self._token(reply.request)
        if not token:
            why = "this endpoint needs a token: get one with POST /login and send 'Authorization: Bearer <token>'"
        else:
            name, why = self.tokens.check(token.decode("latin-1"))
            if name is not None:
                account = self.passwd.account(name)
                if account is not None:
                    return User(name, account.admin)
                why = "the token's user is no longer in the passwd file"
        reply.problem(401, why, headers=challenge)
        return None

    @staticmethod
    def _token(request) -> Optional[bytes]:
        headers = request.requestHeaders
        token = None
        for value in headers.getRawHeaders(b"authorization", []):
            scheme, _, credentials = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and credentials.strip():
                token = credentials.strip()
        if token is None:
            values = headers.getRawHeaders(b"token", [])  # the old spawner's header
            token = values[-1].strip() if values else None
        return token

    def client(self, request) -> str:
        """The real client's address: the peer's, or what --trusted-proxy peers say in X-Forwarded-For."""
        values = [v.decode("latin-1") for v in request.requestHeaders.getRawHeaders(b"x-forwarded-for", [])]
        return client_address(_peer(request), values, self.trusted_proxies)

    def https(self, request) -> bool:
        """Was the request made over https: TLS here, or X-Forwarded-Proto from a --trusted-proxy peer."""
        if request.isSecure():
            return True
        if not is_trusted(_peer(request), self.trusted_proxies):
            return False
        protos = b",".join(request.requestHeaders.getRawHeaders(b"x-forwarded-proto", []))
        return b"https" in [p.strip().lower() for p in protos.split(b",")]

    def login(self, reply: Reply) -> None:
        raw = reply.body(self.max_body)
        if raw is None:
            return
        try:
            user, password = check_login(parse_json(raw))
        except BodyError as e:
            reply.problem(e.status, e.detail, errors=[x.as_dict() for x in e.errors])
            return
        self.check_password(reply, user, password).addCallback(self._signed_in, reply).addErrback(crashed, reply)

    def check_password(self, reply: Reply, user: str, password: str) -> Deferred:
        """
        Fires with the L{User} when C{password} is right, else with None after answering (401, or 429 when
        too many sign-ins failed from that address or for that user). Always costs one slow hash when it
        gets as far as checking.
        """
        address = self.client(reply.request)
        wait = self.limiter.retry_after(address, user)
        if wait is not None:
            self.log.warn("deploy API: sign-in for {who} from {address} refused: too many failures from there or "
                          "for that user", address=address, who=user if self.passwd.known(user) else "an unknown user")
            reply.problem(429, "too many failed sign-ins; try again in {} s".format(wait), retry_after=wait)
            return succeed(None)
        attempt = self.limiter.begin(address, user)  # counts until it ends, so concurrent guesses count
        d = self._run_blocking(verify_user, self.passwd.stored(user), password)
        d.addCallback(self._checked, reply, attempt)
        return d

    def _checked(self, ok: bool, reply: Reply, attempt) -> Optional[User]:
        account = self.passwd.account(attempt.user) if ok else None
        if account is None:
            self.limiter.failed(attempt)
            self.log.warn("deploy API: failed sign-in for {who} from {address}", address=attempt.address,
                          who=attempt.user if self.passwd.known(attempt.user) else "an unknown user")
            reply.problem(401, "login invalid: wrong user name or password", headers=_CHALLENGE)
            return None
        self.limiter.succeeded(attempt)
        self.log.info("deploy API: {user} signed in from {address}{admin}", user=attempt.user, address=attempt.address,
                      admin=" (admin)" if account.admin else "")
        return User(attempt.user, account.admin)

    def _signed_in(self, user: Optional[User], reply: Reply) -> None:
        if user is not None:
            reply.json(200, {"token": self.tokens.issue(user.name), "token_type": "Bearer",
                             "expires_in": int(self.tokens.ttl)})

    def metrics_reader(self, reply: Reply) -> Deferred:
        """
        Fires with the L{User} allowed to read /metrics: a token's (Bearer), or a passwd user's (Basic, for
        scrapers that cannot sign in; checked like a sign-in, limits included); else None after a 401.
        """
        if not self.enabled:
            return succeed(User("anonymous", admin=True))
        for value in reply.request.requestHeaders.getRawHeaders(b"authorization", []):
            scheme, _, credentials = value.strip().partition(b" ")
            if scheme.lower() == b"basic":
                try:
                    user, sep, password = base64.b64decode(credentials.strip(), validate=True).decode("utf-8").partition(":")
                except (binascii.Error, UnicodeDecodeError):
                    sep = ""
                if not sep or not user:
                    reply.problem(401, "malformed Basic credentials", headers=_METRICS_CHALLENGE)
                    return succeed(None)
                return self.check_password(reply, user, password)
        return succeed(self.user(reply, _METRICS_CHALLENGE))


def _peer(request) -> str:
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
    C{GET /metrics}: Prometheus text exposition (no secrets, low-cardinality labels); with
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
                         run_blocking=run_blocking, trusted_proxies=options["trusted-proxy"])
    https = (lambda request: True) if options["access-cookie-secure"] else auth.https
    operations = InstanceOperations(runtime, waker, CreatePolicy.from_options(options),
                                    stop_timeout=options["stop-timeout"], pull=options["pull"] == "missing",
                                    max_body=options["max-api-body"], activity=activity, clock=reactor,
                                    access_keys=options["access-keys"], access_ttl=options["access-ttl"],
                                    access_cookie=options["access-cookie"], https=https)
    root = _Root()
    root.putChild(b"healthz", _Health(runtime))
    root.putChild(b"openapi.json", _Document(openapi_document()))
    root.putChild(b"login", _Login(auth))
    root.putChild(b"deploy", _Deploy(auth, operations))
    root.putChild(b"ui", _Ui())
    root.putChild(b"metrics", _Metrics(metrics if metrics is not None else Registry(),
                                       auth if options["metrics-auth"] else None))
    if options.get("peer-secret"):
        root.putChild(b"peer", PeerResource(waker, options["peer-secret"]))
    return root
