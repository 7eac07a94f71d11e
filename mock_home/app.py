"""mock_home: the home site of wakeproxy (Python standard library only).

A user signs in, sees their instance and its state, creates it if they have none, and "opens" it:
that sets the routing cookie ``instance=<name>`` and, when wakeproxy asks for access tokens
(``--access signed``), the access cookie ``wakeproxy_access=<token>`` from ``POST /deploy/<name>/access``,
and redirects to ``/``, where wakeproxy routes (and, if needed, wakes) the instance.  Everything about
users and instances goes through wakeproxy's deploy API, server side: sign-in is ``POST /login`` with the
submitted credentials and the user's address in ``X-Forwarded-For`` (mock_home never reads a password
file), and the token it returns is kept here, in memory, in a session named by the cookie ``home_session``.

Routes:

* ``GET /home``               sign-in form, or the signed-in user's instance (create / open / sign out)
* ``POST /home/login``        form ``username``, ``password``, ``csrf``
* ``POST /home/create``       creates ``u-<user>`` through the deploy API
* ``POST /home/open``         sets ``instance=<name>`` (and the access cookie) and 303 to ``/``
* ``POST /home/logout``       ends the session
* ``GET /home/<name>``        the old mock-home shortcut: the cookie for one of *your* instances, 303 to ``/``
* ``GET /home/healthz``       200 JSON (no API call)

Every page names the site (``SITE_NAME``) in its title and above its heading.  The instance's Docker
state and health are shown the way a person reads them (``awake``, ``waking``, ``asleep``...; see
``state_words``), with the raw values in a detail line.

"Your instance" is the one whose label ``mock-home.user`` is your user name.  Every POST form carries
a CSRF token: the session's, or for the sign-in form an HMAC of the ``home_login`` cookie.

Environment: ``PORT`` (8080), ``HOST`` (0.0.0.0), ``API_URL`` (http://127.0.0.1:8008),
``INSTANCE_IMAGE`` (mock-app:latest), ``INSTANCE_NETWORK`` (host), ``INSTANCE_IDLE_TIMEOUT`` (5m),
``INSTANCE_ROUTER_RULE`` (0; 1: send the anchored cookie rule, for a wakeproxy with --allow-router-rules
and without --router-labels), ``SITE_NAME`` (wakeproxy demo).

SIGTERM/SIGINT: stop accepting, let in-flight requests finish (at most 2 s), exit 0.
"""

import hashlib
import hmac
import html
import json
import os
import re
import secrets
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import parse_qs, quote, unquote, urlsplit

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "demo_http"))
import demo_http  # noqa: E402  (next to app.py in the images, ../demo_http in the repo)
from demo_http import ClientGone, HttpError  # noqa: E402

SESSION_COOKIE = "home_session"
LOGIN_COOKIE = "home_login"
INSTANCE_COOKIE = "instance"
#: the access cookie's name when the API does not say (its answer's "cookie" starts with the name).
ACCESS_COOKIE = "wakeproxy_access"
USER_LABEL = "mock-home.user"
#: Deploy API tokens live 60 minutes by default; a session ends a little before its token.
SESSION_SECONDS = 55 * 60
LOGIN_COOKIE_SECONDS = 24 * 3600
MAX_SESSIONS = 10000
API_TIMEOUT = 30.0
MAX_FORM = 64 * 1024
HOST_NETWORK = "host"
BRIDGE_PORT = 9000
NAME_PREFIX = "u-"
MAX_NAME_PART = 40
#: Paths under /home that are pages, not instance names for the GET /home/<name> shortcut.
RESERVED = ("healthz", "login", "create", "open", "logout")
DEFAULT_SITE_NAME = "wakeproxy demo"

_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")

log = demo_http.make_log("mock_home")


def esc(value):
    """HTML-escape anything (quotes included)."""
    return html.escape("" if value is None else str(value), quote=True)


def instance_name(user):
    """``u-`` and the user name lower-cased, other characters as ``-``, at most 40 of them."""
    part = re.sub(r"[^a-z0-9-]+", "-", user.lower()).strip("-")[:MAX_NAME_PART].strip("-")
    if not part:
        part = hashlib.sha256(user.encode("utf-8")).hexdigest()[:12]
    return NAME_PREFIX + part


