"""mock_home's HTML: the page frame, the sign-in form and the dashboard, and Docker states in words."""

import html

from mock_home.config import DEFAULT_SITE_NAME, instance_name


def esc(value):
    """HTML-escape anything (quotes included)."""
    return html.escape("" if value is None else str(value), quote=True)


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
