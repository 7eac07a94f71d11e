# -*- test-case-name: tests.test_bodylimit -*-
"""
A twisted.web Request that stops storing its body past a limit. twisted.web buffers every request body
(in memory, or a temp file beyond 100 KB) before the resource sees it; for the deploy API, whose bodies
are small JSON documents, anything larger is only counted, so an oversized upload costs neither memory
nor disk before it is answered 413.
"""

from __future__ import annotations

from io import BytesIO

from twisted.web.server import Request

__all__ = ["limited_request"]


class _LimitedRequest(Request):
    max_body = 1024 * 1024

    #: bytes of body received so far (stored or not)
    body_length = 0

    def gotLength(self, length) -> None:
        if length is not None and length > self.max_body:
            self.content = BytesIO()  # never a temp file for a body we will refuse
            self.body_length = 0
            self._over = True
            return
        self._over = False
        Request.gotLength(self, length)

    def handleContentChunk(self, data: bytes) -> None:
        self.body_length += len(data)
        if self._over:
            return
        if self.body_length > self.max_body:
            self._over = True
            self.content.seek(0)
            self.content.truncate()
            return
        Request.handleContentChunk(self, data)

    @property
    def body_too_large(self) -> bool:
        return getattr(self, "_over", False)


def limited_request(max_body: int) -> type:
    """A request factory for a Site whose requests keep at most C{max_body} bytes of body."""
    return type("LimitedRequest", (_LimitedRequest,), {"max_body": max_body})