def cookie_router_rule(name):
    """A Traefik rule matching exactly the cookie ``instance=<name>`` (not ``xinstance=``, not ``<name>0``)."""
    pattern = re.sub(r"([^A-Za-z0-9_-])", r"\\\1", name)
    return "HeadersRegexp(`Cookie`, `(^|;\\s*)%s=%s(;|$)`)" % (INSTANCE_COOKIE, pattern)


def free_local_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Config:
    def __init__(self, environ):
        self.api_url = (environ.get("API_URL") or "http://127.0.0.1:8008").strip().rstrip("/")
        self.image = (environ.get("INSTANCE_IMAGE") or "mock-app:latest").strip()
        self.network = (environ.get("INSTANCE_NETWORK") or HOST_NETWORK).strip()
        self.idle_timeout = (environ.get("INSTANCE_IDLE_TIMEOUT") or "5m").strip()
        self.router_rule = (environ.get("INSTANCE_ROUTER_RULE") or "0").strip().lower() in ("1", "true", "yes")
        self.site_name = (environ.get("SITE_NAME") or "").strip() or DEFAULT_SITE_NAME

    def deploy_body(self, user, name, port=None):
        """The ``POST /deploy`` body creating ``name`` for ``user``."""
        labels = {USER_LABEL: user, "wakeproxy.idle-timeout": self.idle_timeout}
        envs = {"IDLE": "0", "CONNSTR": "db for %s" % user}
        if self.network == HOST_NETWORK:
            port = str(port or free_local_port())
            labels["wakeproxy.port"] = port
            envs.update(PORT=port, HOST="127.0.0.1")
        else:
            port = str(BRIDGE_PORT)
            labels.update({
                "wakeproxy.port": port,
                "traefik.enable": "true",
                "traefik.http.services.%s.loadbalancer.server.port" % name: port,
            })
            if self.router_rule:  # else wakeproxy --router-labels writes the router itself
                labels["traefik.http.routers.%s.rule" % name] = cookie_router_rule(name)
            envs.update(PORT=port, HOST="0.0.0.0")
        return {"name": name, "network": self.network, "image": self.image, "labels": labels, "envs": envs}


# -- the deploy API, as a client -------------------------------------------------------------------


class ApiDown(Exception):
    """The deploy API could not be reached, or answered something that is not its API."""


class ApiError(Exception):
    """The deploy API answered an error status (its problem detail in ``detail``)."""

    def __init__(self, status, detail):
        Exception.__init__(self, "%s %s" % (status, detail))
        self.status = status
        self.detail = detail


class Api:
    def __init__(self, base_url, timeout=API_TIMEOUT):
        self.base_url = base_url
        self.timeout = timeout
        # No proxies from the environment: the API is usually on 127.0.0.1 or a private network.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method, path, token=None, body=None, forwarded_for=None):
        """The JSON document of a 2xx answer; ApiError for other statuses, ApiDown when unreachable."""
        headers = {"Accept": "application/json", "User-Agent": "mock_home/1.0"}
        if forwarded_for:
            headers["X-Forwarded-For"] = forwarded_for
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if token is not None:
            headers["Authorization"] = "Bearer " + token
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            try:
                raw = e.read()
            except Exception:
                raw = b""
            finally:
                e.close()
            raise ApiError(e.code, _problem_detail(raw, e.code))
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise ApiDown("the deploy API at %s is not reachable (%s)" % (self.base_url, reason))
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ApiDown("the deploy API at %s answered something that is not JSON" % (self.base_url,))

    def login(self, username, password, forwarded_for=None):
        """Sign in; ``forwarded_for`` (the user's address chain) lets the API limit failures per user address."""
        doc = self.call("POST", "/login", body={"username": username, "password": password},
                        forwarded_for=forwarded_for)
        token = doc.get("token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise ApiDown("the deploy API's /login answered without a token")
        expires_in = doc.get("expires_in")
        lifetime = SESSION_SECONDS
        if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool) and expires_in > 0:
            lifetime = min(lifetime, float(expires_in))
        return token, lifetime

    def instances(self, token):
        doc = self.call("GET", "/deploy", token=token)
        items = doc.get("instances") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            raise ApiDown("the deploy API's GET /deploy answered without an instance list")
        return [i for i in items if isinstance(i, dict) and isinstance(i.get("name"), str)]

    def create(self, token, body):
        return self.call("POST", "/deploy", token=token, body=body)

    def access(self, token, name):
        """``(cookie name, token, expires)`` for using instance ``name`` through wakeproxy, or None when the
        API answers 409 (it runs without access tokens)."""
        try:
            doc = self.call("POST", "/deploy/%s/access" % quote(name, safe=""), token=token)
        except ApiError as e:
            if e.status == 409:
                return None
            raise
        access = doc.get("token") if isinstance(doc, dict) else None
        expires = doc.get("expires") if isinstance(doc, dict) else None
        if not isinstance(access, str) or not access or not isinstance(expires, int) or isinstance(expires, bool):
            raise ApiDown("the deploy API's access answer has no token")
        cookie = doc.get("cookie")
        name = cookie.split("=", 1)[0].strip() if isinstance(cookie, str) and "=" in cookie else ""
        return (name if re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name) else ACCESS_COOKIE), access, expires


