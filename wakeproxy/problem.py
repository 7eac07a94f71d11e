# -*- test-case-name: tests.test_api_unit -*-
"""RFC 9457 problem details: every error wakeproxy answers is C{application/problem+json}."""

import json
from typing import Any, Optional

from twisted.web.http import RESPONSES

__all__ = ["problem_body", "write_problem"]


def problem_body(status: int, detail: str, title: Optional[str] = None, **extra: Any) -> bytes:
    """The JSON document for C{status} with a human C{detail}; C{extra} members are added as they are."""
    doc = {"type": "about:blank", "title": title or RESPONSES.get(status, b"Error").decode("ascii"),
           "status": status, "detail": detail}
    doc.update(extra)
    return json.dumps(doc).encode("utf-8") + b"\n"


def write_problem(request, status: int, detail: str, title: Optional[str] = None,
                  retry_after: Optional[int] = None, **extra: Any) -> None:
    """Answer C{request} (a twisted.web request not yet started) with a problem document and finish it."""
    body = problem_body(status, detail, title, **extra)
    request.setResponseCode(status)
    request.responseHeaders.setRawHeaders(b"content-type", [b"application/problem+json"])
    request.responseHeaders.setRawHeaders(b"content-length", [str(len(body)).encode("ascii")])
    request.responseHeaders.setRawHeaders(b"cache-control", [b"no-store"])
    if retry_after is not None:
        request.responseHeaders.setRawHeaders(b"retry-after", [str(int(retry_after)).encode("ascii")])
    if request.method != b"HEAD":
        request.write(body)
    request.finish()
