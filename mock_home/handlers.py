"""mock_home's HTTP handler (on L{demo_http}): routing, cookies, forms, and the sign-in/create/open actions."""

import re
import secrets
import time
from urllib.parse import parse_qs, unquote, urlsplit

import demo_http
from demo_http import ClientGone, HttpError

from mock_home import csrf
from mock_home.apiclient import ApiDown, ApiError, user_instance
from mock_home.config import (INSTANCE_COOKIE, LOGIN_COOKIE, LOGIN_COOKIE_SECONDS, MAX_FORM, SESSION_COOKIE,
                              USER_LABEL, NAME_RE, instance_name)
from mock_home.pages import dashboard_body, error_html, esc, render_page, signin_body


class AppState(demo_http.ServerState):
    """The deploy API client, the sessions, the sign-in form's CSRF tokens, in-flight requests and the stop signal (no idle deadline)."""

    def __init__(self, config, api, sessions, login_tokens):
        super().__init__()
        self.config = config
        self.api = api
        self.sessions = sessions
        self.login_tokens = login_tokens


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
        if not csrf.matches(form.get("csrf", ""), session.csrf):
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
        self._page(status, "Sign in", signin_body(state.login_tokens.token(nonce), error, username), headers)

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
        if not state.login_tokens.valid(nonce, form.get("csrf", "")):
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
        except (ApiDown, ApiError) as e:
            if isinstance(e, ApiError) and e.status == 409:
                return self._dashboard(state, session, 409, "Cannot create %s: %s" % (name, e.detail))
            return self._api_failed(state, session, e, "The deploy API could not create %s" % name)
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
        except (ApiDown, ApiError) as e:
            return self._api_failed(state, session, e, "The deploy API refused to list instances")
        if name is None:
            target = user_instance(instances, session.user)
        else:
            target = None
            if NAME_RE.fullmatch(name):
                for item in instances:
                    labels = item.get("labels")
                    if item["name"] == name and isinstance(labels, dict) and labels.get(USER_LABEL) == session.user:
                        target = item
        if target is None:
            return self._not_yours(name)
        try:
            access = state.api.access(session.token, target["name"])
        except (ApiDown, ApiError) as e:
            if isinstance(e, ApiError) and e.status == 404:
                return self._not_yours(name)
            return self._api_failed(state, session, e, "The deploy API refused access to %s" % target["name"])
        cookies = [("Set-Cookie", self._cookie_header(INSTANCE_COOKIE, target["name"], "/"))]
        if access is not None:  # else wakeproxy runs without access tokens (--access open)
            cookie_name, token, expires = access
            cookies.append(("Set-Cookie", self._cookie_header(cookie_name, token, "/",
                                                              max_age=max(1, expires - int(time.time())))))
        self._redirect("/", cookies)

    def _api_failed(self, state, session, error, refused):
        """
        A deploy API call for a signed-in user failed: unreachable (502, the instance unknown), the token
        expired (401: sign in again), or refused (502 on the dashboard: C{refused} and the API's detail).
        """
        if isinstance(error, ApiDown):
            return self._page(502, "Home", dashboard_body(session, None, str(error), unknown=True))
        if error.status == 401:
            return self._expired(state, session)
        return self._dashboard(state, session, 502, "%s: %s" % (refused, error.detail))

    def _not_yours(self, name):
        what = "that instance" if name is None else "the instance %s" % name
        self._page(403, "Not yours", error_html("You cannot open %s: it is not yours, or it does not exist." % what)
                   + "<p><a href=\"/home\">Home</a></p>\n")
