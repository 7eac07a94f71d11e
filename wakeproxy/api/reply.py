# -*- test-case-name: tests.test_api_unit -*-
"""
One deploy API request being answered: its bounded body, a JSON answer or a problem+json one, and
whether its client went away meanwhile (then nothing more is written: a twisted.web request must not be
finished after its connection is lost).
"""

from __future__ import annotations

import json
from typing import Any, Optional
from urllib.parse import parse_qsl

from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure

from wakeproxy.answers import for_wake_failure, write_json, write_problem

__all__ = ["Reply", "crashed", "not_found"]

log = Logger()


class Reply:
    def __init__(self, request):
        self.request = request
        self.gone = False
        request.notifyFinish().addErrback(self._lost)

    def _lost(self, _) -> None:
        self.gone = True

    @property
    def done(self) -> bool:
        """True once answered, or once the client is gone."""
        return self.gone or bool(self.request.finished)

    def body(self, limit: int) -> Optional[bytes]:
        """The request body, or None after answering 413 when it is larger than C{limit} bytes."""
        content = self.request.content
        if content is None:
            return b""
        content.seek(0, 2)
        size = content.tell()
        content.seek(0)
        if getattr(self.request, "body_too_large", False):
            size = self.request.body_length  # not stored (see bodylimit.py), only counted
        if size > limit:
            self.problem(413, "the request body ({} bytes) is larger than the {} bytes the deploy API accepts "
                              "(--max-api-body)".format(size, limit))
            return None
        return content.read()

    def query(self, name: str) -> Optional[str]:
        """The last value of query parameter C{name} (C{""} for a bare C{?name}), or None when absent."""
        _, _, query = self.request.uri.partition(b"?")
        values = [v for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True) if k == name]
        return values[-1] if values else None

    def json(self, status: int, doc: Any, headers: Optional[dict] = None) -> None:
        if not self.done:
            write_json(self.request, status, doc, headers)

    def problem(self, status: int, detail: str, retry_after: Optional[int] = None, headers: Optional[dict] = None,
                **extra: Any) -> None:
        if not self.done:
            write_problem(self.request, status, detail, retry_after, headers, **extra)

    def wake_failed(self, error) -> None:
        """Answer with the problem for a failed wake (L{for_wake_failure})."""
        problem = for_wake_failure(error)
        self.problem(problem.status, problem.detail, problem.retry_after, **problem.extra)


def crashed(failure: Failure, reply: Reply) -> None:
    """The last errback of every chain: a bug, logged with its traceback and answered 500."""
    if failure.check(CancelledError) and reply.gone:
        return
    log.failure("deploy API: {method} {path} failed", failure, method=reply.request.method.decode("latin-1"),
                path=reply.request.path.decode("latin-1")[:200])
    reply.problem(500, "wakeproxy failed unexpectedly; its log says why")


def not_found(reply: Reply, name: Optional[str]) -> None:
    """The one answer for a name that does not exist, is not managed, or is someone else's."""
    reply.problem(404, "no managed instance named {}".format(json.dumps((name or "?")[:128])))
