"""
mock_home's settings: cookie and label names, limits, the environment (L{Config}) and what an instance is
called and how it is created (L{instance_name}, L{cookie_router_rule}, L{Config.deploy_body}).
"""

import hashlib
import re
import socket

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

NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")


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
