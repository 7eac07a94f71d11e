# -*- test-case-name: tests.test_api -*-
"""The deploy API's resource tree, served on C{--api-listen}."""

import json

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from .problem import write_problem

__all__ = ["api_resource"]


class _Health(Resource):
    """C{GET /healthz}: 200 once the runtime has listed the engine's containers, else 503."""

    isLeaf = True

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


class _Root(Resource):
    def getChild(self, path, request):
        return _NotFound()


class _NotFound(Resource):
    isLeaf = True

    def render(self, request):
        write_problem(request, 404, "no such API endpoint: {}".format(request.path.decode("latin-1")))
        return NOT_DONE_YET


def api_resource(options, runtime, waker, reactor) -> Resource:
    root = _Root()
    root.putChild(b"healthz", _Health(runtime))
    return root
