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

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
# the mock_home package's parent, and demo_http: next to it in the image (/app), ../demo_http in the repo
sys.path[:0] = [os.path.dirname(_HERE), os.path.join(_HERE, os.pardir, "demo_http")]
import demo_http  # noqa: E402

from mock_home.apiclient import Api  # noqa: E402
from mock_home.config import Config  # noqa: E402
from mock_home.csrf import LoginTokens  # noqa: E402
from mock_home.handlers import AppState, Handler  # noqa: E402
from mock_home.sessions import Sessions  # noqa: E402

log = demo_http.make_log("mock_home")


def main():
    """Serve until SIGTERM/SIGINT; return the exit status."""
    config = Config(os.environ)
    state = AppState(config, Api(config.api_url), Sessions(), LoginTokens())
    state.catch_signals()
    address = demo_http.listen_address(8080, log)
    if address is None:
        return 2
    return demo_http.serve(address, Handler, state, log, "api=%s image=%s network=%s idle-timeout=%s" % (
        config.api_url, config.image, config.network, config.idle_timeout))


if __name__ == "__main__":
    sys.exit(main())