def _problem_detail(raw, status):
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        doc = None
    if isinstance(doc, dict):
        for key in ("detail", "message", "error", "title"):
            if isinstance(doc.get(key), str) and doc[key]:
                return doc[key]
    return "HTTP status %d" % status


def user_instance(instances, user):
    """The user's instance (label mock-home.user == user), or None."""
    mine = [i for i in instances if isinstance(i.get("labels"), dict) and i["labels"].get(USER_LABEL) == user]
    mine.sort(key=lambda i: i["name"])
    return mine[0] if mine else None


# -- sessions --------------------------------------------------------------------------------------


class Session:
    __slots__ = ("id", "user", "token", "csrf", "expires")

    def __init__(self, user, token, lifetime):
        self.id = secrets.token_urlsafe(32)
        self.user = user
        self.token = token
        self.csrf = secrets.token_urlsafe(32)
        self.expires = time.monotonic() + lifetime


class Sessions:
    """Signed-in sessions by id, in memory, each ending with its API token."""

    def __init__(self, limit=MAX_SESSIONS):
        self._lock = threading.Lock()
        self._by_id = {}
        self._limit = limit
        #: signs the sign-in form's CSRF token (an HMAC of the home_login cookie)
        self._secret = secrets.token_bytes(32)

    def new(self, user, token, lifetime):
        session = Session(user, token, lifetime)
        now = time.monotonic()
        with self._lock:
            for key in [k for k, s in self._by_id.items() if s.expires <= now]:
                del self._by_id[key]
            while len(self._by_id) >= self._limit:
                del self._by_id[next(iter(self._by_id))]  # the oldest
            self._by_id[session.id] = session
        return session

    def get(self, session_id):
        if not session_id:
            return None
        with self._lock:
            session = self._by_id.get(session_id)
            if session is not None and session.expires <= time.monotonic():
                del self._by_id[session_id]
                session = None
        return session

    def drop(self, session_id):
        with self._lock:
            self._by_id.pop(session_id, None)

    def login_csrf(self, nonce):
        return hmac.new(self._secret, b"login:" + nonce.encode("utf-8"), hashlib.sha256).hexdigest()


# -- pages -----------------------------------------------------------------------------------------

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;color:#222}"
          "#site{color:#555;margin:0;font-weight:600}h1{margin-top:.3rem}"
          "#error{color:#a00;border:1px solid #a00;padding:.5rem}"
          "label{display:block;margin:.5rem 0}form{margin:.75rem 0}code{font-size:1.05em}"
          ".state-awake{color:#070}.state-waking{color:#a60}.state-asleep{color:#36c}"
          ".state-gone,.state-unhealthy{color:#a00}.raw{color:#666;font-size:.85em}")

#: Docker's container states (other than running), as a person would say them, and the class that colours them.
_STATE_WORDS = {
    "created": ("asleep", "asleep"),
    "exited": ("asleep", "asleep"),
    "paused": ("paused (asleep)", "asleep"),
    "restarting": ("restarting", "waking"),
    "removing": ("gone", "gone"),
    "dead": ("gone", "gone"),
}


def state_words(state, health):
    """``(words, css class)`` for an instance's Docker state and health: a running instance is ``awake``
    (healthy, or without a health check), ``waking`` (health check starting) or ``awake but unhealthy``; a
    stopped one is ``asleep`` whatever its last health; a paused one ``paused (asleep)``; a dead or removed
    one ``gone``.  An unknown state is shown as it is."""
    state = (state or "").strip().lower() or "unknown"
    health = (health or "").strip().lower()
    if state == "running":
        if health == "starting":
            return "waking", "waking"
        if health == "unhealthy":
            return "awake but unhealthy", "unhealthy"
        return "awake", "awake"
    return _STATE_WORDS.get(state, (state, "unknown"))


