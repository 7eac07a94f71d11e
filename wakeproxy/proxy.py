# -*- test-case-name: tests.test_proxy -*-
"""The proxy listener's resource (placeholder until the waker lands: every request gets 503)."""

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from .problem import write_problem

__all__ = ["proxy_resource"]


class _NotYet(Resource):
    isLeaf = True

    def render(self, request):
        write_problem(request, 503, "wakeproxy does not proxy yet", retry_after=5)
        return NOT_DONE_YET


def proxy_resource(options, runtime, reactor) -> Resource:
    return _NotYet()
