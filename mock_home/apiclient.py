"""mock_home's client of wakeproxy's deploy API (urllib, JSON, problem details to L{ApiError})."""

import json
import re
import urllib.error
import urllib.request
from urllib.parse import quote

from mock_home.config import ACCESS_COOKIE, API_TIMEOUT, SESSION_SECONDS, USER_LABEL


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