def render_page(title, body, site=DEFAULT_SITE_NAME):
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            "<title>%s · %s</title><style>%s</style></head>\n<body>\n<p id=\"site\">%s</p>\n<h1>%s</h1>\n%s\n"
            "</body></html>\n" % (esc(title), esc(site), _STYLE, esc(site), esc(title), body))


def error_html(message):
    if not message:
        return ""
    return "<p id=\"error\" role=\"alert\">%s</p>\n" % esc(message)


def csrf_field(token):
    return "<input type=\"hidden\" name=\"csrf\" value=\"%s\">" % esc(token)


def signin_body(csrf, error=None, username=""):
    return (error_html(error)
            + "<p id=\"intro\">Sign in to see your instance. It sleeps when nobody uses it; opening it wakes "
              "it.</p>\n"
            + "<form id=\"signin-form\" method=\"post\" action=\"/home/login\">%s\n"
              "<label>User name <input id=\"username\" name=\"username\" autocomplete=\"username\" required "
              "value=\"%s\"></label>\n"
              "<label>Password <input id=\"password\" name=\"password\" type=\"password\" "
              "autocomplete=\"current-password\" required></label>\n"
              "<button id=\"signin\" type=\"submit\">Sign in</button>\n</form>\n"
            % (csrf_field(csrf), esc(username)))


def dashboard_body(session, instance, error=None, unknown=False):
    parts = ["<p>Signed in as <strong id=\"user\">%s</strong></p>\n" % esc(session.user), error_html(error)]
    if unknown:
        parts.append("<section id=\"instance\"><p>Your instance cannot be shown right now.</p></section>\n")
    elif instance is None:
        parts.append(
            "<section id=\"instance\"><p id=\"no-instance\">You have no instance yet.</p>\n"
            "<form method=\"post\" action=\"/home/create\">%s"
            "<button id=\"create\" type=\"submit\">Create my instance</button></form></section>\n"
            % csrf_field(session.csrf))
        parts.append("<p>It will be named <code>%s</code>.</p>\n" % esc(instance_name(session.user)))
    else:
        state = instance.get("state") or instance.get("status") or "unknown"
        health = instance.get("health")
        words, css = state_words(state, health)
        raw = "Docker: %s" % state + (", health: %s" % health if health else "")
        parts.append(
            "<section id=\"instance\"><p>Your instance <code id=\"instance-name\">%s</code> is "
            "<strong id=\"instance-state\" class=\"state-%s\" title=\"%s\">%s</strong>.</p>\n"
            "<p id=\"instance-raw\" class=\"raw\">%s</p>\n"
            "<form method=\"post\" action=\"/home/open\">%s"
            "<input type=\"hidden\" name=\"name\" value=\"%s\">"
            "<button id=\"open\" type=\"submit\">Open</button></form>\n"
            "<p>Opening sets the cookie <code>instance=%s</code>; an instance that is asleep is woken on the "
            "way.</p></section>\n"
            % (esc(instance["name"]), css, esc(raw), esc(words), esc(raw),
               csrf_field(session.csrf), esc(instance["name"]), esc(instance["name"])))
    parts.append("<form method=\"post\" action=\"/home/logout\">%s"
                 "<button id=\"signout\" type=\"submit\">Sign out</button></form>\n" % csrf_field(session.csrf))
    return "".join(parts)


# -- the server ------------------------------------------------------------------------------------


class AppState(demo_http.ServerState):
    """The deploy API client, the sessions, in-flight requests and the stop signal (no idle deadline)."""

    def __init__(self, config, api, sessions):
        super().__init__()
        self.config = config
        self.api = api
        self.sessions = sessions


