# -*- test-case-name: tests.test_peers -*-
"""
C{POST /peer/fence/<name>} and C{POST /peer/release/<name>} on the API listener: what a peer replica
asks of this one before it stops an instance (the protocol: L{wakeproxy.waking.peers}). Authenticated
with the shared secret (C{Authorization: Bearer}, compared in constant time); every error is
problem+json. The fences are the waker's, or on the API listener of a C{--workers} group's first
process its whole group's (L{wakeproxy.waking.peers.GroupFences}, answering with a Deferred).
"""

from __future__ import annotations

import hmac
import json
from typing import Optional
from urllib.parse import unquote

from twisted.internet.defer import maybeDeferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from wakeproxy.answers import write_problem
from wakeproxy.api.reply import Reply, crashed

__all__ = ["PeerResource", "MAX_FENCE_SECONDS"]

#: the longest fence a peer may ask for
MAX_FENCE_SECONDS = 300.0
_MAX_BODY = 4096


class PeerResource(Resource):
    """C{/peer/<verb>/<name>}: verb C{fence} or C{release}, on C{fences} (the waker, or a L{GroupFences})."""

    isLeaf = True

    def __init__(self, fences, secret: str):
        Resource.__init__(self)
        self._fences = fences
        self._secret = b"Bearer " + secret.encode("utf-8")

    def render(self, request):
        given = request.getHeader(b"authorization") or b""
        if not hmac.compare_digest(given, self._secret):
            write_problem(request, 401, "peer calls need the shared secret (Authorization: Bearer)",
                          headers={b"www-authenticate": b'Bearer realm="wakeproxy peers"'})
            return NOT_DONE_YET
        if len(request.postpath) != 2 or request.postpath[0] not in (b"fence", b"release"):
            write_problem(request, 404, "peer endpoints are /peer/fence/<name> and /peer/release/<name>")
            return NOT_DONE_YET
        if request.method != b"POST":
            write_problem(request, 405, "only POST is allowed here", headers={b"allow": b"POST"})
            return NOT_DONE_YET
        verb, raw = request.postpath
        name = _name(raw)
        doc = _body(request)
        token = doc.get("token") if isinstance(doc, dict) else None
        if name is None or not isinstance(token, str) or not 0 < len(token) <= 128:
            write_problem(request, 400, "give the instance name in the path and a JSON body with a \"token\" "
                                        "(1 to 128 characters)")
            return NOT_DONE_YET
        if verb == b"release":
            released = maybeDeferred(self._fences.release, name, token)
            return _answer(request, released.addCallback(lambda done: {"released": done}))
        seconds = doc.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= MAX_FENCE_SECONDS:
            write_problem(request, 400, "\"seconds\" must be a number above 0 and at most {:g}".format(
                MAX_FENCE_SECONDS))
            return NOT_DONE_YET
        return _answer(request, maybeDeferred(self._fences.fence, name, token, float(seconds)))


def _answer(request, document):
    """Answer 200 with the JSON C{document} (a Deferred) fires with, unless the client left; 500 if it fails."""
    reply = Reply(request)
    document.addCallback(lambda doc: reply.json(200, doc)).addErrback(crashed, reply)
    return NOT_DONE_YET


def _name(raw: bytes) -> Optional[str]:
    try:
        name = unquote(raw.decode("ascii"), errors="strict")
    except UnicodeError:
        return None
    return name if 0 < len(name) <= 255 else None


def _body(request):
    data = request.content.read(_MAX_BODY + 1) if request.content is not None else b""
    if len(data) > _MAX_BODY:
        return None
    try:
        return json.loads(data or b"null")
    except ValueError:
        return None