class Handler(demo_http.DemoHandler):
    server_version = "mock_home/1.0"
    internal_error_message = "mock_home failed unexpectedly; its log says why."

    # -- plumbing ---------------------------------------------------------

    def _begin(self):
        self._user = None
        self._note = None
        self._body_read = False

    def _log_suffix(self):
        return ((" user=%s" % self._user if self._user else "")
                + (" (%s)" % self._note if self._note else ""))

    def _log_path(self):
        return urlsplit(self.path).path[:200]  # no query strings in the log

    def _https(self):
        proto = self.headers.get("X-Forwarded-Proto", "")
        return proto.split(",")[0].strip().lower() == "https"

    def _forwarded_for(self):
        """The user's address chain for the API: the X-Forwarded-For received, then this request's peer."""
        earlier = ", ".join(v.strip() for v in self.headers.get_all("X-Forwarded-For", []) if v.strip())
        peer = self.client_address[0] if self.client_address else ""
        return ", ".join(x for x in (earlier, peer) if x)

    def _cookie_header(self, name, value, path, max_age=None):
        parts = ["%s=%s" % (name, value), "Path=%s" % path, "HttpOnly", "SameSite=Lax"]
        if max_age is not None:
            parts.append("Max-Age=%d" % max_age)
        if self._https():
            parts.append("Secure")
        return "; ".join(parts)

    def _cookies(self):
        """Request cookies by name (the first value of each name wins)."""
        found = {}
        for header in self.headers.get_all("Cookie", []):
            for piece in header.split(";"):
                name, sep, value = piece.strip().partition("=")
                if sep and name and name not in found:
                    found[name] = value.strip().strip('"')
        return found

    def _closing(self):
        return super()._closing() or (self.command == "POST" and not self._body_read)

    def _send(self, status, body, content_type, headers=()):
        super()._send(status, body, content_type, [("Cache-Control", "no-store")] + list(headers))

    def _send_error(self, status, message):
        self._page(status, "Error", error_html(message))

    def _page(self, status, title, body_html, headers=()):
        body = render_page(title, body_html, self.server.state.config.site_name).encode("utf-8")
        headers = list(headers) + [
            ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                                        "frame-ancestors 'none'; base-uri 'none'"),
            ("X-Frame-Options", "DENY"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "same-origin"),
        ]
        self._send(status, body, "text/html; charset=utf-8", headers)

    def _redirect(self, location, headers=()):
        body = ("<!doctype html><a href=\"%s\">%s</a>\n" % (esc(location), esc(location))).encode("utf-8")
        self._send(303, body, "text/html; charset=utf-8", [("Location", location)] + list(headers))

    # -- request bodies ---------------------------------------------------

    def _form(self):
        """The urlencoded form in the body, as {name: last value}."""
        raw = self._read_body()
        self._body_read = True
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype not in ("application/x-www-form-urlencoded", ""):
            raise HttpError(415, "send the form as application/x-www-form-urlencoded")
        try:
            text = raw.decode("utf-8")
            fields = parse_qs(text, keep_blank_values=True, strict_parsing=False, errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise HttpError(400, "the form is not valid UTF-8")
        return {k: v[-1] for k, v in fields.items()}

    def _read_body(self):
        length = self._body_length("invalid Content-Length")
        if length is None:
            return self._read_chunked()
        if length > MAX_FORM:
            raise HttpError(413, "the form is too large")
        return self._read_exactly(length)

    def _read_exactly(self, count):
        data = self.rfile.read(count)
        if len(data) != count:
            raise ClientGone("body ended early")
        return data

    def _read_chunked(self):
        pieces = []
        total = 0
        for size in self._chunk_sizes():
            total += size
            if total > MAX_FORM:
                raise HttpError(413, "the form is too large")
            pieces.append(self._read_exactly(size))
        return b"".join(pieces)

    # -- routing ----------------------------------------------------------

    def _route(self, state):
        path = urlsplit(self.path).path
        method = self.command
        if path in ("/home", "/home/"):
            return self._only(("GET", "HEAD")) or self._home(state)
        if not path.startswith("/home/"):
            return self._not_found()
        rest = path[len("/home/"):]
        if rest.endswith("/"):
            rest = rest[:-1]
        if rest == "healthz":
            return self._only(("GET", "HEAD")) or self._send_json(200, {"status": "ok"})
        if rest in ("login", "create", "open", "logout"):
            if method in ("GET", "HEAD"):
                return self._redirect("/home")  # a reload after a POST, a bookmark...
            if self._only(("POST",)):
                return
            return getattr(self, "_post_" + rest)(state)
        if "/" in rest:
            return self._not_found()
        if self._only(("GET", "HEAD")):
            return
        return self._shortcut(state, unquote(rest))

    def _only(self, methods):
        """Answer 405 (and return True) unless the method is one of ``methods``."""
        if self.command in methods:
            return False
        self.close_connection = True  # any body is not read
        self._page(405, "Method not allowed", error_html("Use %s here." % " or ".join(methods)),
                   [("Allow", ", ".join(methods))])
        return True

    def _not_found(self):
        self.close_connection = self.close_connection or self.command not in ("GET", "HEAD")
        self._page(404, "Not found", error_html("There is nothing here.")
                   + "<p><a href=\"/home\">Home</a></p>\n")

    # -- sessions ---------------------------------------------------------

    def _session(self, state):
        session = state.sessions.get(self._cookies().get(SESSION_COOKIE))
        if session is not None:
            self._user = session.user
        return session

    def _clear_session_cookie(self):
        return ("Set-Cookie", self._cookie_header(SESSION_COOKIE, "", "/home", max_age=0))

    def _check_csrf(self, session, form):
        given = form.get("csrf", "")
        if not given or not hmac.compare_digest(given.encode("utf-8"), session.csrf.encode("utf-8")):
            raise HttpError(403, "This form has expired or did not come from this site. Reload /home and try again.")

    def _signed_in_form(self, state):
        """(session, form) for a POST from a signed-in user with a valid CSRF token; else answered, None."""
        form = self._form()
        session = self._session(state)
        if session is None:
            self._redirect("/home", [self._clear_session_cookie()])
            return None, None
        self._check_csrf(session, form)
        return session, form

    # -- pages ------------------------------------------------------------

    def _signin_page(self, state, status=200, error=None, username="", headers=()):
        nonce = self._cookies().get(LOGIN_COOKIE, "")
        headers = list(headers)
        if not re.fullmatch(r"[A-Za-z0-9_-]{16,64}", nonce):
            nonce = secrets.token_urlsafe(24)
            headers.append(("Set-Cookie", self._cookie_header(LOGIN_COOKIE, nonce, "/home",
                                                              max_age=LOGIN_COOKIE_SECONDS)))
        self._page(status, "Sign in", signin_body(state.sessions.login_csrf(nonce), error, username), headers)

    def _expired(self, state, session):
        state.sessions.drop(session.id)
        self._user = None
        self._signin_page(state, 401, "Your session has expired. Sign in again.",
                          headers=[self._clear_session_cookie()])

    def _dashboard(self, state, session, status=200, error=None, headers=()):
        """The signed-in page: the user's instance (fetched from the API) with an optional error."""
        try:
            instance = user_instance(state.api.instances(session.token), session.user)
        except ApiDown as e:
            return self._page(502, "Home", dashboard_body(session, None, error or str(e), unknown=True), headers)
        except ApiError as e:
            if e.status == 401:
                return self._expired(state, session)
            return self._page(502, "Home", dashboard_body(
                session, None, error or "The deploy API refused to list instances: %s" % e.detail, unknown=True),
                headers)
        self._page(status, "Home", dashboard_body(session, instance, error), headers)

    def _home(self, state):
        session = self._session(state)
        if session is None:
            headers = []
            if SESSION_COOKIE in self._cookies():
                headers.append(self._clear_session_cookie())
            return self._signin_page(state, headers=headers)
        self._dashboard(state, session)

    # -- actions ----------------------------------------------------------

    def _post_login(self, state):
        form = self._form()
        username = form.get("username", "")
        password = form.get("password", "")
        nonce = self._cookies().get(LOGIN_COOKIE, "")
        expected = state.sessions.login_csrf(nonce) if nonce else ""
        given = form.get("csrf", "")
        if not nonce or not given or not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
            return self._signin_page(state, 403, "This form has expired or did not come from this site. "
                                                 "Try again.", username)
        if not username or not password:
            return self._signin_page(state, 400, "Enter your user name and password.", username)
        try:
            token, lifetime = state.api.login(username, password, forwarded_for=self._forwarded_for())
        except ApiDown as e:
            return self._signin_page(state, 502, str(e), username)
        except ApiError as e:
            if e.status == 401:
                return self._signin_page(state, 401, "Wrong user name or password.", username)
            if e.status == 429:
                return self._signin_page(state, 429, "Too many failed sign-ins: %s" % e.detail, username)
            if e.status in (400, 413, 422):
                return self._signin_page(state, 400, "The deploy API refused these credentials: %s" % e.detail,
                                         username)
            return self._signin_page(state, 502, "The deploy API failed to sign you in: %s" % e.detail, username)
        old = self._cookies().get(SESSION_COOKIE)
        if old:
            state.sessions.drop(old)
        session = state.sessions.new(username, token, lifetime)
        self._user = username
        self._redirect("/home", [
            ("Set-Cookie", self._cookie_header(SESSION_COOKIE, session.id, "/home", max_age=int(lifetime))),
            ("Set-Cookie", self._cookie_header(LOGIN_COOKIE, "", "/home", max_age=0)),
        ])

    def _post_logout(self, state):
        session, form = self._signed_in_form(state)
        if session is None:
            return
        state.sessions.drop(session.id)
        self._redirect("/home", [self._clear_session_cookie()])

    def _post_create(self, state):
        session, form = self._signed_in_form(state)
        if session is None:
            return
        name = instance_name(session.user)
        try:
            existing = user_instance(state.api.instances(session.token), session.user)
            if existing is not None:
                return self._redirect("/home")  # a double submit: there is one already
            state.api.create(session.token, state.config.deploy_body(session.user, name))
        except ApiDown as e:
            return self._page(502, "Home", dashboard_body(session, None, str(e), unknown=True))
        except ApiError as e:
            if e.status == 401:
                return self._expired(state, session)
            if e.status == 409:
                return self._dashboard(state, session, 409, "Cannot create %s: %s" % (name, e.detail))
            return self._dashboard(state, session, 502, "The deploy API could not create %s: %s" % (name, e.detail))
        self._note = "created " + name
        self._redirect("/home")

    def _post_open(self, state):
        session, form = self._signed_in_form(state)
        if session is None:
            return
        self._open(state, session, form.get("name") or None)

    def _shortcut(self, state, name):
        """GET /home/<name>: the seed's cookie shortcut, for the signed-in user's own instances only."""
        session = self._session(state)
        if session is None:
            return self._redirect("/home")
        self._open(state, session, name)

    def _open(self, state, session, name):
        """Set the instance cookie for ``name`` (default: the user's instance) if it is theirs; 303 to /."""
        try:
            instances = state.api.instances(session.token)
        except ApiDown as e:
            return self._page(502, "Home", dashboard_body(session, None, str(e), unknown=True))
        except ApiError as e:
            if e.status == 401:
                return self._expired(state, session)
            return self._dashboard(state, session, 502, "The deploy API refused to list instances: %s" % e.detail)
        if name is None:
            target = user_instance(instances, session.user)
        else:
            target = None
            if _NAME_RE.fullmatch(name):
                for item in instances:
                    labels = item.get("labels")
                    if item["name"] == name and isinstance(labels, dict) and labels.get(USER_LABEL) == session.user:
                        target = item
        if target is None:
            return self._not_yours(name)
        try:
            access = state.api.access(session.token, target["name"])
        except ApiDown as e:
            return self._page(502, "Home", dashboard_body(session, None, str(e), unknown=True))
        except ApiError as e:
            if e.status == 401:
                return self._expired(state, session)
            if e.status == 404:
                return self._not_yours(name)
            return self._dashboard(state, session, 502, "The deploy API refused access to %s: %s" % (
                target["name"], e.detail))
        cookies = [("Set-Cookie", self._cookie_header(INSTANCE_COOKIE, target["name"], "/"))]
        if access is not None:  # else wakeproxy runs without access tokens (--access open)
            cookie_name, token, expires = access
            cookies.append(("Set-Cookie", self._cookie_header(cookie_name, token, "/",
                                                              max_age=max(1, expires - int(time.time())))))
        self._redirect("/", cookies)

    def _not_yours(self, name):
        what = "that instance" if name is None else "the instance %s" % name
        self._page(403, "Not yours", error_html("You cannot open %s: it is not yours, or it does not exist." % what)
                   + "<p><a href=\"/home\">Home</a></p>\n")


def main():
    """Serve until SIGTERM/SIGINT; return the exit status."""
    config = Config(os.environ)
    state = AppState(config, Api(config.api_url), Sessions())
    state.catch_signals()
    address = demo_http.listen_address(8080, log)
    if address is None:
        return 2
    return demo_http.serve(address, Handler, state, log, "api=%s image=%s network=%s idle-timeout=%s" % (
        config.api_url, config.image, config.network, config.idle_timeout))


if __name__ == "__main__":
    sys.exit(main())
